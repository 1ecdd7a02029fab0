"""The worker loop: pull messages from a :class:`~core.worker.port.Receiver`, run each through
the same delivery pipeline as the functions, settle it, and leave cleanly when told to.

Threads (all daemons, so a task stuck past the notice window never holds the process):

- **pollers** (``ceil(concurrency / max_batch)``, at most 16) reserve room for a whole batch
  (``max_batch``), then long-poll for it. ``concurrency`` task threads process at once; at
  most ``prefetch`` more messages (one batch, by default) wait in hand for a free thread, so
  every receive asks for a whole batch instead of one message per freed thread (fewer
  requests: SQS bills each, and each costs a round trip).
- **task threads** (``concurrency``) run :func:`core.delivery.deliver` with the results store:
  one JSON log line per task, and a verdict. A success or a rejection (its record written)
  is acknowledged; a retry (the store failed) is released with a delay, so it comes back and,
  after the queue's max deliveries, reaches the dead-letter queue. Nothing is acknowledged
  before its record is written.
  With the packed layout a task thread takes the messages of one receive call together and
  writes their records as one pack (:func:`core.delivery.deliver_packed`); a failed pack
  write retries them all.
- **settlers** batch acknowledgements and releases (up to ``max_batch`` a call: SQS's
  DeleteMessageBatch of 10), waiting at most ``settle_delay_seconds`` for a batch to fill,
  and not at all when no task is running (nothing more would come).
- **heartbeat** extends the lease of every message in hand when half of it is gone.
- **notice watcher** (:mod:`core.worker.notices`), when the machine has a metadata service.

Stopping: a termination notice, SIGTERM/SIGINT (the ``stop`` event), ``max_messages``
taken, or ``idle_exit_seconds`` without a message. The worker then takes no new message
(a poll already in flight may still return some: they are released at once, unprocessed),
lets the tasks in hand finish until shortly before the notice's deadline, releases what has
not finished, flushes the pending acknowledgements, approves the notice when the source
wants that (Azure), and returns. A fatal receiver error (``ConfigError``: no queue, access
denied) drains the same way and is raised afterwards.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.delivery import Delivery, Handled, deliver, deliver_packed
from core.errors import CloudUnavailableError
from core.outcome import OutcomeKind
from core.packing import ResultsLayout
from core.worker.notices import Notice, NoticeWatcher

if TYPE_CHECKING:
    from collections.abc import Sequence

    from core.ports import ResultStore
    from core.worker.logs import JsonLines
    from core.worker.notices import NoticePoller
    from core.worker.port import ReceivedMessage, Receiver

DEFAULT_CONCURRENCY = 32
DEFAULT_WAIT_SECONDS = 20.0
"""SQS's longest long poll."""
DEFAULT_DRAIN_SECONDS = 20.0
"""The window after SIGTERM/SIGINT (systemd waits 90 s by default, ``docker stop`` 10 s:
set ``--drain-seconds`` to what the host gives)."""
MAX_POLLERS = 16
MAX_MARGIN_SECONDS = 10.0
"""Release what has not finished this long before a deadline (or a fifth of the window, if
less): the release calls themselves need time."""
RECEIVE_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
WAKE_SECONDS = 0.2
"""How often the main thread looks at the stop conditions."""


def drain_margin(window: float) -> float:
    """How long before the end of a ``window`` the worker stops waiting for its tasks."""
    return min(MAX_MARGIN_SECONDS, window * 0.2)


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs (the ``adder work`` options)."""

    concurrency: int = DEFAULT_CONCURRENCY
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    """The long poll of one receive."""
    max_messages: int | None = None
    """Stop after taking this many messages (None: no limit)."""
    idle_exit_seconds: float | None = None
    """Stop when no message came for this long and none is in hand (None: never)."""
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    """The window after a signal, or after a fatal error."""
    retry_delay_seconds: float | None = None
    """When a retried message comes back (None: after one lease, as with the functions)."""
    pollers: int | None = None
    prefetch: int | None = None
    """Messages held beyond ``concurrency``, waiting for a thread (None: one batch; 0: none,
    each receive then asks for as many as there are free threads)."""
    settle_delay_seconds: float = 0.05
    heartbeat_seconds: float | None = None
    """How often leases are looked at (None: a quarter of the lease)."""
    layout: ResultsLayout = ResultsLayout.PER_TASK
    """``packed``: the messages of one receive call make one results object (a pack,
    :mod:`core.packing`), as the functions write with the stack's ``results_layout``."""


