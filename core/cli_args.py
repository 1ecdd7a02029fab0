"""Command-line pieces every ``adder`` command shares: counts and the progress-bar switch."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from core.progress import ProgressBar
from core.task_source import count_tasks

if TYPE_CHECKING:
    from collections.abc import Callable


def lazy_handler(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command handler that imports ``module`` (and its cloud SDK) only when the command
    runs, so ``adder --help`` and the other clouds' commands never pay for it."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        function: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return function(args)

    return handler


def whole_number(minimum: int, hint: str = "") -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum}{hint} or more")
        return value

    return parse


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress``/``--no-progress``; by default the bar is drawn only on a terminal."""
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always draw the progress bar (default: only on a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it")


def progress_bar(args: argparse.Namespace, tasks: str | None) -> ProgressBar:
    """The bar the options ask for; the tasks of ``tasks`` are counted only if it is drawn."""
    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    total = count_tasks(tasks) if show and tasks else None
    return ProgressBar(total, enabled=show)
