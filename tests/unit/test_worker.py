"""The worker loop (core/worker/loop.py) over an in-memory queue that subclasses the receiver
port, and ``adder work`` end to end with that queue plugged in as a provider's adapter.

What is checked: a message is acknowledged only after its record is written, in batches of at
most ``max_batch``; a failed write is released (never acknowledged); no more tasks run at once
than ``--concurrency``; leases of messages in hand are extended; on a notice (each metadata
format, served by a loopback server) or a stop request the worker takes no new message,
finishes or releases what it holds and returns (exit 0); a fatal receiver error ends with one
line and exit 2. Every wait is on an event, bounded only so a broken build fails, not hangs.
"""

from __future__ import annotations

import collections
import io
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from core.cli import main as adder
from core.errors import CloudUnavailableError, ConfigError, StoreWriteError
from core.packing import PACK_SUFFIX, ResultsLayout, unpack
from core.ports import ResultStore
from core.worker import command
from core.worker.logs import JsonLines
from core.worker.loop import StopReason, Worker, WorkerOptions, WorkerSummary
from core.worker.notices import Notice, NoticePoller
from core.worker.port import ReceivedMessage, Receiver
from tests.support.metadata_server import MetadataServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

WAIT = 30.0
"""The longest an event wait may take before the test fails (never reached when it works)."""


def task(i: int) -> bytes:
    return json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 1}}).encode()


BAD = b'{"id": "bad-1", "data": {"num1": true, "num2": 1}}'


class FakeQueue(Receiver):
    """An in-memory queue: a received message is hidden until acknowledged or released.

    Records every call. ``written(message)`` is asked at each acknowledgement whether the
    message's record exists then. ``closed_after`` (an event) marks receive calls that start
    after it is set; ``hold_receive`` makes receive calls wait for it before answering.
    """

    describe = "fake queue"

    def __init__(
        self, bodies: Sequence[bytes], *, lease_seconds: float = 30.0, max_batch: int = 10
    ) -> None:
        self.lease_seconds = lease_seconds
        self.max_batch = max_batch
        self.available = collections.deque((f"m{i}", body) for i, body in enumerate(bodies))
        self.bodies = dict(self.available)
        self.deliveries: collections.Counter[str] = collections.Counter()
        self.cond = threading.Condition()
        self.receive_calls = 0
        self.receives_after_close = 0
        self.closed_after = threading.Event()
        self.hold_receive: threading.Event | None = None
        self.answer_next: list[tuple[str, bytes]] | None = None
        self.fail_receive: Exception | None = None
        self.written: Callable[[ReceivedMessage], bool] = lambda message: True
        self.acked: list[str] = []
        self.ack_batches: list[int] = []
        self.acked_before_written: list[str] = []
        self.released: list[tuple[str, float]] = []
        self.extended: list[str] = []
        self.extended_event = threading.Event()
        self.closed = False

    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        with self.cond:
            self.receive_calls += 1
            self.cond.notify_all()
            if self.closed_after.is_set():
                self.receives_after_close += 1
            if self.fail_receive is not None:
                raise self.fail_receive
        if self.hold_receive is not None:
            assert self.hold_receive.wait(WAIT)
        with self.cond:
            if self.answer_next is not None:
                taken, self.answer_next = self.answer_next, None
            else:
                if not self.available:
                    self.cond.wait(min(wait_seconds, 0.05))
                count = min(max_messages, len(self.available))
                taken = [self.available.popleft() for _ in range(count)]
            messages = []
            for message_id, body in taken:
                self.deliveries[message_id] += 1
                messages.append(
                    ReceivedMessage(body, message_id, self.deliveries[message_id], message_id)
                )
            return messages

    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        assert len(messages) <= self.max_batch
        with self.cond:
            self.extended += [str(m.message_id) for m in messages]
        self.extended_event.set()

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        assert len(messages) <= self.max_batch
        with self.cond:
            self.ack_batches.append(len(messages))
            for message in messages:
                self.acked.append(str(message.message_id))
                if not self.written(message):
                    self.acked_before_written.append(str(message.message_id))
        return []

    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        assert len(messages) <= self.max_batch
        with self.cond:
            self.released += [(str(m.message_id), delay_seconds) for m in messages]

    def close(self) -> None:
        self.closed = True


