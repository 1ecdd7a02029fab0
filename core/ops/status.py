"""``adder status CLOUD``: the task queue, the dead letters and the results, in three lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from core.ops.backend import JobBackend


def _known(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def status_lines(backend: JobBackend) -> list[str]:
    """What ``adder status`` prints."""
    depth = backend.queue_depth()
    results = errors = 0
    for record in backend.list_records():
        if record.suffix == RESULT_SUFFIX:
            results += 1
        elif record.suffix == ERROR_SUFFIX:
            errors += 1
    return [
        f"task queue:   {_known(depth.waiting)} waiting, {_known(depth.in_flight)} in flight"
        f" ({backend.queue_label})",
        f"dead letters: {_known(backend.dead_letter_count())}",
        f"results:      {results:,} {RESULT_SUFFIX}, {errors:,} {ERROR_SUFFIX}"
        f" in {backend.results_label}",
    ]
