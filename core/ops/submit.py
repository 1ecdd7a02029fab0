"""``adder submit CLOUD``: every task of a file onto the job's queue, once, with a manifest.

Written once for every cloud: tasks are read as exact bytes, packed into batches within the
adapter's limits, sent by a bounded pool of threads, and retried by rounds when the cloud
says another try may work. The first error no retry can fix stops the submit: batches in
flight are waited for, the manifest records everything the queue confirmed, and the summary
says how many were sent and how to go on (``--resume`` sends only what the manifest lacks).
"""

from __future__ import annotations

import collections
import contextlib
import json
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from core.errors import AdderError, CloudUnavailableError, ConfigError
from core.pipeline import record_name
from core.progress import ProgressBar
from core.records import OversizedMessage
from core.task_source import iter_task_chunks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from core.ops.backend import JobBackend
    from core.ops.manifest import Manifest

MAX_SUBMIT_LINE_BYTES = 10 * 1000 * 1000
"""The largest message any of the three queues takes (Pub/Sub's 10 MB); a longer line is
refused without being held whole (each cloud's own limit reports the smaller ones)."""
SHOWN_PROBLEMS = 5
"""Distinct reasons printed as they happen; the rest are counted in the summary."""


def message_bodies(source: str, chunk_size: int = 500) -> Iterator[list[bytes]]:
    """The tasks of ``source`` (JSON Lines, a JSON array, or ``-``) as message bodies, in chunks.

    Each body is the task's exact JSON text, as bytes: nothing is re-encoded, so exact decimals
    reach the function as written. Bad tasks are sent as they are: the function records why
    they are bad, the same as for any other producer.
    """
    for chunk in iter_task_chunks(source, chunk_size, max_line_bytes=MAX_SUBMIT_LINE_BYTES):
        yield [_as_bytes(position, raw) for position, raw in chunk]


def _as_bytes(position: int | str, raw: object) -> bytes:
    if isinstance(raw, OversizedMessage):
        raise ConfigError(
            f"task {position} of the tasks file is {raw.size:,} bytes: no queue takes a message"
            f" over {MAX_SUBMIT_LINE_BYTES:,} bytes; submit stopped there"
        )
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return json.dumps(raw, default=str).encode("utf-8")


@dataclass
class SubmitSummary:
    """How a submit went."""

    sent: int = 0
    skipped: int = 0
    """Tasks a resume did not send because the manifest records them as sent."""
    failed: int = 0
    """Tasks the queue can never take (too large, refused) or gave up on."""
    seconds: float = 0.0
    stopped: AdderError | None = None
    """The error that stopped the submit early, if one did."""
    interrupted: bool = False
    problems: collections.Counter[str] = field(default_factory=collections.Counter)

    def line(self, destination: str) -> str:
        """The final line ``adder submit`` prints."""
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        text = f"sent {self.sent:,} tasks to {destination} in {self.seconds:.2f}s ({rate:,.0f}/s)"
        if self.skipped:
            text += f"; {self.skipped:,} skipped (sent before)"
        if self.failed:
            text += f"; {self.failed:,} not sent (see errors above)"
        return text

    @property
    def exit_code(self) -> int:
        """0 every task sent; 2 stopped by a configuration error; 130 Ctrl-C; 1 otherwise."""
        if self.interrupted:
            return 130
        if isinstance(self.stopped, ConfigError):
            return 2
        return 1 if self.failed or self.stopped else 0


@dataclass
class _Batch:
    bodies: list[bytes]
    names: list[str]


@dataclass
class _BatchResult:
    sent: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """One reason per message the queue refused for good."""


