"""``adder fetch CLOUD``: a job's results and error records into a local directory.

The directory gets exactly the local runner's layout (``{id}.out``, ``{name}.err``) and its
crash safety: each file is written to a temporary name and renamed (the local runner's own
store does it). Downloads run in a bounded pool; a file already there with the same content
(the listing's MD5, or size and bytes) is skipped, so an interrupted fetch is resumed by
running it again. Packed results (:mod:`core.packing`) are unpacked into the same files: one
download per pack.
"""

from __future__ import annotations

import hashlib
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from core.errors import AdderError, ConfigError, InvalidTaskError, StoreWriteError
from core.ids import INVALID_PREFIX
from core.local_store import LocalDirectoryResultStore
from core.ops import DEFAULT_FETCH_CONCURRENCY
from core.ops.packs import read_pack
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX
from core.progress import ProgressBar
from core.task import check_task_id

if TYPE_CHECKING:
    from pathlib import Path

    from core.ops.backend import JobBackend, RecordInfo

SHOWN_FAILURES = 5


@dataclass
class FetchSummary:
    """How a fetch went."""

    results: int = 0
    errors: int = 0
    unchanged: int = 0
    failed: int = 0
    refused: int = 0
    """Listed names that are no record name (never written: they could reach outside)."""
    seconds: float = 0.0

    def line(self, source: str, directory: Path) -> str:
        """The final line ``adder fetch`` prints."""
        text = (
            f"fetched {self.results:,} {RESULT_SUFFIX} and {self.errors:,} {ERROR_SUFFIX} from "
            f"{source} into {directory}/ in {self.seconds:.2f}s"
        )
        if self.unchanged:
            text += f"; {self.unchanged:,} already there"
        if self.failed:
            text += f"; {self.failed:,} could not be fetched (see errors above)"
        if self.refused:
            text += f"; {self.refused:,} unsafe names skipped"
        return text

    @property
    def exit_code(self) -> int:
        """0 when everything listed is now here, 1 otherwise."""
        return 1 if self.failed or self.refused else 0


def is_record_name(name: str) -> bool:
    """True for a valid task id or ``invalid-<sha256>``: a safe plain file name."""
    if name.startswith(INVALID_PREFIX):
        digits = name[len(INVALID_PREFIX) :]
        return len(digits) == 64 and all(c in "0123456789abcdef" for c in digits)
    try:
        check_task_id(name)
    except InvalidTaskError:
        return False
    return True


def fetch(
    backend: JobBackend,
    directory: Path,
    *,
    names: set[str] | None = None,
    concurrency: int = DEFAULT_FETCH_CONCURRENCY,
    progress: ProgressBar | None = None,
    errors: TextIO | None = None,
) -> FetchSummary:
    """Download every record (or those of ``names``) that is not already in ``directory``."""
    started = time.monotonic()
    concurrency = max(1, min(concurrency, backend.max_fetch_concurrency))
    try:
        store = LocalDirectoryResultStore(directory)
        store.check_writable()
    except StoreWriteError as exc:
        raise ConfigError(str(exc)) from None
    fetcher = _Fetcher(
        backend, store, progress or ProgressBar(None, enabled=False), errors or sys.stderr
    )
    with store, ThreadPoolExecutor(concurrency, thread_name_prefix="fetch") as pool:
        try:
            for record in backend.list_records():
                if fetcher.wanted(record, names):
                    if len(fetcher.in_flight) >= concurrency * 4:
                        fetcher.settle_some()
                    fetcher.start(pool, record, names)
        finally:
            fetcher.settle_all()
    fetcher.bar.close()
    fetcher.summary.seconds = time.monotonic() - started
    return fetcher.summary


