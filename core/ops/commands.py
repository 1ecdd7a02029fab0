"""``adder submit|watch|fetch|redrive|status CLOUD``: one shape for every cloud.

Each cloud's operator module gives ``SETTINGS`` (what its job's settings are called, in
flags, stack outputs and config files) and ``open_backend(target, command)`` (its adapter of
:class:`~core.ops.backend.JobBackend`, importing the SDK only then). Everything else, from
options to summary lines and exit codes, is here, once.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli_args import add_progress_arguments, progress_bar, whole_number
from core.clouds import CLOUDS, Cloud
from core.errors import ConfigError
from core.ops import DEFAULT_FETCH_CONCURRENCY
from core.ops.manifest import Manifest, jobs_dir
from core.ops.target import add_target_arguments, resolve_target

if TYPE_CHECKING:
    from collections.abc import Sequence

    from core.ops.backend import JobBackend
    from core.ops.target import Setting, Target

JOB_COMMANDS = {
    "submit": "push tasks onto a cloud's queue, recording them in a job manifest",
    "watch": "follow a submitted job until every task is accounted for",
    "fetch": "download results and error records into a local directory",
    "redrive": "move dead-lettered tasks back onto the task queue",
    "status": "show the task queue, the dead letters and the result counts",
    "estimate": "what a job will cost, line by line, at list prices",
}

WHERE_EPILOG = """\
Settings come from, first found: the flags; the job's manifest (--job); --stack DIR
(terraform output -json; default infra/{cloud} when it has state here); --config FILE (the
cloud config: provider, job_id, queue_name, result_bucket, result_prefix, config.*); the
environment variables named in the flags' help.
Credentials come from {chain}.
Exit codes: 0 done, 1 some tasks failed or could not be sent, 2 configuration or usage
error (one line on stderr), 3 watch timed out with tasks in flight, 130 interrupted."""


def operator_module(cloud: Cloud) -> Any:
    """The cloud's operator module (importing it imports no SDK)."""
    return importlib.import_module(cloud.operator_module)


def register_job_commands(groups: dict[str, argparse._SubParsersAction[Any]], cloud: Cloud) -> None:
    """Add ``adder COMMAND <cloud>`` for every job command."""
    settings: Sequence[Setting] = operator_module(cloud).SETTINGS
    epilog = WHERE_EPILOG.format(cloud=cloud.name, chain=cloud.credential_chain)
    for command, text in JOB_COMMANDS.items():
        if command == "estimate":
            _register_estimate(groups[command], cloud, text)
            continue
        parser = groups[command].add_parser(
            cloud.name,
            help=f"{text} ({cloud.title})",
            description=f"{text[0].upper()}{text[1:]} ({cloud.title}).",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_target_arguments(parser, settings)
        _COMMAND_OPTIONS[command](parser)
        parser.set_defaults(handler=run_job_command, cloud=cloud.name, job_command=command)


def _register_estimate(group: argparse._SubParsersAction[Any], cloud: Cloud, text: str) -> None:
    """``adder estimate <cloud>`` (core/ops/estimate.py) for a cloud with a price model; it
    reads the stack's settings but opens no backend."""
    from core.ops.estimate import MODELS, register_estimate_command

    if cloud.name in MODELS:
        register_estimate_command(group, cloud.name, cloud.title, text)


def _submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tasks", metavar="TASKS", help="JSON Lines, a JSON array, or - for stdin")
    _job_option(
        parser,
        "name of the job's manifest (default: the config's job_id, else the tasks file's name)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="send only the tasks the job's manifest lacks"
    )
    parser.add_argument(
        "--concurrency", type=whole_number(1), default=8, help="batches in flight (default 8)"
    )
    parser.add_argument(
        "--attempts",
        type=whole_number(1),
        default=3,
        help="sends of a batch that fails transiently, after the SDK's own retries (default 3)",
    )
    add_progress_arguments(parser)


def _watch_options(parser: argparse.ArgumentParser) -> None:
    _job_option(parser, "the job to watch (default: the last one submitted to this cloud)")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between polls (default 5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds (exit 3)"
    )
    add_progress_arguments(parser)


def _fetch_options(parser: argparse.ArgumentParser) -> None:
    _job_option(parser, "fetch only this job's tasks (default: everything under the prefix)")
    parser.add_argument(
        "--into", default="results", metavar="DIR", help="local directory (default results)"
    )
    parser.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=DEFAULT_FETCH_CONCURRENCY,
        help=f"downloads at once (default {DEFAULT_FETCH_CONCURRENCY}, at most what the cloud's"
        " client pools)",
    )
    add_progress_arguments(parser)