class GatedStore(ResultStore):
    """Keeps objects in memory; can fail chosen keys, and can hold writes at a gate.

    ``hold_from``: writes number ``hold_from`` and later wait at ``gate`` (``held`` is set
    once ``hold_count`` writes wait there). Tracks how many writes run at once.
    """

    def __init__(self, prefix: str = "out") -> None:
        self.prefix = prefix
        self.objects: dict[str, bytes] = {}
        self.fail: set[str] = set()
        self.gate = threading.Event()
        self.hold_from: int | None = None
        self.hold_count = 0
        self.held = threading.Event()
        self.waiting = 0
        self.writes = 0
        self.active = 0
        self.most_active = 0
        self.finished = 0
        self.finished_event = threading.Event()
        self.finish_target: int | None = None
        self.barrier: threading.Barrier | None = None
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.writes += 1
            number = self.writes
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.barrier is not None and number <= self.barrier.parties:
                self.barrier.wait()
            if self.hold_from is not None and number >= self.hold_from:
                with self._lock:
                    self.waiting += 1
                    if self.waiting >= self.hold_count:
                        self.held.set()
                assert self.gate.wait(WAIT)
            if key in self.fail:
                raise StoreWriteError(f"injected failure writing {key}")
            with self._lock:
                self.objects[key] = data
        finally:
            with self._lock:
                self.active -= 1
                self.finished += 1
                if self.finish_target is not None and self.finished >= self.finish_target:
                    self.finished_event.set()


def record_key(store: GatedStore, message: ReceivedMessage) -> str:
    document = json.loads(message.body)
    return store.key(document["id"], ".out")


def wired(bodies: Sequence[bytes], **queue_options: Any) -> tuple[FakeQueue, GatedStore]:
    queue = FakeQueue(bodies, **queue_options)
    store = GatedStore()
    queue.written = lambda message: (
        message.body == BAD or record_key(store, message) in store.objects
    )
    return queue, store


def start(worker: Worker) -> tuple[threading.Thread, list[WorkerSummary | BaseException]]:
    """Run the worker in a thread; the list receives its summary or its exception."""
    outcome: list[WorkerSummary | BaseException] = []

    def run() -> None:
        try:
            outcome.append(worker.run())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def finished(
    thread: threading.Thread, outcome: list[WorkerSummary | BaseException]
) -> WorkerSummary:
    thread.join(WAIT)
    assert not thread.is_alive(), "the worker did not stop"
    [result] = outcome
    assert isinstance(result, WorkerSummary), result
    return result


