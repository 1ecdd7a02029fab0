"""The local runner: ``python -m core.local --config FILE`` (also ``adder run``).

Exit codes: 0 every task succeeded (or was skipped); 1 at least one task failed (each bad task
has its ``.err`` record); 2 unusable config, tasks file or arguments; 128+N stopped by signal N
(130 for Ctrl-C, 143 for SIGTERM) after the tasks in hand finished.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli_args import add_progress_arguments, progress_bar, whole_number
from core.config import load_config
from core.errors import ConfigError, WorkerDiedError
from core.progress import ProgressBar
from core.runner import RunOptions, default_workers, exit_code, print_failures, run_chunks
from core.task_source import Item, iter_task_chunks

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS_DIR_ENV = "ADDER_RESULTS_DIR"
EXIT_USAGE = 2
BLOCK_BYTES = 32 * 1024
"""JSON Lines reach the workers in blocks of about this many bytes (a few hundred tasks)."""

DESCRIPTION = """\
Run add-two-numbers tasks on this machine and write each result to RESULTS_DIR/{id}.out
(a bad task gets RESULTS_DIR/{id}.err, a JSON record of why). With only --config, runs the
config's sample_task; with --tasks, runs every task of a JSON Lines file, a JSON array, or
standard input (-)."""

EPILOG = """\
exit codes: 0 all tasks succeeded or were skipped; 1 some task failed; 2 bad config, tasks
file or arguments; 130/143 stopped by Ctrl-C/SIGTERM (in-flight tasks finished first).

examples:
  python -m core.local --config examples/config.json
  python -m core.local --tasks tasks.jsonl --workers 2 --results-dir out
  generate_tasks | python -m core.local --tasks - --resume"""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options; shared by ``python -m core.local`` and ``adder run``."""
    parser.add_argument(
        "--config", metavar="FILE", help="JSON config; its sample_task runs unless --tasks is given"
    )
    parser.add_argument(
        "--tasks", metavar="FILE", help="tasks to run: JSON Lines, a JSON array, or - for stdin"
    )
    parser.add_argument(
        "--results-dir",
        metavar="DIR",
        default=None,
        help=f"where results go (default: ${RESULTS_DIR_ENV} or ./results)",
    )
    parser.add_argument(
        "--workers",
        type=whole_number(0, " (0 = one per CPU)"),
        default=1,
        metavar="N",
        help="worker processes (default 1; 0 = one per CPU)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip tasks whose {id}.out already exists"
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="fsync every file so results survive power loss, not only a crash (slower)",
    )
    add_progress_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m core.local``."""
    parser = argparse.ArgumentParser(
        prog="python -m core.local",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser)
    return parser


def _sample_chunks(sample: Item) -> list[list[Item]]:
    return [[sample]]


def run_from_args(args: argparse.Namespace) -> int:
    """Carry out a parsed run command and return its exit code."""
    results_dir = Path(args.results_dir or os.environ.get(RESULTS_DIR_ENV) or "results")
    try:
        config = load_config(args.config) if args.config else None
        for warning in config.warnings if config else []:
            print(f"warning: {warning}", file=sys.stderr)
        if args.tasks:
            chunks = iter_task_chunks(args.tasks, block_bytes=BLOCK_BYTES)
            bar = progress_bar(args, args.tasks)
        elif config is not None and config.sample_task is not None:
            chunks = iter(_sample_chunks(("sample_task", config.sample_task)))
            bar = ProgressBar(1, enabled=False)  # one task needs no bar
        elif config is not None:
            raise ConfigError(
                f"config file {config.path} has no sample_task, and no --tasks was given"
            )
        else:
            raise ConfigError(
                "nothing to run: give --config FILE (with a sample_task) or --tasks FILE"
            )
        workers = args.workers or default_workers()
        options = RunOptions(results_dir, workers, args.resume, args.durable)
        try:
            summary = run_chunks(chunks, options, on_progress=bar.advance)
        finally:
            bar.close()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerDiedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_failures(summary)
    print(summary.line(results_dir))
    return exit_code(summary)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m core.local``."""
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
