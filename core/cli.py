"""The ``adder`` command: ``run`` locally; ``package``, ``submit``, ``watch``, ``fetch``,
``redrive`` and ``status`` for each cloud; ``work`` pulls a cloud queue on this machine. A
cloud's SDK is imported only when one of its commands runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from core.clouds import CLOUDS
from core.errors import AdderError, ConfigError, ProviderUnavailableError
from core.local import EPILOG, add_run_arguments, run_from_args
from core.ops.commands import JOB_COMMANDS, infer_cloud, register_job_commands
from core.packaging import register_package_command
from core.worker.command import register_work_command

if TYPE_CHECKING:
    from collections.abc import Sequence


CLOUD_COMMANDS = {"package": "build a cloud's deployment zip, reproducibly", **JOB_COMMANDS}

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The full ``adder`` parser, with every provider's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="adder",
        description="Run add-two-numbers tasks locally or on AWS, Google Cloud and Azure.",
        epilog="Run 'adder COMMAND --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run tasks on this machine (same as python -m core.local)",
        description="Run tasks on this machine; results go to RESULTS_DIR/{id}.out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(run)
    run.set_defaults(handler=run_from_args)
    register_work_command(commands)
    groups = {
        name: commands.add_parser(name, help=text, description=text).add_subparsers(
            dest="provider", required=True, metavar="PROVIDER"
        )
        for name, text in CLOUD_COMMANDS.items()
    }
    for cloud in CLOUDS.values():
        register_package_command(groups, cloud)
        register_job_commands(groups, cloud)
    _register_sandboxes(commands)
    return parser


def _register_sandboxes(commands: argparse._SubParsersAction[Any]) -> None:
    """``adder sandbox <cloud>`` for each cloud whose registry entry names a sandbox module."""
    clouds = [cloud for cloud in CLOUDS.values() if cloud.sandbox_module]
    if not clouds:
        return
    text = "run a cloud's stack on this machine, against local emulators"
    group = commands.add_parser("sandbox", help=text, description=text).add_subparsers(
        dest="provider", required=True, metavar="PROVIDER"
    )
    for cloud in clouds:
        module = importlib.import_module(str(cloud.sandbox_module))
        module.register_sandbox_command(group, cloud)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adder`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = infer_cloud(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        code: int = args.handler(args)
    except (ConfigError, ProviderUnavailableError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except AdderError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an SDK error no adapter translated: still one line
        if os.environ.get("ADDER_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {_one_line(exc)} "
            "(set ADDER_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    return code


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
