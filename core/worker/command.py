"""``adder work --config cloud-config.json`` (also ``python -m core.worker --config ...``): the
seed's cloud-native worker, for VMs and containers.

The config file is the seed's cloud shape (:func:`core.config.read_config_document`)::

    {"provider": "aws", "job_id": "adder-demo", "queue_name": "adder-demo-tasks",
     "result_bucket": "adder-demo-results", "result_prefix": "results",
     "config": {"region": "us-east-1"}}

``provider`` picks the cloud's receiver and results store (:data:`WORKER_ADAPTERS`) and its
metadata service for termination notices; ``job_id`` (default: the queue's name) is in every
log line. On AWS, ``config.lifecycle_hook`` and ``config.autoscaling_group`` name the Auto
Scaling termination hook completed once drained (:data:`NOTICE_HOOK`). Exit codes: 0 once
drained (a notice, SIGTERM/SIGINT, ``--max-messages``, ``--idle-exit``); 2 for configuration
(one line); 1 for an unexpected failure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cli_args import whole_number
from core.clouds import CLOUDS
from core.config import parse_config, read_config_document
from core.errors import ConfigError, ProviderUnavailableError
from core.packing import (
    LAYOUT_SETTING,
    ResultsLayout,
    named_results_layout,
    results_layout_from_environment,
)
from core.worker.logs import JsonLines
from core.worker.loop import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_WAIT_SECONDS,
    Worker,
    WorkerOptions,
)
from core.worker.notices import notice_poller

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import ModuleType

    from core.ports import ResultStore
    from core.worker.notices import NoticePoller
    from core.worker.port import Receiver

WORKER_ADAPTERS: Mapping[str, str] = {
    cloud.name: cloud.worker_binding for cloud in CLOUDS.values() if cloud.worker_binding
}
"""``module:function`` per provider, from the cloud registry (``Cloud.worker_binding``):
``function(config: WorkerConfig, concurrency: int)`` returns the cloud's
(:class:`~core.worker.port.Receiver`, results store), building its SDK clients once; a
ConfigError (one line) when they cannot be built."""

LAYOUT_KEY = "results_layout"
"""``config.results_layout`` in the cloud config: ``per_task`` or ``packed`` (the stack's)."""

NOTICE_HOOK = "prepare_notice_poller"
"""Optional, beside the opener in the binding's module: ``prepare_notice_poller(config,
poller)`` registers what the cloud's SDK must do once the worker has drained after a notice
(:meth:`~core.worker.notices.NoticePoller.acknowledge_with`): AWS completes the Auto Scaling
lifecycle action."""

EPILOG = """\
The config file is the seed's cloud config: provider, job_id, queue_name, result_bucket,
result_prefix and, per cloud, config.region (AWS; config.endpoint_url for a local stand-in),
config.lifecycle_hook and config.autoscaling_group (AWS: the Auto Scaling termination hook
completed once drained), config.project and config.subscription (GCP), config.namespace and
config.account_url (Azure); config.results_layout (per_task or packed, as the stack writes);
credentials from the cloud's default chain, never the file. Tasks are acknowledged only
after their result or error record is written; a failed write is released and retried, and
reaches the dead-letter queue after the queue's max deliveries.
On a termination notice (spot/preemption/scheduled event) or SIGTERM/SIGINT the worker takes
no new message, finishes or releases what it holds within the window, and exits 0.
Exit codes: 0 drained, 2 configuration, 1 unexpected failure."""


@dataclass(frozen=True)
class WorkerConfig:
    """What ``adder work`` takes from a cloud config file."""

    path: Path
    provider: str
    job_id: str
    queue_name: str
    result_bucket: str
    result_prefix: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The file's ``config`` object: ``region``, ``endpoint_url``, ``project``, ..."""
    warnings: Sequence[str] = ()
    results_layout: ResultsLayout | None = None
    """``config.results_layout`` (None when the file does not say)."""


def load_worker_config(path: str | Path) -> WorkerConfig:
    """Read and check a cloud config file for the worker; a one-line ConfigError if unusable."""
    path = Path(path)
    document = read_config_document(path)
    checked = parse_config(document, path)  # types, provider name, credential warnings
    assert isinstance(document, dict)  # parse_config refuses anything else
    provider = checked.provider
    if provider is None or provider not in CLOUDS:
        raise ConfigError(
            f"config file {path}: 'provider' must name the cloud whose queue to work on"
            f" ({', '.join(CLOUDS)})"
        )
    needs = {"queue_name": "the task queue", "result_bucket": "the results bucket"}
    for name, what in needs.items():
        if not str(document.get(name) or "").strip():
            raise ConfigError(f"config file {path} has no '{name}': adder work needs {what}")
    queue_name = str(document["queue_name"]).strip()
    settings = dict(document.get("config") or {})
    return WorkerConfig(
        path=path,
        provider=provider,
        job_id=str(document.get("job_id") or "").strip() or queue_name,
        queue_name=queue_name,
        result_bucket=str(document["result_bucket"]).strip(),
        result_prefix=str(document.get("result_prefix") or "").strip("/ "),
        settings=settings,
        warnings=tuple(checked.warnings),
        results_layout=_configured_layout(settings.get(LAYOUT_KEY), path),
    )


def _configured_layout(value: object, path: Path) -> ResultsLayout | None:
    text = str(value or "").strip()
    return named_results_layout(text, f"config file {path}: config.{LAYOUT_KEY}") if text else None


def results_layout(flag: str | None, config: WorkerConfig) -> ResultsLayout:
    """``--results-layout``, else ``config.results_layout``, else ``$RESULTS_LAYOUT`` (as the
    functions read it), else one object per task."""
    if flag:
        return ResultsLayout(flag)
    return config.results_layout or results_layout_from_environment()


def _binding(config: WorkerConfig) -> tuple[ModuleType, str]:
    """The module of the cloud's binding (its SDK imported) and the opener's name."""
    target = WORKER_ADAPTERS.get(config.provider)
    if target is None:
        raise ConfigError(
            f"adder work has no {CLOUDS[config.provider].title} receiver yet; it runs on"
            f" {', '.join(WORKER_ADAPTERS)} (config file {config.path})"
        )
    module_name, _, function_name = target.partition(":")
    try:
        return importlib.import_module(module_name), function_name
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in {"core", *(c.package for c in CLOUDS.values())}:
            raise
        raise ProviderUnavailableError(
            f"adder work on {config.provider} needs {exc.name}:"
            f" {CLOUDS[config.provider].install_hint}"
        ) from None


def open_binding(config: WorkerConfig, concurrency: int) -> tuple[Receiver, ResultStore]:
    """The cloud's receiver and results store for ``config`` (its SDK imported here)."""
    module, function_name = _binding(config)
    opener: Callable[[WorkerConfig, int], tuple[Receiver, ResultStore]] = getattr(
        module, function_name
    )
    return opener(config, concurrency)


def notice_pollers(config: WorkerConfig, metadata_url: str | None) -> list[NoticePoller]:
    """The poller of the cloud's metadata service, prepared by the binding's
    :data:`NOTICE_HOOK` when it has one."""
    poller = notice_poller(config.provider, metadata_url)
    module, _ = _binding(config)
    prepare: Callable[[WorkerConfig, NoticePoller], None] | None = getattr(
        module, NOTICE_HOOK, None
    )
    if prepare is not None:
        prepare(config, poller)
    return [poller]


def _seconds(minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not value >= minimum or (maximum is not None and value > maximum):
            limit = f" and at most {maximum:g}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}{limit}")
        return value

    return parse


def add_work_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``adder work`` options."""
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the seed's cloud config file (JSON)"
    )
    parser.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"tasks processed at once (threads; default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--metadata-url",
        metavar="URL",
        help="the instance metadata service's base URL (default: the provider's own; tests"
        " point it at a loopback server)",
    )
    parser.add_argument(
        "--no-notices",
        action="store_true",
        help="do not poll the metadata service for termination notices (off the cloud)",
    )
    parser.add_argument(
        "--max-messages",
        type=whole_number(1),
        metavar="N",
        help="stop after taking N messages (default: no limit)",
    )
    parser.add_argument(
        "--idle-exit",
        type=_seconds(0),
        metavar="SECONDS",
        help="stop when no message came for SECONDS and none is in hand (batch jobs)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=_seconds(0),
        default=DEFAULT_DRAIN_SECONDS,
        metavar="SECONDS",
        help="time to finish in-hand tasks after SIGTERM/SIGINT before releasing them"
        f" (default {DEFAULT_DRAIN_SECONDS:g}; notices bring their own window)",
    )
    parser.add_argument(
        "--wait-seconds",
        type=_seconds(0, DEFAULT_WAIT_SECONDS),
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"long-poll wait of one receive (default {DEFAULT_WAIT_SECONDS:g})",
    )
    parser.add_argument(
        "--results-layout",
        choices=[layout.value for layout in ResultsLayout],
        help="per_task: one {id}.out per task; packed: one object per receive call (up to 10"
        " tasks), as the stack's results_layout (default: config.results_layout, else"
        f" ${LAYOUT_SETTING}, else per_task)",
    )
    parser.add_argument(
        "--retry-delay",
        type=_seconds(0),
        metavar="SECONDS",
        help="when a task whose write failed comes back (default: after the queue's"
        " visibility timeout, as with the functions)",
    )


def register_work_command(commands: argparse._SubParsersAction[Any]) -> None:
    """``adder work`` on the CLI's command group."""
    text = "pull tasks from a cloud queue on this machine (a VM or container worker)"
    parser = commands.add_parser(
        "work",
        help=text,
        description=text[0].upper() + text[1:] + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_work_arguments(parser)
    parser.set_defaults(handler=work_from_args)


def options_from_args(args: argparse.Namespace, config: WorkerConfig) -> WorkerOptions:
    """The worker options the command line (and the config file) ask for."""
    return WorkerOptions(
        concurrency=args.concurrency,
        wait_seconds=args.wait_seconds,
        max_messages=args.max_messages,
        idle_exit_seconds=args.idle_exit,
        drain_seconds=args.drain_seconds,
        retry_delay_seconds=args.retry_delay,
        layout=results_layout(args.results_layout, config),
    )


def work_from_args(args: argparse.Namespace) -> int:
    """Run the worker until it is told to stop; 0 once drained."""
    config = load_worker_config(args.config)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    options = options_from_args(args, config)
    receiver, store = open_binding(config, args.concurrency)
    log = JsonLines(config.job_id, fixed={"provider": config.provider})
    pollers = [] if args.no_notices else notice_pollers(config, args.metadata_url)
    worker = Worker(receiver, store, log, options=options, notice_pollers=pollers)
    with stop_on_signals(worker):
        worker.run()
    return 0


@contextlib.contextmanager
def stop_on_signals(worker: Worker) -> Iterator[None]:
    """SIGTERM and SIGINT drain the worker (a second one stops waiting for its tasks);
    the previous handlers come back afterwards. Off the main thread, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        worker.request_stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.worker``: the same as ``adder work``."""
    from core.cli import main as adder

    return adder(["work", *(sys.argv[1:] if argv is None else argv)])
