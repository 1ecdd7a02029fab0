"""``adder status CLOUD``: the task queue, the dead letters and the results, in three lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ops.packs import PackedNames
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from core.ops.backend import JobBackend


def _known(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def status_lines(backend: JobBackend) -> list[str]:
    """What ``adder status`` prints."""
    depth = backend.queue_depth()
    results: set[str] = set()
    errors: set[str] = set()
    packs = []
    for record in backend.list_records():
        if record.is_pack:
            packs.append(record)
        elif record.suffix == RESULT_SUFFIX:
            results.add(record.name)
        elif record.suffix == ERROR_SUFFIX:
            errors.add(record.name)
    packed = PackedNames()
    packed.add(backend, packs)
    in_packs = f" ({len(packs):,} packs)" if packs else ""
    return [
        f"task queue:   {_known(depth.waiting)} waiting, {_known(depth.in_flight)} in flight"
        f" ({backend.queue_label})",
        f"dead letters: {_known(backend.dead_letter_count())}",
        f"results:      {len(results | packed.results):,} {RESULT_SUFFIX},"
        f" {len(errors | packed.errors):,} {ERROR_SUFFIX} in {backend.results_label}{in_packs}",
    ]