class StopReason(enum.Enum):
    """Why the worker stopped taking messages."""

    NOTICE = "notice"
    SIGNAL = "signal"
    IDLE = "idle"
    MAX_MESSAGES = "max_messages"
    ERROR = "error"


@dataclass
class WorkerSummary:
    """What one run did; every received message is acknowledged, released or left to its
    lease (``not_acknowledged``: the queue refused the acknowledgement)."""

    received: int = 0
    succeeded: int = 0
    rejected: int = 0
    retried: int = 0
    acknowledged: int = 0
    not_acknowledged: int = 0
    released: int = 0
    released_unstarted: int = 0
    """Received by a poll in flight when draining began: released without being started."""
    released_unfinished: int = 0
    """Still running at the drain deadline: released (their results may still be written)."""
    extended: int = 0
    receive_calls: int = 0
    reason: StopReason | None = None
    notice: Notice | None = None
    drained_in_time: bool = True
    """Every task in hand finished before the deadline (nothing had to be released)."""
    error: BaseException | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WorkerState:
    """A worker's counts at one moment (for tests and diagnostics)."""

    in_hand: int
    """Received and not yet acknowledged or released."""
    unfinished: int
    """Received and not yet processed: waiting for a thread, or running."""
    receiving: int
    """Receive calls in flight."""
    can_receive: bool
    """A poller may start a receive now (room for a batch, budget left, not draining)."""

    @property
    def parked(self) -> bool:
        """No receive is in flight and none can start until a task finishes."""
        return self.receiving == 0 and not self.can_receive


class _State(enum.Enum):
    PROCESSING = "processing"
    SETTLING = "settling"
    DONE = "done"


@dataclass(eq=False)
class _Entry:
    """One received message in hand, until it is acknowledged or released."""

    message: ReceivedMessage
    lease_until: float
    state: _State = _State.PROCESSING


