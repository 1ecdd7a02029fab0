"""The local runner's engine: many tasks, one or more worker processes, a clean stop."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, StoreWriteError, WorkerDiedError
from core.local_store import LocalDirectoryResultStore
from core.outcome import OutcomeKind
from core.pipeline import process_message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path
    from types import FrameType

    from core.task_source import Item

MAX_REPORTED_FAILURES = 20


@dataclass
class RunSummary:
    """Counts of a run, and the first few failures for the terminal."""

    succeeded: int = 0
    rejected: int = 0
    """Bad tasks: their error records were written."""
    errored: int = 0
    """Tasks whose result could not be written (the store failed)."""
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    stopped_by: int | None = None
    """The signal number that stopped the run early, if one did."""
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        """Tasks that did not produce a result: rejected plus errored."""
        return self.rejected + self.errored

    @property
    def processed(self) -> int:
        """Every task the run finished with, whatever the outcome."""
        return self.succeeded + self.failed + self.skipped

    def add(self, other: RunSummary) -> None:
        """Fold a chunk's counts into this summary."""
        self.succeeded += other.succeeded
        self.rejected += other.rejected
        self.errored += other.errored
        self.skipped += other.skipped
        room = MAX_REPORTED_FAILURES - len(self.failures)
        if room > 0:
            self.failures.extend(other.failures[:room])

    def line(self, results_dir: Path) -> str:
        """The one-line summary printed at the end of a run."""
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.processed} {'task' if self.processed == 1 else 'tasks'}: "
            f"{self.succeeded} succeeded, {self.failed} failed, "
            f"{self.skipped} skipped in {self.seconds:.2f}s ({rate:,.0f} tasks/s); "
            f"results in {results_dir}"
        )
        if self.stopped_by is not None:
            name = signal.Signals(self.stopped_by).name
            text = f"stopped by {name}: " + text + "; rerun with --resume to finish"
        return text


@dataclass(frozen=True)
class RunOptions:
    """How to run: where results go, how many processes, and whether to skip finished tasks."""

    results_dir: Path
    workers: int = 1
    resume: bool = False
    durable: bool = False


# --- worker side -------------------------------------------------------------------------

_store: LocalDirectoryResultStore | None = None
_resume = False
_shared_stop: Any = None
_local_stop = False


def _request_local_stop(signum: int, frame: FrameType | None) -> None:
    global _local_stop
    _local_stop = True


def _init_worker(
    results_dir: Path, durable: bool, resume: bool, stop: Any, parent_pid: int | None = None
) -> None:
    if parent_pid is not None:  # a pool worker: never outlive the runner
        _die_with_parent(parent_pid)
    _use_store(LocalDirectoryResultStore(results_dir, durable=durable), resume, stop)
    if stop is not None:  # a pool worker: finish the task in hand, then stop
        signal.signal(signal.SIGINT, _request_local_stop)
        signal.signal(signal.SIGTERM, _request_local_stop)


def _use_store(store: LocalDirectoryResultStore, resume: bool, stop: Any) -> None:
    global _store, _resume, _shared_stop, _local_stop
    _store, _resume, _shared_stop, _local_stop = store, resume, stop, False


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this worker when the runner dies (even by ``kill -9``).

    Without it a killed runner's workers live on, adopted by init, holding its stdout and
    stderr open. Killing them is safe: every write is temp + rename, so a kill leaves at most
    a temporary file, which ``--resume`` removes. Where prctl is unavailable (not Linux),
    :func:`_parent_gone` is checked between tasks instead.
    """
    global _parent_pid
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        _parent_pid = parent_pid
    if os.getppid() != parent_pid:  # the runner died before prctl took effect
        os._exit(1)


_parent_pid: int | None = None
"""Set only where the kernel cannot kill a worker with its parent: then it checks itself."""


def _parent_gone() -> bool:
    return _parent_pid is not None and os.getppid() != _parent_pid


def _stop_requested() -> bool:
    return _local_stop or (_shared_stop is not None and bool(_shared_stop.value)) or _parent_gone()


def process_chunk(chunk: Iterable[Item]) -> RunSummary:
    """Process the tasks of one chunk in order; stop early (not mid-task) if asked to."""
    store = _store
    assert store is not None, "worker not initialised"
    skip_if = store.has_result if _resume else None
    summary = RunSummary()
    for position, raw in chunk:
        if _stop_requested():
            break
        try:
            outcome = process_message(raw, store, skip_if=skip_if)
        except StoreWriteError as exc:
            summary.errored += 1
            if len(summary.failures) < MAX_REPORTED_FAILURES:
                summary.failures.append(f"task {position}: {exc}")
            continue
        kind = outcome.kind
        if kind is OutcomeKind.SUCCEEDED:
            summary.succeeded += 1
        elif kind is OutcomeKind.SKIPPED:
            summary.skipped += 1
        else:
            summary.rejected += 1
            if len(summary.failures) < MAX_REPORTED_FAILURES:
                summary.failures.append(
                    f"task {position}: {outcome.reason} [{outcome.code}] -> {outcome.name}.err"
                )
    return summary


# --- parent side -------------------------------------------------------------------------


class _InputInterruptedError(Exception):
    """Raised by the stop handler into a read that waits for input (never seen by users)."""


class _StopSignals:
    """Turns the first SIGINT/SIGTERM into a polite stop; a second one acts as usual.

    A stop must also end a wait for input that may never come (``producer | runner`` with an
    idle producer): Python retries a read interrupted by a signal whose handler returns, so
    while :meth:`next_chunk` waits, the handler raises instead.
    """

    def __init__(self, shared: Any) -> None:
        self.signum: int | None = None
        self._shared = shared
        self._previous: dict[int, Any] = {}
        self._waiting_for_input = False

    def __enter__(self) -> _StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global _local_stop
        if self.signum is None:
            self.signum = signum
            _local_stop = True
            if self._shared is not None:
                self._shared.value = 1
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        if self._waiting_for_input:
            self._waiting_for_input = False
            raise _InputInterruptedError

    def next_chunk(self, chunks: Iterator[Iterable[Item]]) -> Iterable[Item] | None:
        """The next chunk; None at the end of the input, or once a stop was asked for.

        A chunk read in the instant between the read's return and the end of the wait is
        dropped with the rest of the unread input; ``--resume`` runs it again from a file.
        """
        if self.stopped:
            return None
        self._waiting_for_input = True
        try:
            return next(chunks, None)
        except _InputInterruptedError:
            return None
        finally:
            self._waiting_for_input = False

    @property
    def stopped(self) -> bool:
        return self.signum is not None


def run_chunks(
    chunks: Iterable[Iterable[Item]],
    options: RunOptions,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Run every chunk, in this process (one worker) or a pool of ``options.workers``.

    The results directory is opened and tried first, so an unusable one is one
    :class:`~core.errors.ConfigError` before any task or worker process starts.
    """
    started = time.monotonic()
    progress = on_progress or (lambda count: None)
    store = open_results(options)
    if options.resume:
        store.remove_stale_temporaries()
    if options.workers <= 1:
        summary = _run_inline(iter(chunks), store, options, progress)
    else:
        store.close()
        summary = _run_pool(iter(chunks), options, progress)
    summary.seconds = time.monotonic() - started
    return summary