def _redrive_options(parser: argparse.ArgumentParser) -> None:
    add_progress_arguments(parser)


def _status_options(parser: argparse.ArgumentParser) -> None:
    pass


def _job_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--job", metavar="NAME", help=text)
    parser.add_argument(
        "--jobs-dir",
        metavar="DIR",
        help="where job manifests are kept (default: $ADDER_JOBS_DIR, else .adder/jobs)",
    )


_COMMAND_OPTIONS = {
    "submit": _submit_options,
    "watch": _watch_options,
    "fetch": _fetch_options,
    "redrive": _redrive_options,
    "status": _status_options,
}


def run_job_command(args: argparse.Namespace) -> int:
    """Resolve the job's settings, open the cloud's backend, run the command's driver."""
    cloud = CLOUDS[args.cloud]
    module = operator_module(cloud)
    manifest = _manifest_for(args, cloud)
    remembered = manifest.settings if manifest is not None else None
    target = resolve_target(cloud.name, module.SETTINGS, args, remembered=remembered)
    backend: JobBackend = module.open_backend(target, args.job_command)
    try:
        return int(_RUNNERS[args.job_command](args, backend, target, manifest))
    finally:
        backend.close()


def _manifest_for(args: argparse.Namespace, cloud: Cloud) -> Manifest | None:
    if args.job_command == "submit" or not hasattr(args, "job"):
        return None
    directory = jobs_dir(args.jobs_dir)
    if args.job:
        manifest = Manifest.load(directory, args.job)
        if manifest.cloud != cloud.name:
            raise ConfigError(
                f"job {args.job!r} was submitted to {manifest.cloud}, not {cloud.name}"
            )
        return manifest
    if args.job_command == "watch":
        latest = Manifest.latest(directory, cloud.name)
        if latest is None:
            raise ConfigError(
                f"no job was submitted to {cloud.name} from here ({directory}): give --job NAME"
            )
        return latest
    return None


def _run_submit(
    args: argparse.Namespace, backend: JobBackend, target: Target, _: Manifest | None
) -> int:
    from core.ops.submit import stop_line, submit

    job = args.job or target.job or _job_from_tasks(args.tasks)
    directory = jobs_dir(args.jobs_dir)
    settings = _remembered_settings(args.cloud, target)
    if args.resume and (directory / f"{job}.json").exists():
        manifest = Manifest.load(directory, job)
    else:
        manifest = Manifest.create(directory, job, args.cloud, settings, args.tasks)
    bar = progress_bar(args, args.tasks if args.tasks != "-" else None)
    summary = submit(
        backend,
        args.tasks,
        manifest=manifest,
        concurrency=args.concurrency,
        attempts=args.attempts,
        resume=args.resume,
        progress=bar,
    )
    print(summary.line(backend.queue_label) + f" (job {job})")
    problem = stop_line(summary, lambda: _command_line(args, job))
    if problem:
        print(problem, file=sys.stderr)
    return summary.exit_code