class Worker:
    """One worker process's loop over ``receiver`` writing to ``store``; :meth:`run` it once.

    ``stop`` is set by the signal handlers (or a test) to drain within ``drain_seconds``; a
    second :meth:`request_stop` stops waiting for the tasks in hand at once.
    """

    def __init__(
        self,
        receiver: Receiver,
        store: ResultStore,
        log: JsonLines,
        *,
        options: WorkerOptions | None = None,
        notice_pollers: Sequence[NoticePoller] = (),
        stop: threading.Event | None = None,
    ) -> None:
        self.receiver = receiver
        self.store = store
        self.log = log
        self.options = options or WorkerOptions()
        if self.options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.stop = stop or threading.Event()
        self.draining = threading.Event()
        """Set once the worker has stopped taking messages (tests wait on it)."""
        self.summary = WorkerSummary()
        self._hurry = threading.Event()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        """The main thread's (stop conditions, draining); the same lock guards every count."""
        self._room_ready = threading.Condition(self._lock)
        """Pollers wait here for room for a batch."""
        self._work_ready = threading.Condition(self._lock)
        """Settlers wait here for acknowledgements and releases to send."""
        prefetch = self.options.prefetch
        self._prefetch = receiver.max_batch if prefetch is None else max(0, prefetch)
        self._capacity = self.options.concurrency + self._prefetch
        self._room = self._capacity
        """Messages that may still be taken: capacity less those received and unfinished."""
        self._budget = self.options.max_messages
        self._entries: set[_Entry] = set()
        self._processing = 0
        """Messages received and not yet processed (waiting for a thread, or running)."""
        self._receiving = 0
        self._draining = False
        self._last_activity = time.monotonic()
        self._notice: Notice | None = None
        self._fatal: BaseException | None = None
        self._tasks: queue.SimpleQueue[list[_Entry] | None] = queue.SimpleQueue()
        """Units of work: one entry each, or the entries of one receive call when packed."""
        self._acks: list[_Entry] = []
        self._releases: dict[float, list[_Entry]] = {}
        self._settling_closed = False
        self._heartbeat_stop = threading.Event()
        pollers = self.options.pollers or math.ceil(self.options.concurrency / receiver.max_batch)
        self._poller_count = max(1, min(MAX_POLLERS, pollers))
        self._watchers = [NoticeWatcher(p, self._on_notice, log) for p in notice_pollers]

    # --- the run ------------------------------------------------------------------------

    def run(self) -> WorkerSummary:
        """Work until a stop condition, drain, and return the summary; a fatal receiver
        error is raised after draining."""
        lease = self.receiver.lease_seconds
        self.log.event(
            logging.INFO,
            f"worker started on {self.receiver.describe}",
            queue=self.receiver.describe,
            concurrency=self.options.concurrency,
            pollers=self._poller_count,
            lease_seconds=lease,
            notices=[w.poller.name for w in self._watchers] or None,
        )
        for i in range(self.options.concurrency):
            self._thread(self._task_loop, f"adder-task-{i}")
        settlers = [
            self._thread(self._settle_loop, f"adder-settle-{i}") for i in range(self._poller_count)
        ]
        heartbeat = self._thread(self._heartbeat_loop, "adder-heartbeat")
        pollers = [
            self._thread(self._poll_loop, f"adder-poll-{i}") for i in range(self._poller_count)
        ]
        for watcher in self._watchers:
            watcher.start()
        reason = self._wait_for_stop()
        self._drain(reason, settlers, pollers, heartbeat)
        if self.summary.error is not None:
            raise self.summary.error
        return self.summary

    def state(self) -> WorkerState:
        """The worker's counts now."""
        with self._cond:
            return WorkerState(
                in_hand=len(self._entries),
                unfinished=self._processing,
                receiving=self._receiving,
                can_receive=not self._draining and self._budget != 0 and self._room >= self._need(),
            )

    def _need(self) -> int:
        """The room a poller waits for: a whole batch (or one message, without prefetch)."""
        return min(self.receiver.max_batch, self._capacity) if self._prefetch else 1

    def request_stop(self) -> None:
        """Stop taking messages (SIGTERM, SIGINT); a second request stops waiting for the
        tasks in hand."""
        if self.stop.is_set():
            self._hurry.set()
        self.stop.set()

    @staticmethod
    def _thread(target: object, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        return thread

    def _wake_all(self) -> None:
        """Wake every waiting thread (the lock held): something they all check changed."""
        self._cond.notify_all()
        self._room_ready.notify_all()
        self._work_ready.notify_all()

    def _on_notice(self, notice: Notice) -> None:
        with self._lock:
            if self._notice is None:
                self._notice = notice
            self._wake_all()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = error
            self._wake_all()

    def _wait_for_stop(self) -> StopReason:
        idle = self.options.idle_exit_seconds
        with self._cond:
            while True:
                if self._notice is not None:
                    return StopReason.NOTICE
                if self._fatal is not None:
                    return StopReason.ERROR
                if self.stop.is_set():
                    return StopReason.SIGNAL
                quiet = not self._entries and self._receiving == 0
                if self._budget == 0 and quiet:
                    return StopReason.MAX_MESSAGES
                if (
                    idle is not None
                    and not self._entries
                    and time.monotonic() - self._last_activity >= idle
                ):
                    return StopReason.IDLE
                self._cond.wait(WAKE_SECONDS)

    # --- receiving ----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        failures = 0
        while True:
            need = self._need()
            with self._lock:
                while not self._draining and (self._room < need or self._budget == 0):
                    self._room_ready.wait()
                if self._draining:
                    return
                take = min(self.receiver.max_batch, self._room)
                if self._budget is not None:
                    take = min(take, self._budget)
                    self._budget -= take
                self._room -= take
                self._receiving += 1
                self.summary.receive_calls += 1
            started = time.monotonic()
            try:
                messages = self.receiver.receive(take, self.options.wait_seconds)
            except CloudUnavailableError as exc:
                self._received([], take)
                failures += 1
                delay = RECEIVE_BACKOFF_SECONDS[min(failures, len(RECEIVE_BACKOFF_SECONDS)) - 1]
                self.log.event(
                    logging.WARNING,
                    f"receiving failed, trying again in {delay:g} s: {exc}",
                    queue=self.receiver.describe,
                )
                self.draining.wait(delay)
                continue
            except BaseException as exc:
                self._received([], take)
                self._fail(exc)
                return
            failures = 0
            extra = list(messages[take:])
            entries = self._received(messages[:take], take, started)
            if extra:  # an adapter gave more than asked: not ours to start
                self._release_now(extra, "more than asked for")
            if self.options.layout is ResultsLayout.PACKED:
                if entries:
                    self._tasks.put(entries)
            else:
                for entry in entries:
                    self._tasks.put([entry])

    def _received(
        self, messages: Sequence[ReceivedMessage], reserved: int, started: float = 0.0
    ) -> list[_Entry]:
        """Account for one receive call: unused slots back; the messages become entries, or,
        when draining began meanwhile, are released unstarted."""
        lease = self.receiver.lease_seconds
        with self._cond:
            self._receiving -= 1
            unused = reserved - len(messages)
            self._room += unused
            if self._budget is not None:
                self._budget += unused
            self.summary.received += len(messages)
            if messages:
                self._last_activity = time.monotonic()
            draining = self._draining
            entries: list[_Entry] = []
            if draining:
                self._room += len(messages)
                self.summary.released_unstarted += len(messages)
            else:
                entries = [_Entry(m, started + lease) for m in messages]
                self._entries.update(entries)
                self._processing += len(entries)
            if self._room >= self._need():
                self._room_ready.notify()
        if draining and messages:
            self._release_now(messages, "received while draining")
        return entries

    # --- processing ---------------------------------------------------------------------

    def _task_loop(self) -> None:
        while (unit := self._tasks.get()) is not None:
            self._process(unit)

    def _process(self, unit: list[_Entry]) -> None:
        """Run a unit (one message, or a receive call's messages into one pack), then settle
        each message by its own verdict."""
        live = [entry for entry in unit if entry.state is _State.PROCESSING]
        if not live:  # released at the deadline before it started
            return
        deliveries = [
            Delivery(
                entry.message.body,
                entry.message.message_id,
                entry.message.delivery_count,
                dict(entry.message.platform) or None,
            )
            for entry in live
        ]
        try:
            if self.options.layout is ResultsLayout.PACKED:
                verdicts = deliver_packed(deliveries, self.store, self.log)
            else:
                verdicts = [deliver(deliveries[0], self.store, self.log)]
        except Exception as exc:  # deliver catches the pipeline's errors; this is the log's
            verdicts = [Handled(None, exc) for _ in live]
        with self._lock:
            for entry, handled in zip(live, verdicts, strict=True):
                self._finished(entry, handled)
            self._work_ready.notify()
            if self._room >= self._need():
                self._room_ready.notify()
            if not self._processing:  # settlers stop waiting to fill a batch; drain may end
                self._work_ready.notify_all()
                self._cond.notify_all()

    def _finished(self, entry: _Entry, handled: Handled) -> None:
        """Count one processed message and queue its acknowledgement or release (the lock
        held); a message already released at the deadline is only counted."""
        self._room += 1
        self._processing -= 1
        if handled.retry:
            self.summary.retried += 1
        elif handled.outcome is not None and handled.outcome.kind is OutcomeKind.REJECTED:
            self.summary.rejected += 1
        else:
            self.summary.succeeded += 1
        if entry.state is not _State.PROCESSING:  # released at the deadline already
            return
        entry.state = _State.SETTLING
        if handled.retry:
            delay = self.options.retry_delay_seconds
            delay = self.receiver.lease_seconds if delay is None else delay
            self._releases.setdefault(delay, []).append(entry)
        else:
            self._acks.append(entry)

    # --- settling -----------------------------------------------------------------------

    def _settle_loop(self) -> None:
        batch_size = self.receiver.max_batch
        while True:
            with self._lock:
                while not self._acks and not self._releases and not self._settling_closed:
                    self._work_ready.wait()
                if not self._acks and not self._releases:
                    return
                fill_until = time.monotonic() + self.options.settle_delay_seconds
                while self._processing and not self._settling_closed and not self._full():
                    remaining = fill_until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._work_ready.wait(remaining)
                if self._acks:
                    batch, self._acks = self._acks[:batch_size], self._acks[batch_size:]
                    delay: float | None = None
                elif self._releases:
                    delay = next(iter(self._releases))
                    group = self._releases.pop(delay)
                    batch = group[:batch_size]
                    if group[batch_size:]:
                        self._releases[delay] = group[batch_size:]
                else:
                    continue
            if delay is None:
                self._acknowledge(batch)
            else:
                self._release(batch, delay)

    def _full(self) -> bool:
        """A whole batch of acknowledgements or releases is waiting (the lock held)."""
        size = self.receiver.max_batch
        return len(self._acks) >= size or any(len(g) >= size for g in self._releases.values())

    def _acknowledge(self, batch: list[_Entry]) -> None:
        messages = [entry.message for entry in batch]
        try:
            refused = self.receiver.acknowledge(messages)
        except CloudUnavailableError as exc:
            refused = messages
            self.log.event(
                logging.WARNING,
                f"could not acknowledge {len(messages)} messages (they will be delivered again:"
                f" a duplicate, not a loss): {exc}",
                message_ids=[m.message_id for m in messages],
            )
        except BaseException as exc:
            refused = messages
            self._fail(exc)
        else:
            if refused:
                self.log.event(
                    logging.WARNING,
                    f"the queue did not take {len(refused)} acknowledgements (those messages"
                    " will be delivered again: a duplicate, not a loss)",
                    message_ids=[m.message_id for m in refused],
                )
        self._settled(batch, acknowledged=len(messages) - len(refused), refused=len(refused))

    def _release(self, batch: list[_Entry], delay: float) -> None:
        messages = [entry.message for entry in batch]
        try:
            self.receiver.release(messages, delay)
        except CloudUnavailableError as exc:
            self.log.event(
                logging.WARNING,
                f"could not release {len(messages)} messages; they come back when their lease"
                f" ends: {exc}",
                message_ids=[m.message_id for m in messages],
            )
        except BaseException as exc:
            self._fail(exc)
        self._settled(batch, released=len(messages))

    def _settled(
        self, batch: list[_Entry], *, acknowledged: int = 0, refused: int = 0, released: int = 0
    ) -> None:
        with self._cond:
            for entry in batch:
                entry.state = _State.DONE
                self._entries.discard(entry)
            self.summary.acknowledged += acknowledged
            self.summary.not_acknowledged += refused
            self.summary.released += released
            self._last_activity = time.monotonic()

    def _release_now(self, messages: Sequence[ReceivedMessage], why: str) -> None:
        """Release at once, outside the settlers (while draining), ``max_batch`` a call."""
        size = self.receiver.max_batch
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            try:
                self.receiver.release(chunk, 0)
            except Exception as exc:
                self.log.event(
                    logging.WARNING,
                    f"could not release {len(chunk)} messages ({why}); they come back when"
                    f" their lease ends: {exc}",
                    message_ids=[m.message_id for m in chunk],
                )
                continue
            with self._cond:
                self.summary.released += len(chunk)

    # --- leases -------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        lease = self.receiver.lease_seconds
        interval = self.options.heartbeat_seconds or max(0.05, lease / 4)
        while not self._heartbeat_stop.wait(interval):
            now = time.monotonic()
            with self._cond:
                due = [
                    entry
                    for entry in self._entries
                    if entry.state is not _State.DONE and entry.lease_until - now < lease / 2
                ]
            size = self.receiver.max_batch
            for start in range(0, len(due), size):
                chunk = due[start : start + size]
                called = time.monotonic()
                try:
                    self.receiver.extend([entry.message for entry in chunk], lease)
                except CloudUnavailableError as exc:
                    self.log.event(
                        logging.WARNING,
                        f"could not extend the lease of {len(chunk)} messages: {exc}",
                        message_ids=[entry.message.message_id for entry in chunk],
                    )
                    continue
                except BaseException as exc:
                    self._fail(exc)
                    return
                with self._cond:
                    for entry in chunk:
                        entry.lease_until = called + lease
                    self.summary.extended += len(chunk)

    # --- draining -----------------------------------------------------------------------

    def _drain(
        self,
        reason: StopReason,
        settlers: list[threading.Thread],
        pollers: list[threading.Thread],
        heartbeat: threading.Thread,
    ) -> None:
        started = time.monotonic()
        notice = self._notice
        if reason is StopReason.NOTICE and notice is not None:
            window = max(0.0, notice.deadline - started)
        elif reason is StopReason.SIGNAL:
            window = self.options.drain_seconds
            notice = Notice("signal", "stop", window, seen_at=started)
        elif reason is StopReason.ERROR:
            window = self.options.drain_seconds
        else:
            window = math.inf
        deadline = started + window - (drain_margin(window) if window != math.inf else 0)
        with self._cond:
            self._draining = True
            self.summary.reason = reason
            self.summary.notice = notice
            in_hand = len(self._entries)
            self._wake_all()
        self.draining.set()
        for watcher in self._watchers:
            watcher.stop()
        self.log.event(
            logging.WARNING if reason in (StopReason.NOTICE, StopReason.SIGNAL) else logging.INFO,
            f"draining ({reason.value}"
            + (f": {notice.source} {notice.action}" if notice else "")
            + f"): taking no new messages, {in_hand} in hand",
            reason=reason.value,
            notice_source=notice.source if notice else None,
            window_seconds=None if window == math.inf else round(window, 3),
            in_hand=in_hand,
        )
        unfinished = self._wait_for_tasks(deadline)
        if unfinished:
            self._release_now([entry.message for entry in unfinished], "unfinished at the deadline")
        with self._lock:
            self._settling_closed = True
            self._wake_all()
        for thread in settlers:
            thread.join(timeout=_remaining(deadline, floor=1.0))
        for _ in range(self.options.concurrency):
            self._tasks.put(None)
        poll_wait = self.options.wait_seconds + 5 if window == math.inf else None
        for thread in pollers:  # a long poll in flight ends within wait_seconds
            thread.join(timeout=poll_wait or _remaining(deadline, floor=0.5))
        self._heartbeat_stop.set()
        heartbeat.join(timeout=5)
        with self._cond:
            self.summary.drained_in_time = not unfinished
            self.summary.released_unfinished = len(unfinished)
            self.summary.error = self._fatal
        if notice is not None and notice.acknowledge is not None:
            try:
                notice.acknowledge()
            except Exception as exc:
                self.log.event(logging.WARNING, f"could not approve the notice: {exc}")
            else:
                self.log.event(logging.INFO, f"approved {notice.source} {notice.detail}")
        self.receiver.close()
        summary = self.summary
        self.log.event(
            logging.INFO,
            f"stopped ({reason.value}): {summary.received} received, {summary.succeeded}"
            f" succeeded, {summary.rejected} rejected, {summary.retried} retried,"
            f" {summary.acknowledged} acknowledged, {summary.released} released",
            reason=reason.value,
            received=summary.received,
            succeeded=summary.succeeded,
            rejected=summary.rejected,
            retried=summary.retried,
            acknowledged=summary.acknowledged,
            not_acknowledged=summary.not_acknowledged,
            released=summary.released,
            released_unstarted=summary.released_unstarted,
            released_unfinished=summary.released_unfinished,
            extended=summary.extended,
            receive_calls=summary.receive_calls,
            drained_in_time=summary.drained_in_time,
            seconds=round(time.monotonic() - started, 3),
        )

    def _wait_for_tasks(self, deadline: float) -> list[_Entry]:
        """Wait for the tasks in hand until ``deadline`` (or a second signal); the entries
        still running then, marked so that their late end is not settled."""
        with self._cond:
            while self._processing > 0 and not self._hurry.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, WAKE_SECONDS))
            unfinished = [e for e in self._entries if e.state is _State.PROCESSING]
            for entry in unfinished:
                entry.state = _State.DONE
                self._entries.discard(entry)
            return unfinished


def _remaining(deadline: float, floor: float) -> float | None:
    """Seconds left before ``deadline`` (at least ``floor``); None (no limit) for none."""
    if deadline == math.inf:
        return None
    return max(floor, deadline - time.monotonic())