def wait_until(condition: Callable[[], bool]) -> None:
    """Wait (polling) until ``condition`` holds; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


class OnDemandPoller(NoticePoller):
    """A notice source a test switches on."""

    name = "test"
    base_url = "memory"
    interval_seconds = 0.01

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.now = threading.Event()
        self.acknowledged = threading.Event()

    def poll(self) -> Notice | None:
        if not self.now.is_set():
            return None
        return Notice("test", "terminate", self.window, acknowledge=self.acknowledged.set)


# --- the three outcomes --------------------------------------------------------------------


def test_every_message_is_acknowledged_after_its_record_in_full_batches() -> None:
    # GIVEN 50 good tasks and 5 bad ones, all in hand at once (their writes held until the
    # 55th arrives), and a worker that would wait long to fill a batch
    queue, store = wired([task(i) for i in range(50)] + [BAD] * 5)
    store.hold_from, store.hold_count = 1, 55
    options = WorkerOptions(concurrency=55, max_messages=55, settle_delay_seconds=WAIT * 10)
    worker = Worker(queue, store, JsonLines("job-1", io.StringIO()), options=options)
    thread, outcome = start(worker)
    # WHEN the writes go ahead
    assert store.held.wait(WAIT)
    store.gate.set()
    summary = finished(thread, outcome)
    # THEN each is acknowledged once, after its record was written, in batches of 10 (only
    # the rest, once nothing else was running, in a smaller one)
    assert sorted(queue.acked) == sorted(f"m{i}" for i in range(55))
    assert queue.acked_before_written == []
    assert sorted(queue.ack_batches) == [5, 10, 10, 10, 10, 10]
    assert store.objects[store.key("t7", ".out")] == b"8"
    assert (summary.succeeded, summary.rejected, summary.retried) == (50, 5, 0)
    assert summary.reason is StopReason.MAX_MESSAGES
    assert queue.released == []
    assert queue.closed


def test_one_json_line_per_task_with_the_job_id_in_every_line() -> None:
    queue, store = wired([task(1), BAD])
    out = io.StringIO()
    Worker(queue, store, JsonLines("job-42", out), options=WorkerOptions(max_messages=2)).run()
    entries = lines(out)
    assert all(entry["job_id"] == "job-42" for entry in entries)
    tasks = {entry["task_id"]: entry for entry in entries if "outcome" in entry}
    assert set(tasks) == {"t1", "bad-1"}
    assert (tasks["t1"]["outcome"], tasks["t1"]["level"]) == ("succeeded", "INFO")
    assert (tasks["bad-1"]["outcome"], tasks["bad-1"]["error_code"]) == (
        "rejected",
        "invalid_number",
    )
    assert tasks["t1"]["delivery_attempt"] == 1
    assert {"message_id", "duration_ms", "timestamp"} <= set(tasks["t1"])


def test_a_failed_write_is_released_with_the_retry_delay_never_acknowledged() -> None:
    # GIVEN a store that refuses three tasks' results
    queue, store = wired([task(i) for i in range(10)])
    store.fail = {store.key(f"t{i}", ".out") for i in (2, 5, 8)}
    out = io.StringIO()
    options = WorkerOptions(concurrency=4, max_messages=10, retry_delay_seconds=7)
    # WHEN the worker takes them
    summary = Worker(queue, store, JsonLines("j", out), options=options).run()
    # THEN those three go back to the queue after 7 s; the others are acknowledged
    assert sorted(queue.released) == [("m2", 7), ("m5", 7), ("m8", 7)]
    assert sorted(queue.acked) == sorted(f"m{i}" for i in range(10) if i not in (2, 5, 8))
    assert summary.retried == 3
    retries = [e for e in lines(out) if e.get("outcome") == "retry"]
    assert {e["task_id"] for e in retries} == {"t2", "t5", "t8"}
    assert all(e["level"] == "ERROR" and e["error_type"] == "StoreWriteError" for e in retries)


def test_a_retry_comes_back_after_one_lease_by_default() -> None:
    queue, store = wired([task(1)], lease_seconds=45)
    store.fail = {store.key("t1", ".out")}
    Worker(queue, store, JsonLines("j", io.StringIO()), options=WorkerOptions(max_messages=1)).run()
    assert queue.released == [("m0", 45)]
    assert queue.acked == []


class PackFailingStore(GatedStore):
    """Refuses every pack that holds ``doomed``'s record."""

    def __init__(self, doomed: str) -> None:
        super().__init__()
        self.doomed = doomed

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if any(record.name == self.doomed for record in unpack(data)):
            raise StoreWriteError(f"injected failure writing {key}")
        super().put(key, data, content_type)


def unpacked(store: GatedStore) -> dict[str, bytes]:
    """Every record of every pack in ``store``, by the file name the default layout gives
    (read under the store's lock: the worker's threads may be writing)."""
    with store._lock:
        packs = list(store.objects.values())
    return {record.file_name: record.content for data in packs for record in unpack(data)}


