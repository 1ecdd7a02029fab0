"""watch, status and fetch on packed results: the same answers as on one object per task."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from core.delivery import Delivery, deliver_packed
from core.ops.fetch import fetch
from core.ops.packs import PackedNames
from core.ops.status import status_lines
from core.ops.watch import poll, watch
from core.pipeline import process_message, record_name
from tests.unit.fakes import InMemoryJobBackend, InMemoryResultStore

if TYPE_CHECKING:
    from pathlib import Path

BODIES = [b'{"id": "t-%d", "data": {"num1": %d, "num2": 1}}' % (i, i) for i in range(25)] + [
    b'{"id": "dec", "data": {"num1": 0.1, "num2": 0.2}}',
    b"not json",
    b'{"id": "x"}',
]


def quiet(level: int, text: str, fields: dict[str, object]) -> None:
    """Log lines are not what these tests look at."""


def run_packed(backend: InMemoryJobBackend, bodies: list[bytes], batch: int = 10) -> None:
    """What a packed function does: each batch of messages into one pack."""
    store = InMemoryResultStore()
    store.prefix = backend.prefix
    for start in range(0, len(bodies), batch):
        chunk = bodies[start : start + batch]
        handled = deliver_packed([Delivery(body) for body in chunk], store, quiet)
        assert not any(item.retry for item in handled)
    backend.objects.update(store.objects)


def run_per_task(backend: InMemoryJobBackend, bodies: list[bytes]) -> None:
    store = InMemoryResultStore()
    store.prefix = backend.prefix
    for body in bodies:
        process_message(body, store)
    backend.objects.update(store.objects)


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def test_fetch_unpacks_packs_into_the_files_the_default_layout_gives(tmp_path: Path) -> None:
    # GIVEN the same tasks run packed (batches of 10) and one object per task
    packed, per_task = InMemoryJobBackend(), InMemoryJobBackend()
    run_packed(packed, BODIES)
    run_per_task(per_task, BODIES)
    assert len(packed.objects) == 3  # 28 messages, 3 batches
    # WHEN both are fetched
    packed_summary = fetch(packed, tmp_path / "packed")
    per_task_summary = fetch(per_task, tmp_path / "per_task")
    # THEN the directories are byte-identical, with one download per pack
    assert files(tmp_path / "packed") == files(tmp_path / "per_task")
    assert packed.reads == 3 and per_task.reads == len(BODIES)
    assert (packed_summary.results, packed_summary.errors) == (26, 2)
    assert (per_task_summary.results, per_task_summary.errors) == (26, 2)
    assert packed_summary.exit_code == 0


def test_a_second_fetch_of_packs_writes_nothing_and_repairs_a_changed_file(
    tmp_path: Path,
) -> None:
    backend = InMemoryJobBackend()
    run_packed(backend, BODIES)
    fetch(backend, tmp_path)
    (tmp_path / "t-3.out").write_bytes(b"9")
    summary = fetch(backend, tmp_path)
    assert (summary.results, summary.unchanged) == (1, len(BODIES) - 1)
    assert (tmp_path / "t-3.out").read_bytes() == b"4"


def test_fetch_of_one_jobs_names_takes_only_those_out_of_the_packs(tmp_path: Path) -> None:
    backend = InMemoryJobBackend()
    run_packed(backend, BODIES)
    summary = fetch(backend, tmp_path, names={"t-1", "t-20"})
    assert sorted(files(tmp_path)) == ["t-1.out", "t-20.out"]
    assert summary.results == 2


def test_a_pack_holding_an_unsafe_name_or_damaged_bytes_fails_that_part_only(
    tmp_path: Path,
) -> None:
    # GIVEN a pack naming a path, a damaged pack, and a good pack
    backend = InMemoryJobBackend()
    run_packed(backend, BODIES[:3])
    unsafe = b'{"id": "../escape", "result": "1"}\n{"id": "ok", "result": "2"}\n'
    backend.objects["results/packed/" + "a" * 32 + ".jsonl"] = unsafe
    backend.objects["results/packed/" + "b" * 32 + ".jsonl"] = b"{not a pack"
    errors = io.StringIO()
    # WHEN fetched
    summary = fetch(backend, tmp_path / "out", errors=errors)
    # THEN nothing is written outside, the good records are, and each problem is one line
    assert sorted(files(tmp_path / "out")) == ["ok.out", "t-0.out", "t-1.out", "t-2.out"]
    assert not (tmp_path / "escape").exists()
    assert (summary.refused, summary.failed, summary.exit_code) == (1, 1, 1)
    lines = errors.getvalue().splitlines()
    assert len(lines) == 2
    assert any("'../escape'" in line for line in lines)
    assert any("is not a pack of results: line 1 is not JSON" in line for line in lines)


def test_watch_counts_records_in_packs_and_reads_each_pack_once() -> None:
    # GIVEN a job whose first two batches are done, packed
    backend = InMemoryJobBackend()
    expected = {record_name(body) for body in BODIES}
    run_packed(backend, BODIES[:20])
    packed = PackedNames()
    # WHEN polled, then polled again after the last batch
    first = poll(backend, expected, packed)
    reads_after_first = backend.reads
    run_packed(backend, BODIES[20:])
    second = poll(backend, expected, packed)
    # THEN each poll counts what is there, and the second reads only the new pack
    assert (first.succeeded, first.rejected, first.finished) == (20, 0, False)
    assert (second.succeeded, second.rejected, second.finished) == (26, 2, True)
    assert (reads_after_first, backend.reads) == (2, 3)


def test_watch_to_the_end_of_a_packed_job_with_a_mix_of_layouts() -> None:
    backend = InMemoryJobBackend()
    run_packed(backend, BODIES[:10])
    run_per_task(backend, BODIES[10:])
    expected = {record_name(body) for body in BODIES}
    counts, code = watch(backend, expected, interval=0, stream=io.StringIO())
    assert (counts.succeeded, counts.rejected, code) == (26, 2, 1)


def test_status_counts_distinct_records_across_packs_and_objects() -> None:
    backend = InMemoryJobBackend()
    run_packed(backend, BODIES)
    run_packed(backend, BODIES[:5], batch=5)  # a batch delivered twice: a second pack
    run_per_task(backend, BODIES[:2])  # and the same tasks as plain objects
    lines = status_lines(backend)
    assert lines[2] == "results:      26 .out, 2 .err in memory://results/ (4 packs)"