class _Fetcher:
    """The state of one fetch: downloads in flight and the counts."""

    def __init__(
        self,
        backend: JobBackend,
        store: LocalDirectoryResultStore,
        bar: ProgressBar,
        errors: TextIO,
    ) -> None:
        self.backend = backend
        self.store = store
        self.bar = bar
        self.errors = errors
        self.summary = FetchSummary()
        self.in_flight: dict[Future[Written], RecordInfo] = {}

    def wanted(self, record: RecordInfo, names: set[str] | None) -> bool:
        """True when ``record`` is to be downloaded (counting those that are not)."""
        if record.is_pack:
            return True  # what it holds is known only once it is read
        if names is not None and record.name not in names:
            return False
        if not is_record_name(record.name):
            self.summary.refused += 1
            print(f"error: not fetched, not a record name: {record.key!r}", file=self.errors)
            return False
        if _unchanged(self.store.directory / record.file_name, record):
            self.summary.unchanged += 1
            self.bar.advance(1)
            return False
        return True

    def start(self, pool: ThreadPoolExecutor, record: RecordInfo, names: set[str] | None) -> None:
        """Download ``record`` (or a pack, and write the records it holds) in the pool."""
        if record.is_pack:
            future = pool.submit(_download_pack, self.backend, self.store, record, names)
        else:
            future = pool.submit(_download, self.backend, self.store, record)
        self.in_flight[future] = record

    def settle_some(self) -> None:
        """Wait for at least one download and count what finished."""
        finished, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            self._settle(future)

    def settle_all(self) -> None:
        """Wait for every download in flight."""
        for future in list(self.in_flight):
            self._settle(future)

    def _settle(self, future: Future[Written]) -> None:
        record = self.in_flight.pop(future)
        try:
            written = future.result()
        except ConfigError:
            raise
        except (AdderError, OSError) as exc:
            self.summary.failed += 1
            if self.summary.failed <= SHOWN_FAILURES:
                print(f"error: {record.key}: {exc}", file=self.errors)
            self.bar.advance(1)
            return
        self.summary.results += written.results
        self.summary.errors += written.errors
        self.summary.unchanged += written.unchanged
        self.summary.refused += len(written.refused)
        for name in written.refused:
            text = f"error: not fetched, not a record name: {name!r} in {record.key}"
            print(text, file=self.errors)
        self.bar.advance(written.total)


@dataclass
class Written:
    """What one download put into the directory (one record, or the records of a pack)."""

    results: int = 0
    errors: int = 0
    unchanged: int = 0
    """Records whose file was already there with the same bytes."""
    refused: list[str] = field(default_factory=list)
    """Names in a pack that are no record name (never written)."""

    @property
    def total(self) -> int:
        """Records seen."""
        return self.results + self.errors + self.unchanged + len(self.refused)

    def count(self, suffix: str) -> None:
        """One more record written."""
        if suffix == RESULT_SUFFIX:
            self.results += 1
        else:
            self.errors += 1


def _download(backend: JobBackend, store: LocalDirectoryResultStore, record: RecordInfo) -> Written:
    written = Written()
    data = backend.read_record(record)
    if not _same_file(store.directory / record.file_name, data):
        store.put(record.file_name, data, "")
    written.count(record.suffix)  # counted as fetched, as before: it is listed and here
    return written


def _download_pack(
    backend: JobBackend,
    store: LocalDirectoryResultStore,
    pack: RecordInfo,
    names: set[str] | None,
) -> Written:
    """Read a pack and write each record it holds as the default layout's file."""
    written = Written()
    for record in read_pack(backend, pack):
        if names is not None and record.name not in names:
            continue
        if not is_record_name(record.name):
            written.refused.append(record.name)
        elif _same_file(store.directory / record.file_name, record.content):
            written.unchanged += 1
        else:
            store.put(record.file_name, record.content, "")
            written.count(record.suffix)
    return written


def _unchanged(path: Path, record: RecordInfo) -> bool:
    """True when ``path`` already holds the record (by MD5 when the listing gave one)."""
    try:
        size = path.stat(follow_symlinks=False).st_size
    except OSError:
        return False
    if size != record.size or record.md5 is None:
        return False
    with path.open("rb") as existing:
        return hashlib.md5(existing.read(), usedforsecurity=False).hexdigest() == record.md5


def _same_file(path: Path, data: bytes) -> bool:
    try:
        with path.open("rb") as existing:
            return existing.read() == data
    except OSError:
        return False