def test_packed_layout_writes_one_pack_per_receive_call_with_the_per_task_bytes() -> None:
    # GIVEN 35 good tasks and 5 bad ones, received 10 at a time, and the packed layout
    bodies = [task(i) for i in range(35)] + [
        BAD.replace(b"bad-1", f"bad-{i}".encode()) for i in range(5)
    ]
    packed_queue, packed_store = wired(bodies)
    packed_queue.written = lambda message: (
        json.loads(message.body)["id"]
        in {name.removesuffix(".out").removesuffix(".err") for name in unpacked(packed_store)}
    )
    options = WorkerOptions(concurrency=8, max_messages=40, layout=ResultsLayout.PACKED)
    # WHEN the worker drains them (and, for comparison, the default layout the same tasks)
    summary = Worker(
        packed_queue, packed_store, JsonLines("j", io.StringIO()), options=options
    ).run()
    per_task_queue, per_task_store = wired(bodies)
    Worker(
        per_task_queue,
        per_task_store,
        JsonLines("j", io.StringIO()),
        options=WorkerOptions(concurrency=8, max_messages=40),
    ).run()
    # THEN one object per receive call that brought messages, each a pack under the prefix,
    # together holding exactly the files the default layout writes; all acknowledged after
    # their pack was written
    assert len(packed_store.objects) == 4
    assert all(
        key.startswith("out/packed/") and key.endswith(PACK_SUFFIX) for key in packed_store.objects
    )
    assert unpacked(packed_store) == {
        key.removeprefix("out/"): data for key, data in per_task_store.objects.items()
    }
    assert len(per_task_store.objects) == 40
    assert sorted(packed_queue.acked) == sorted(f"m{i}" for i in range(40))
    assert packed_queue.acked_before_written == []
    assert (summary.succeeded, summary.rejected, summary.retried) == (35, 5, 0)


def test_packed_layout_a_failed_pack_write_releases_its_whole_batch() -> None:
    # GIVEN 30 tasks received 10 at a time, and a store that refuses the pack holding t13
    queue = FakeQueue([task(i) for i in range(30)])
    store = PackFailingStore("t13")
    options = WorkerOptions(
        concurrency=4, max_messages=30, retry_delay_seconds=7, layout=ResultsLayout.PACKED
    )
    # WHEN the worker takes them
    summary = Worker(queue, store, JsonLines("j", io.StringIO()), options=options).run()
    # THEN the ten messages of t13's batch go back to the queue (none acknowledged) and the
    # other twenty are acknowledged, their packs written
    batch = {message_id for message_id, _ in queue.released}
    assert len(batch) == 10 and "m13" in batch
    assert all(delay == 7 for _, delay in queue.released)
    assert sorted(queue.acked) == sorted(f"m{i}" for i in range(30) if f"m{i}" not in batch)
    assert len(store.objects) == 2
    assert "t13.out" not in unpacked(store)
    assert (summary.succeeded, summary.retried) == (20, 10)


def test_no_more_tasks_run_at_once_than_the_concurrency() -> None:
    # GIVEN 40 tasks and 4 threads; the first 4 writes meet at a barrier, so all 4 ran at once
    queue, store = wired([task(i) for i in range(40)])
    store.barrier = threading.Barrier(4, timeout=WAIT)
    options = WorkerOptions(concurrency=4, max_messages=40)
    # WHEN they run
    summary = Worker(queue, store, JsonLines("j", io.StringIO()), options=options).run()
    # THEN 4 writes were in flight at once, and never more
    assert store.most_active == 4
    assert summary.succeeded == 40


