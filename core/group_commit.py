"""Group commit: concurrent single deliveries gathered into one packed write.

A platform that hands a function one message per request (Pub/Sub push) gives
:func:`core.delivery.deliver_packed` nothing to pack. When the instance serves many requests at
once, :class:`GroupCommit` gathers them: the first request opens a batch, the requests that
arrive while it is open join it, and the batch is written as one pack (one ``put``) when it
holds ``max_batch`` deliveries or ``max_wait_seconds`` after it was opened, whichever comes
first. Every request of the batch then gets its own verdict: acknowledged when the pack was
written (or its task rejected with the record in the pack), retried when it was not. When the
pack write fails, every delivery of the batch is retried: nothing is acknowledged that is not
stored.

Threads only: callers block on events (no polling). The request that opened a batch waits for
the window (or until the batch is full) and then writes it; the others wait for that write. So
no request waits longer than the window plus the write. A batch is closed as soon as it is
full or its window ends, so new requests open the next one while it is being written: writes
of successive batches overlap.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, NamedTuple

from core.delivery import Handled, deliver_packed
from core.errors import ConfigError
from core.settings import setting

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from core.delivery import Delivery, LogEmitter
    from core.ports import ResultStore

    Wait = Callable[[threading.Event, float], object]
    """Blocks until the event is set or the seconds are up (``threading.Event.wait``)."""

MAX_BATCH_SETTING = "PACK_MAX_BATCH"
MAX_WAIT_SETTING = "PACK_MAX_WAIT_MS"
THREADS_SETTING = "THREADS"
"""functions-framework's gunicorn threads: how many requests one instance serves at once."""
MAX_BATCH_LIMIT = 1000
"""The largest batch: Cloud Run's largest request concurrency per instance."""
MAX_WAIT_LIMIT_MS = 10_000
"""The longest window: every request of a batch waits for it, inside the push deadline."""
DEFAULT_MAX_WAIT_MS = 50


def _wait_for(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


class _Batch:
    """One open or closing batch: its deliveries, and the events its requests wait on."""

    __slots__ = ("deliveries", "done", "full", "handled")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.full = threading.Event()
        """Set when the batch holds ``max_batch`` deliveries: it is written at once."""
        self.done = threading.Event()
        """Set when the batch is settled: ``handled`` holds every delivery's verdict."""
        self.handled: list[Handled] = []


class GroupCommit:
    """Gathers concurrent deliveries into batches written as one pack each.

    ``store`` and ``emit`` are what :func:`~core.delivery.deliver_packed` writes and logs
    with. ``wait`` (tests) replaces ``threading.Event.wait`` for the window.
    """

    def __init__(
        self,
        store: ResultStore,
        emit: LogEmitter,
        max_batch: int,
        max_wait_seconds: float,
        *,
        wait: Wait = _wait_for,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_seconds < 0:
            raise ValueError(f"max_wait_seconds must not be negative, not {max_wait_seconds}")
        self.store = store
        self.emit = emit
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self._wait = wait
        self._lock = threading.Lock()
        self._open: _Batch | None = None

    @property
    def pending(self) -> int:
        """How many deliveries the open batch holds (0 when none is open)."""
        with self._lock:
            return 0 if self._open is None else len(self._open.deliveries)

    def submit(self, delivery: Delivery) -> Handled:
        """Add ``delivery`` to the open batch (opening one if none is) and block until that
        batch is written; its verdict, as :func:`~core.delivery.deliver` would give it."""
        with self._lock:
            batch = self._open
            opened = batch is None
            if batch is None:
                batch = self._open = _Batch()
            index = len(batch.deliveries)
            batch.deliveries.append(delivery)
            if len(batch.deliveries) >= self.max_batch:
                self._open = None  # full: the next request opens another batch
                batch.full.set()
        if opened:
            self._commit(batch)
        else:
            batch.done.wait()
        return batch.handled[index]

    def _commit(self, batch: _Batch) -> None:
        """The opener's part: wait for the window or a full batch, close it, write it, and
        release every request of it, whatever happens (an interrupted batch is retried)."""
        handled: list[Handled] | None = None
        try:
            try:
                self._wait(batch.full, self.max_wait_seconds)
            finally:
                with self._lock:
                    if self._open is batch:
                        self._open = None
            # closed: nobody joins any more
            handled = self._deliver(batch.deliveries)
        finally:
            if handled is None:
                interrupted = RuntimeError("the batch was interrupted before its pack was written")
                handled = [Handled(None, interrupted)] * len(batch.deliveries)
            batch.handled = handled
            batch.done.set()

    def _deliver(self, deliveries: Sequence[Delivery]) -> list[Handled]:
        try:
            return deliver_packed(deliveries, self.store, self.emit)
        except Exception as error:  # deliver_packed settles each delivery itself; a bug here
            return [Handled(None, error)] * len(deliveries)


class PackSettings(NamedTuple):
    """A function's group-commit settings."""

    max_batch: int
    max_wait_seconds: float


def pack_settings_from_environment(environ: Mapping[str, str] | None = None) -> PackSettings:
    """``PACK_MAX_BATCH`` (1-1000; default: the server's request threads, ``THREADS``, else
    functions-framework's own default of 4 per CPU) and ``PACK_MAX_WAIT_MS`` (0-10000,
    default 50). A ConfigError naming the setting for anything else."""
    threads = _whole(THREADS_SETTING, environ, 1, None, (os.cpu_count() or 1) * 4)
    default_batch = min(threads, MAX_BATCH_LIMIT)
    max_batch = _whole(MAX_BATCH_SETTING, environ, 1, MAX_BATCH_LIMIT, default_batch)
    wait_ms = _whole(MAX_WAIT_SETTING, environ, 0, MAX_WAIT_LIMIT_MS, DEFAULT_MAX_WAIT_MS)
    return PackSettings(max_batch, wait_ms / 1000)


def _whole(
    name: str, environ: Mapping[str, str] | None, low: int, high: int | None, default: int
) -> int:
    value = setting(name, environ)
    if not value:
        return default
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    number = int(value) if value.isascii() and value.isdigit() else None
    if number is None or number < low or (high is not None and number > high):
        raise ConfigError(f"{name}={value!r}: use a whole number {bounds}")
    return number