def submit(
    backend: JobBackend,
    source: str,
    *,
    manifest: Manifest,
    concurrency: int = 8,
    attempts: int = 3,
    resume: bool = False,
    progress: ProgressBar | None = None,
    pause: float = 0.5,
    errors: TextIO | None = None,
) -> SubmitSummary:
    """Send the tasks of ``source`` through ``backend`` and record them in ``manifest``.

    ``attempts`` bounds the sends of one batch (and of each message the queue refused with
    "try again"); ``pause`` seconds, doubling, are waited between them.
    """
    errors = errors or sys.stderr
    bar = progress or ProgressBar(None, enabled=False)
    summary = SubmitSummary()
    skip = manifest.sent_names() if resume else set()
    started = time.monotonic()
    workers = max(1, min(concurrency, backend.max_concurrency))
    in_flight: set[Future[_BatchResult]] = set()
    read = 0

    def settle(future: Future[_BatchResult]) -> None:
        try:
            result = future.result()
        except AdderError as exc:
            summary.stopped = summary.stopped or exc
            return
        manifest.record_sent(result.sent)
        summary.sent += len(result.sent)
        for reason in result.refused:
            _problem(summary, reason, errors)
        bar.advance(len(result.sent) + len(result.refused))

    pool = ThreadPoolExecutor(workers, thread_name_prefix="submit")
    try:
        with _first_ctrl_c_stops(summary):
            for batch in _batches(
                backend, message_bodies(source), skip, summary, errors=errors, bar=bar
            ):
                read += len(batch.bodies)
                if len(in_flight) >= workers * 2:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        settle(future)
                if summary.stopped is not None or summary.interrupted:
                    break
                in_flight.add(pool.submit(_send, backend, batch, attempts, pause))
            # batches already handed to the cloud are waited for, so the manifest learns
            # whether they arrived; a second Ctrl-C stops at once
            # batches queued but not started are sent only if the submit goes on
            pool.shutdown(wait=False, cancel_futures=bool(summary.stopped or summary.interrupted))
            for future in in_flight:
                if not future.cancelled():
                    wait([future])
                    settle(future)
    except ConfigError as exc:  # the tasks file itself (unreadable, a line too long)
        summary.stopped = exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    summary.seconds = time.monotonic() - started
    complete = summary.stopped is None and not summary.interrupted and not summary.failed
    manifest.header.update(read=read + summary.skipped + summary.failed, complete=complete)
    manifest.save()
    return summary


@contextlib.contextmanager
def _first_ctrl_c_stops(summary: SubmitSummary) -> Iterator[None]:
    """The first Ctrl-C (SIGINT) asks the submit to stop after the batches in flight, so the
    manifest stays exact; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        if summary.interrupted:
            raise KeyboardInterrupt
        summary.interrupted = True

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _batches(
    backend: JobBackend,
    chunks: Iterable[list[bytes]],
    skip: set[str],
    summary: SubmitSummary,
    *,
    errors: TextIO,
    bar: ProgressBar,
) -> Iterator[_Batch]:
    """Bodies not yet sent, in batches within the backend's count and byte limits."""
    bodies: list[bytes] = []
    names: list[str] = []
    size = 0
    for chunk in chunks:
        for body in chunk:
            name = record_name(body)
            if name in skip:
                summary.skipped += 1
                bar.advance(1)
                continue
            problem = backend.unsendable(body)
            if problem is not None:
                _problem(summary, problem, errors)
                bar.advance(1)
                continue
            full = len(bodies) == backend.max_batch_messages
            if bodies and (full or size + len(body) > backend.max_batch_bytes):
                yield _Batch(bodies, names)
                bodies, names, size = [], [], 0
            bodies.append(body)
            names.append(name)
            size += len(body)
    if bodies:
        yield _Batch(bodies, names)


def _problem(summary: SubmitSummary, reason: str, errors: TextIO) -> None:
    summary.failed += 1
    summary.problems[reason] += 1
    if summary.problems[reason] == 1 and len(summary.problems) <= SHOWN_PROBLEMS:
        print(f"error: a task was not sent: {reason}", file=errors)


def _send(backend: JobBackend, batch: _Batch, attempts: int, pause: float) -> _BatchResult:
    """Send one batch; send again what the queue refused with "try again", within attempts.

    Raises ConfigError (no retry can fix it) at once, and CloudUnavailableError when the
    batch still failed after ``attempts`` sends.
    """
    result = _BatchResult()
    pending = list(range(len(batch.bodies)))
    for attempt in range(1, attempts + 1):
        try:
            refused = backend.send_batch([batch.bodies[i] for i in pending])
        except CloudUnavailableError:
            if attempt == attempts:
                raise
            time.sleep(pause * 2 ** (attempt - 1))
            continue
        retry: list[int] = []
        refused_at = {r.index: r for r in refused}
        for position, index in enumerate(pending):
            refusal = refused_at.get(position)
            if refusal is None:
                result.sent.append(batch.names[index])
            elif refusal.retry and attempt < attempts:
                retry.append(index)
            else:
                result.refused.append(refusal.reason)
        pending = retry
        if not pending:
            return result
        time.sleep(pause * 2 ** (attempt - 1))
    return result


def stop_line(summary: SubmitSummary, command: Callable[[], str]) -> str | None:
    """The one stderr line after a submit that did not finish: why, how many were sent, and
    the command that sends the rest."""
    if summary.interrupted:
        return (
            f"interrupted: {summary.sent:,} tasks sent and recorded; to send the rest: "
            f"{command()} --resume"
        )
    if summary.stopped is None:
        return None
    if not summary.sent:
        return f"error: {summary.stopped}"
    return (
        f"error: {summary.stopped} ({summary.sent:,} tasks sent and recorded; once fixed, send"
        f" the rest with: {command()} --resume)"
    )