def test_leases_of_messages_in_hand_are_extended() -> None:
    # GIVEN a 0.2 s lease and writes held at a gate
    queue, store = wired([task(i) for i in range(3)], lease_seconds=0.2)
    store.hold_from, store.hold_count = 1, 3
    worker = Worker(
        queue, store, JsonLines("j", io.StringIO()), options=WorkerOptions(max_messages=3)
    )
    thread, outcome = start(worker)
    assert store.held.wait(WAIT)
    # WHEN the heartbeat has run while they are held
    assert queue.extended_event.wait(WAIT)
    store.gate.set()
    summary = finished(thread, outcome)
    # THEN it extended messages in hand, which were then acknowledged
    assert set(queue.extended) <= {"m0", "m1", "m2"}
    assert summary.extended >= 1
    assert sorted(queue.acked) == ["m0", "m1", "m2"]


# --- stopping -------------------------------------------------------------------------------


def test_notice_drains_no_receive_after_it_and_in_hand_tasks_finish() -> None:
    # GIVEN 20 messages and 4 threads: one batch of 10 in hand, 4 of them writing (held), 6
    # waiting for a thread; no room for another batch, so no receive can start
    queue, store = wired([task(i) for i in range(20)])
    store.hold_from, store.hold_count = 1, 4
    notices = OnDemandPoller(window=60)
    worker = Worker(
        queue,
        store,
        JsonLines("j", io.StringIO()),
        options=WorkerOptions(concurrency=4),
        notice_pollers=[notices],
    )
    thread, outcome = start(worker)
    assert store.held.wait(WAIT)
    assert worker.state().parked
    # WHEN a termination notice comes
    queue.closed_after.set()
    notices.now.set()
    assert worker.draining.wait(WAIT)
    store.gate.set()
    summary = finished(thread, outcome)
    # THEN no receive started after it, the 10 in hand finished and were acknowledged, the
    # other 10 were never taken, and the notice was acknowledged once drained
    assert queue.receives_after_close == 0
    assert sorted(queue.acked) == ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
    assert queue.released == []
    assert len(queue.available) == 10
    assert summary.reason is StopReason.NOTICE
    assert summary.drained_in_time
    assert notices.acknowledged.is_set()


def test_tasks_unfinished_at_the_deadline_are_released_and_never_acknowledged() -> None:
    # GIVEN 10 messages in hand: 4 writes that stay held past a short notice window, and 6
    # waiting for a thread
    queue, store = wired([task(i) for i in range(12)])
    store.hold_from, store.hold_count = 1, 4
    store.finish_target = 4
    notices = OnDemandPoller(window=0.3)
    worker = Worker(
        queue,
        store,
        JsonLines("j", io.StringIO()),
        options=WorkerOptions(concurrency=4),
        notice_pollers=[notices],
    )
    thread, outcome = start(worker)
    assert store.held.wait(WAIT)
    # WHEN the notice comes and the window closes with them still running
    notices.now.set()
    summary = finished(thread, outcome)
    # THEN all 10 are released at once, for another worker; the 6 waiting never started
    assert sorted(queue.released) == [
        (m, 0) for m in ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
    ]
    assert not summary.drained_in_time
    assert summary.released_unfinished == 10
    assert store.writes == 4
    # AND when their writes end later, they are still not acknowledged
    store.gate.set()
    assert store.finished_event.wait(WAIT)
    wait_until(lambda: worker.summary.succeeded == 4)
    assert queue.acked == []


def test_a_stop_request_drains_like_sigterm() -> None:
    # GIVEN a worker with 10 messages in hand, 4 writing (held)
    queue, store = wired([task(i) for i in range(20)])
    store.hold_from, store.hold_count = 1, 4
    stop = threading.Event()
    worker = Worker(
        queue,
        store,
        JsonLines("j", io.StringIO()),
        options=WorkerOptions(concurrency=4, drain_seconds=60),
        stop=stop,
    )
    thread, outcome = start(worker)
    assert store.held.wait(WAIT)
    assert worker.state().parked
    # WHEN SIGTERM's handler sets the stop event
    queue.closed_after.set()
    stop.set()
    assert worker.draining.wait(WAIT)
    store.gate.set()
    summary = finished(thread, outcome)
    # THEN it drains: nothing new taken, the 10 in hand finished and acknowledged
    assert summary.reason is StopReason.SIGNAL
    assert queue.receives_after_close == 0
    assert sorted(queue.acked) == ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
    assert summary.drained_in_time