def _run_watch(
    args: argparse.Namespace, backend: JobBackend, _: Target, manifest: Manifest | None
) -> int:
    from core.ops.watch import watch

    assert manifest is not None
    expected = manifest.sent_names()
    if not manifest.complete:
        print(
            f"note: the submit of job {manifest.job} did not finish; watching the "
            f"{len(expected):,} tasks it sent",
            file=sys.stderr,
        )
    live = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    counts, code = watch(backend, expected, interval=args.interval, timeout=args.timeout, live=live)
    verdict = {0: "finished", 1: "finished with failures", 3: "still running"}[code]
    print(f"job {manifest.job} {verdict}: {counts.line()}")
    return code


def _run_fetch(
    args: argparse.Namespace, backend: JobBackend, _: Target, manifest: Manifest | None
) -> int:
    from core.ops.fetch import fetch

    names = manifest.sent_names() if manifest is not None else None
    bar = progress_bar(args, None)
    directory = Path(args.into)
    summary = fetch(backend, directory, names=names, concurrency=args.concurrency, progress=bar)
    print(summary.line(backend.results_label, directory))
    return summary.exit_code


def _run_redrive(
    args: argparse.Namespace, backend: JobBackend, _: Target, __: Manifest | None
) -> int:
    from core.ops.redrive import redrive

    summary = redrive(backend, progress=progress_bar(args, None))
    print(summary.line(backend))
    return summary.exit_code


def _run_status(
    args: argparse.Namespace, backend: JobBackend, _: Target, __: Manifest | None
) -> int:
    from core.ops.status import status_lines

    for line in status_lines(backend):
        print(line)
    return 0


_RUNNERS = {
    "submit": _run_submit,
    "watch": _run_watch,
    "fetch": _run_fetch,
    "redrive": _run_redrive,
    "status": _run_status,
}


def _job_from_tasks(tasks: str) -> str:
    if tasks == "-":
        raise ConfigError("tasks from stdin need a job name: give --job NAME")
    stem = Path(tasks).name.split(".")[0]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip(".-_")
    return cleaned or "job"


def _remembered_settings(cloud: str, target: Target) -> dict[str, str]:
    secret = {s.name for s in operator_module(CLOUDS[cloud]).SETTINGS if s.secret}
    return {name: value for name, value in target.values.items() if name not in secret}


def _command_line(args: argparse.Namespace, job: str) -> str:
    """The command to run again (``--resume`` is added by the caller); secret values are left
    out: they come from the environment variables the flags' help names."""
    secret = {s.flag for s in operator_module(CLOUDS[args.cloud]).SETTINGS if s.secret}
    argv: list[str] = []
    skip_value = False
    for item in getattr(args, "argv", None) or sys.argv[1:]:
        if skip_value:
            skip_value = False
            continue
        if item in secret:
            skip_value = True
            continue
        if item == "--resume" or item.split("=", 1)[0] in secret:
            continue
        argv.append(item)
    if "--job" not in argv and not any(a.startswith("--job=") for a in argv):
        argv[2:2] = ["--job", job]
    return "adder " + shlex.join(argv)


def infer_cloud(argv: list[str]) -> list[str]:
    """``adder submit --config job.json tasks`` -> ``adder submit aws --config ...``: a job
    command without a cloud takes it from its ``--config`` file or its ``--job`` manifest."""
    if len(argv) < 1 or argv[0] not in JOB_COMMANDS:
        return argv
    rest = argv[1:]
    if rest and (rest[0] in CLOUDS or rest[0] in {"-h", "--help"}):
        return argv
    from core.ops.target import config_provider

    config = _option_value(rest, "--config")
    if config:
        return [argv[0], config_provider(config), *rest]
    job = _option_value(rest, "--job")
    if job and argv[0] != "submit":
        manifest = Manifest.load(jobs_dir(_option_value(rest, "--jobs-dir")), job)
        return [argv[0], manifest.cloud, *rest]
    return argv


def _option_value(argv: list[str], name: str) -> str | None:
    for index, item in enumerate(argv):
        if item == name and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    return None
