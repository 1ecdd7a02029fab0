"""Reading packs (:mod:`core.packing`) for watch, status and fetch.

A listing gives a pack as one :class:`~core.ops.backend.RecordInfo` (suffix ``.jsonl``); what
it holds is known only by reading it. Packs never change once written (their name is their
content's hash), so a reader reads each one once, in a bounded pool of downloads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from core.errors import AdderError
from core.packing import PackedRecord, PackError, unpack
from core.ports import RESULT_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from core.ops.backend import JobBackend, RecordInfo


class UnreadablePackError(AdderError):
    """A listed pack whose bytes are not a pack (written by something else, or damaged)."""


def read_pack(backend: JobBackend, pack: RecordInfo) -> list[PackedRecord]:
    """The records of one pack; UnreadablePackError when its bytes are not a pack."""
    data = backend.read_record(pack)
    try:
        return unpack(data)
    except PackError as error:
        raise UnreadablePackError(f"{pack.key} is not a pack of results: {error}") from None


def read_packs(
    backend: JobBackend, packs: Iterable[RecordInfo], concurrency: int | None = None
) -> Iterator[tuple[RecordInfo, list[PackedRecord]]]:
    """Each pack with its records, read ``concurrency`` at a time (the backend's download
    pool by default), in the order given. A failed read raises when its turn comes."""
    packs = list(packs)
    if not packs:
        return
    workers = max(1, min(concurrency or backend.max_fetch_concurrency, len(packs)))
    with ThreadPoolExecutor(workers, thread_name_prefix="packs") as pool:
        yield from zip(packs, pool.map(lambda pack: read_pack(backend, pack), packs), strict=True)


class PackedNames:
    """The record names the packs seen so far hold, each pack read once (for repeated polls)."""

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.results: set[str] = set()
        self.errors: set[str] = set()

    def add(self, backend: JobBackend, packs: Iterable[RecordInfo]) -> None:
        """Read the packs not read before and remember the names they hold."""
        new = [pack for pack in packs if pack.key not in self.read]
        for pack, records in read_packs(backend, new):
            for record in records:
                (self.results if record.suffix == RESULT_SUFFIX else self.errors).add(record.name)
            self.read.add(pack.key)