def test_a_second_stop_request_releases_what_is_in_hand_at_once() -> None:
    queue, store = wired([task(i) for i in range(4)])
    store.hold_from, store.hold_count = 1, 4
    worker = Worker(
        queue,
        store,
        JsonLines("j", io.StringIO()),
        options=WorkerOptions(concurrency=4, drain_seconds=WAIT * 10),
    )
    thread, outcome = start(worker)
    assert store.held.wait(WAIT)
    worker.request_stop()
    assert worker.draining.wait(WAIT)
    worker.request_stop()  # the second Ctrl-C
    summary = finished(thread, outcome)
    store.gate.set()
    assert summary.released_unfinished == 4
    assert sorted(m for m, _ in queue.released) == ["m0", "m1", "m2", "m3"]


def test_messages_received_while_draining_are_released_unstarted() -> None:
    # GIVEN a receive call in flight (held) when the worker is told to stop
    queue, store = wired([task(i) for i in range(3)])
    queue.hold_receive = threading.Event()
    worker = Worker(
        queue, store, JsonLines("j", io.StringIO()), options=WorkerOptions(concurrency=3)
    )
    thread, outcome = start(worker)
    with queue.cond:
        assert queue.cond.wait_for(lambda: queue.receive_calls >= 1, WAIT)
    worker.request_stop()
    assert worker.draining.wait(WAIT)
    # WHEN that call then returns messages
    queue.hold_receive.set()
    summary = finished(thread, outcome)
    # THEN they are released without being processed
    assert summary.released_unstarted == 3
    assert sorted(queue.released) == [("m0", 0), ("m1", 0), ("m2", 0)]
    assert store.objects == {}
    assert queue.acked == []


def test_idle_exit_stops_on_an_empty_queue() -> None:
    queue, store = wired([task(1)])
    options = WorkerOptions(idle_exit_seconds=0.2, wait_seconds=0.05)
    summary = Worker(queue, store, JsonLines("j", io.StringIO()), options=options).run()
    assert summary.reason is StopReason.IDLE
    assert queue.acked == ["m0"]


def test_a_fatal_receiver_error_is_raised_after_draining() -> None:
    queue, store = wired([task(1)])
    queue.fail_receive = ConfigError("access denied to SQS queue q: the caller needs sqs:X")
    worker = Worker(queue, store, JsonLines("j", io.StringIO()), options=WorkerOptions())
    with pytest.raises(ConfigError, match="access denied"):
        worker.run()
    assert worker.summary.reason is StopReason.ERROR
    assert queue.closed