def open_results(options: RunOptions) -> LocalDirectoryResultStore:
    """The results directory, created if needed and checked writable; ConfigError if not."""
    directory = options.results_dir
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"results directory {directory} exists and is not a directory")
    try:
        store = LocalDirectoryResultStore(directory, durable=options.durable)
        store.check_writable()
    except StoreWriteError as exc:
        raise ConfigError(str(exc)) from None
    return store


def _run_inline(
    chunks: Iterator[Iterable[Item]],
    store: LocalDirectoryResultStore,
    options: RunOptions,
    progress: Callable[[int], None],
) -> RunSummary:
    _use_store(store, options.resume, None)
    summary = RunSummary()
    with store, _StopSignals(None) as stop:
        while (chunk := stop.next_chunk(chunks)) is not None:
            part = process_chunk(chunk)
            summary.add(part)
            progress(part.processed)
    summary.stopped_by = stop.signum
    return summary


def _pool_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _run_pool(
    chunks: Iterator[Iterable[Item]], options: RunOptions, progress: Callable[[int], None]
) -> RunSummary:
    try:
        return _run_pool_unguarded(chunks, options, progress)
    except BrokenProcessPool:
        raise WorkerDiedError(
            "a worker process died unexpectedly (killed, or out of memory); the results"
            " written so far are whole: rerun with --resume to finish"
        ) from None


def _run_pool_unguarded(
    chunks: Iterator[Iterable[Item]], options: RunOptions, progress: Callable[[int], None]
) -> RunSummary:
    context = _pool_context()
    shared = context.RawValue("b", 0)  # lock-free flag, read once per task
    summary = RunSummary()
    in_flight: set[Future[RunSummary]] = set()
    limit = options.workers * 4  # bounded read-ahead: memory stays flat on huge inputs
    with (
        _StopSignals(shared) as stop,
        ProcessPoolExecutor(
            max_workers=options.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(options.results_dir, options.durable, options.resume, shared, os.getpid()),
        ) as pool,
    ):
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and not stop.stopped and len(in_flight) < limit:
                chunk = stop.next_chunk(chunks)
                if chunk is None:
                    exhausted = True
                else:
                    in_flight.add(pool.submit(process_chunk, chunk))
            if stop.stopped:
                exhausted = True
            if not in_flight:
                break
            done, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                part = future.result()
                summary.add(part)
                progress(part.processed)
    summary.stopped_by = stop.signum
    return summary


def exit_code(summary: RunSummary) -> int:
    """0: every task succeeded or was skipped; 1: some failed; 128+N: stopped by signal N."""
    if summary.stopped_by is not None:
        return 128 + summary.stopped_by
    return 1 if summary.failed else 0


def default_workers() -> int:
    """Processes to use for ``--workers 0``: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def print_failures(summary: RunSummary) -> None:
    """List the first failures on stderr, then what became of each kind of failure."""
    for line in summary.failures:
        print(f"failed: {line}", file=sys.stderr)
    hidden = summary.failed - len(summary.failures)
    if hidden > 0:
        print(f"... and {hidden} more", file=sys.stderr)
    if summary.rejected:
        print(
            f"{_tasks(summary.rejected)} rejected as bad: each has its .err record",
            file=sys.stderr,
        )
    if summary.errored:
        print(
            f"{_tasks(summary.errored)} not written: the results directory failed (see above)"
            " and no record was kept; fix it and rerun with --resume",
            file=sys.stderr,
        )


def _tasks(count: int) -> str:
    return f"{count} task" if count == 1 else f"{count} tasks"