def test_a_transient_receive_failure_is_retried() -> None:
    # GIVEN a queue whose first receive fails with "try again"
    queue, store = wired([task(1)])
    failing = [CloudUnavailableError("SQS queue q: try again later (throttled)")]
    original = queue.receive

    def receive(max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        if failing:
            raise failing.pop()
        return original(max_messages, wait_seconds)

    queue.receive = receive  # type: ignore[method-assign]
    out = io.StringIO()
    summary = Worker(queue, store, JsonLines("j", out), options=WorkerOptions(max_messages=1)).run()
    # THEN it logged it once and went on
    assert summary.succeeded == 1
    assert any("receiving failed" in entry["message"] for entry in lines(out))


# --- adder work, end to end with the in-memory queue as the provider's adapter ------------

QUEUES: dict[str, tuple[FakeQueue, GatedStore]] = {}
WORKERS: list[Worker] = []
workers_made = threading.Event()


class RecordedWorker(Worker):
    """The worker ``adder work`` builds, kept where the test can wait on its events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        WORKERS.append(self)
        workers_made.set()


def open_fake(config: command.WorkerConfig, concurrency: int) -> tuple[FakeQueue, GatedStore]:
    """The adapter ``adder work`` opens in these tests (named in WORKER_ADAPTERS)."""
    return QUEUES[config.queue_name]


@pytest.fixture
def fake_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    adapters = dict.fromkeys(("aws", "gcp", "azure"), "tests.unit.test_worker:open_fake")
    monkeypatch.setattr(command, "WORKER_ADAPTERS", adapters)
    monkeypatch.setattr(command, "Worker", RecordedWorker)
    yield
    QUEUES.clear()
    WORKERS.clear()
    workers_made.clear()


def write_config(tmp_path: Path, provider: str, **more: object) -> Path:
    path = tmp_path / "cloud-config.json"
    document = {
        "provider": provider,
        "job_id": "job-9",
        "queue_name": f"q-{provider}",
        "result_bucket": "bucket",
        "result_prefix": "out",
        "config": {"region": "us-east-1"},
        **more,
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("provider", "kind"),
    [("aws", "spot"), ("aws", "autoscaling"), ("gcp", "gcp"), ("azure", "azure")],
)
def test_adder_work_drains_on_each_metadata_format_and_exits_0(
    fake_provider: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    provider: str,
    kind: str,
) -> None:
    # GIVEN `adder work` on 30 messages with 4 threads: 10 in hand, 4 writing (held), no room
    # for another batch
    queue, store = wired([task(i) for i in range(30)])
    store.hold_from, store.hold_count = 1, 4
    QUEUES[f"q-{provider}"] = (queue, store)
    config = write_config(tmp_path, provider)
    with MetadataServer() as metadata:
        codes: list[int] = []
        thread = threading.Thread(
            target=lambda: codes.append(
                adder(
                    [
                        "work",
                        "--config",
                        str(config),
                        "--concurrency",
                        "4",
                        "--metadata-url",
                        metadata.url,
                    ]
                )
            ),
            daemon=True,
        )
        thread.start()
        assert store.held.wait(WAIT)
        assert workers_made.wait(WAIT)
        assert WORKERS[0].state().parked
        # WHEN the metadata service serves a termination notice mid-run
        queue.closed_after.set()
        metadata.notice(kind)
        assert metadata.served_notice.wait(WAIT)
        assert workers_made.wait(WAIT)
        assert WORKERS[0].draining.wait(WAIT)
        store.gate.set()
        thread.join(WAIT)
        assert not thread.is_alive()
        # THEN exit 0; no receive after the notice; the 10 in hand finished and acknowledged
        assert codes == [0]
        assert queue.receives_after_close == 0
        assert sorted(queue.acked) == ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
        assert queue.released == []
        if kind == "azure":  # the event is approved once drained
            assert metadata.start_requests.wait(WAIT)
            assert metadata.started == [
                {"StartRequests": [{"EventId": "602d9444-d2cd-49c7-8624-8643e7171297"}]}
            ]
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(entry["job_id"] == "job-9" for entry in entries)
    [stopped] = [e for e in entries if e["message"].startswith("stopped")]
    assert (stopped["reason"], stopped["drained_in_time"]) == ("notice", True)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"provider": "aws", "result_bucket": "b"}, "has no 'queue_name'"),
        ({"provider": "aws", "queue_name": "q"}, "has no 'result_bucket'"),
        ({"queue_name": "q", "result_bucket": "b"}, "'provider' must name the cloud"),
        ({"provider": "local", "queue_name": "q", "result_bucket": "b"}, "'provider' must name"),
        ({"provider": "aws", "queue_name": 5, "result_bucket": "b"}, "'queue_name' must be"),
    ],
)
def test_config_problems_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: dict[str, object], says: str
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert adder(["work", "--config", str(path), "--no-notices"]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1


def test_a_cloud_without_a_receiver_yet_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a registry in which Azure has no worker binding
    monkeypatch.setattr(command, "WORKER_ADAPTERS", {})
    config = write_config(tmp_path, "azure")
    assert adder(["work", "--config", str(config), "--no-notices"]) == 2
    err = capsys.readouterr().err.strip()
    assert "adder work has no Azure Functions receiver yet" in err
    assert len(err.splitlines()) == 1


def test_a_fatal_error_while_working_is_one_line_and_exit_2(
    fake_provider: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue, store = wired([task(1)])
    queue.fail_receive = ConfigError("access denied to SQS queue q-aws: the caller needs X")
    QUEUES["q-aws"] = (queue, store)
    config = write_config(tmp_path, "aws")
    assert adder(["work", "--config", str(config), "--no-notices", "--drain-seconds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: access denied to SQS queue q-aws: the caller needs X"


def test_an_unexpected_failure_is_one_line_and_exit_1(
    fake_provider: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue, store = wired([task(1)])
    queue.fail_receive = RuntimeError("a bug\nwith two lines")
    QUEUES["q-aws"] = (queue, store)
    config = write_config(tmp_path, "aws")
    assert adder(["work", "--config", str(config), "--no-notices", "--drain-seconds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unexpected RuntimeError: a bug")
    assert len(err.splitlines()) == 1


def test_max_messages_and_the_module_entry(
    fake_provider: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 5 messages / WHEN `python -m core.worker` takes at most 3
    queue, store = wired([task(i) for i in range(5)])
    QUEUES["q-aws"] = (queue, store)
    config = write_config(tmp_path, "aws")
    assert command.main(["--config", str(config), "--no-notices", "--max-messages", "3"]) == 0
    # THEN 3 are done and 2 stay in the queue
    assert sorted(queue.acked) == ["m0", "m1", "m2"]
    assert len(queue.available) == 2
    assert "stopped (max_messages)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("in_config", "flag", "environment", "packed"),
    [
        (None, None, None, False),
        ("packed", None, None, True),
        (None, None, "packed", True),
        ("packed", "per_task", None, False),
        ("per_task", None, "packed", False),
    ],
)
def test_the_results_layout_comes_from_the_flag_then_the_config_then_the_environment(
    fake_provider: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_config: str | None,
    flag: str | None,
    environment: str | None,
    packed: bool,
) -> None:
    # GIVEN 20 messages, and a layout named (or not) by --results-layout, config.results_layout
    # and $RESULTS_LAYOUT
    queue, store = wired([task(i) for i in range(20)])
    QUEUES["q-aws"] = (queue, store)
    settings: dict[str, str] = {"region": "us-east-1"}
    if in_config:
        settings["results_layout"] = in_config
    config = write_config(tmp_path, "aws", config=settings)
    if environment:
        monkeypatch.setenv("RESULTS_LAYOUT", environment)
    else:
        monkeypatch.delenv("RESULTS_LAYOUT", raising=False)
    arguments = ["--config", str(config), "--no-notices", "--max-messages", "20"]
    # WHEN the worker drains them
    assert command.main(arguments + (["--results-layout", flag] if flag else [])) == 0
    # THEN the first that names a layout decides it: packs, or one object per task
    if packed:
        assert all(key.endswith(PACK_SUFFIX) for key in store.objects)
        assert len(unpacked(store)) == 20
    else:
        assert sorted(store.objects) == sorted(f"out/t{i}.out" for i in range(20))
    assert len(queue.acked) == 20


def test_an_unknown_results_layout_in_the_config_is_one_line_and_exit_2(
    fake_provider: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "aws", config={"results_layout": "zipped"})
    assert adder(["work", "--config", str(config), "--no-notices"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: config file {config}: config.results_layout='zipped': use 'per_task' or 'packed'"
    )
