"""Group commit: concurrent single deliveries written as one pack per batch, settled together.

No test measures time: the window is a ``wait`` the tests control (it records how long it was
asked to wait and returns when the test says the window is over), and a store can be held in
the middle of a write.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from core.delivery import Delivery, Handled
from core.errors import ConfigError, StoreWriteError
from core.group_commit import GroupCommit, pack_settings_from_environment
from core.outcome import OutcomeKind
from core.packing import PACK_CONTENT_TYPE, unpack
from core.ports import ResultStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def task(task_id: str, num1: int = 1, num2: int = 2) -> Delivery:
    body = f'{{"id": "{task_id}", "data": {{"num1": {num1}, "num2": {num2}}}}}'.encode()
    return Delivery(body, f"m-{task_id}", 1, {"subscription": "s"})


class Store(ResultStore):
    """Keeps every put in order; can fail every write, or hold writes until released."""

    def __init__(self, *, fail: bool = False, hold: bool = False) -> None:
        self.prefix = "results"
        self.fail = fail
        self.puts: list[tuple[str, bytes, str]] = []
        self.writing = threading.Semaphore(0)
        """Released once each time a put starts."""
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.writing.release()
        assert self.release.wait(30), "the test never released the write"
        if self.fail:
            raise StoreWriteError("the store is down")
        with self._lock:
            self.puts.append((key, data, content_type))

    def records(self) -> dict[str, bytes]:
        """Every record of every pack: file name -> content."""
        return {r.file_name: r.content for _, data, _ in self.puts for r in unpack(data)}


class Lines:
    """A LogEmitter keeping (level, text, fields); can be made to raise."""

    def __init__(self, fail: bool = False) -> None:
        self.lines: list[tuple[int, str, dict[str, object]]] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, level: int, text: str, fields: dict[str, object]) -> None:
        if self.fail:
            raise RuntimeError("the log is broken")
        with self._lock:
            self.lines.append((level, text, fields))


class Window:
    """A ``wait`` for the group commit: records each call, returns when the batch is full or
    when the test ends the window (``end()``); ``calls`` says how it returned."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.ended_by_full: list[bool] = []
        self._over = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)

    def __call__(self, full: threading.Event, seconds: float) -> bool:
        self.asked.append(seconds)
        self.entered.release()
        while not full.is_set():
            if self._over.acquire(timeout=0.01):
                self.ended_by_full.append(False)
                return False
        self.ended_by_full.append(True)
        return True

    def end(self) -> None:
        """The window of the batch being waited for is over."""
        self._over.release()


def eventually(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition`` holds: for another thread to reach a point."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(64) as executor:
        yield executor


def submit_all(
    pool: ThreadPoolExecutor, commit: GroupCommit, deliveries: list[Delivery]
) -> list[Future[Handled]]:
    return [pool.submit(commit.submit, delivery) for delivery in deliveries]


def test_concurrent_deliveries_become_one_pack_and_each_gets_its_verdict(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN a group commit of at most 16, whose window never ends by itself
    store, lines, window = Store(), Lines(), Window()
    commit = GroupCommit(store, lines, max_batch=16, max_wait_seconds=0.05, wait=window)
    deliveries = [task(f"t{i}", i, 1) for i in range(15)]
    deliveries.append(Delivery(b'{"id": "bad", "data": {"num1": 1}}', "m-bad"))
    # WHEN 16 requests arrive at once
    futures = submit_all(pool, commit, deliveries)
    handled = [future.result(timeout=30) for future in futures]
    # THEN the batch filled (the window did not have to end) and ONE pack was written
    assert window.ended_by_full == [True]
    [(key, _, content_type)] = store.puts
    assert key.startswith("results/packed/") and content_type == PACK_CONTENT_TYPE
    # AND it holds every record: 15 results and the bad task's error record
    records = store.records()
    assert {name: records[name] for name in records if name.endswith(".out")} == {
        f"t{i}.out": str(i + 1).encode() for i in range(15)
    }
    assert "bad.err" in records
    # AND every request got its own verdict, acknowledged, and one log line each
    kinds = [item.outcome.kind if item.outcome else None for item in handled]
    assert kinds == [OutcomeKind.SUCCEEDED] * 15 + [OutcomeKind.REJECTED]
    assert [item.outcome.task_id for item in handled[:15] if item.outcome] == [
        f"t{i}" for i in range(15)
    ]
    assert sorted(str(fields["message_id"]) for _, _, fields in lines.lines) == sorted(
        str(d.message_id) for d in deliveries
    )


def test_a_failed_pack_write_tells_every_caller_of_the_batch_to_retry(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN a store that fails every write, and a batch of 8 (one of them a bad task)
    store, lines = Store(fail=True), Lines()
    commit = GroupCommit(store, lines, max_batch=8, max_wait_seconds=60, wait=Window())
    deliveries = [task(f"t{i}") for i in range(7)] + [Delivery(b"not json", "m-bad")]
    # WHEN the 8 arrive together
    handled = [future.result(timeout=30) for future in submit_all(pool, commit, deliveries)]
    # THEN every one must be retried, the bad task too (its record was in the lost pack)
    assert all(item.retry for item in handled)
    assert all(isinstance(item.error, StoreWriteError) for item in handled)
    with pytest.raises(StoreWriteError):
        handled[0].outcome_or_raise()
    # AND each logged one ERROR line: a retry, nothing acknowledged
    assert [level for level, _, _ in lines.lines] == [logging.ERROR] * 8
    assert {fields["outcome"] for _, _, fields in lines.lines} == {"retry"}


def test_the_window_starts_at_the_first_request_and_closes_the_batch(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN a group commit of up to 10 with a 40 ms window (the test ends it)
    store, window = Store(), Window()
    commit = GroupCommit(store, Lines(), max_batch=10, max_wait_seconds=0.04, wait=window)
    # WHEN a first request arrives: it waits for the window, on its batch
    first = pool.submit(commit.submit, task("a"))
    assert window.entered.acquire(timeout=30)
    assert window.asked == [0.04]
    # AND a second joins while the window is open
    second = pool.submit(commit.submit, task("b"))
    eventually(lambda: commit.pending == 2)
    # THEN nothing is written and nobody answered while the window is open
    assert store.puts == []
    assert not first.done() and not second.done()
    # WHEN the window ends
    window.end()
    # THEN both are answered, from one pack holding both
    assert [f.result(timeout=30).outcome is not None for f in (first, second)] == [True, True]
    assert len(store.puts) == 1
    assert set(store.records()) == {"a.out", "b.out"}
    # AND a request arriving later opens a new batch with a window of its own
    third = pool.submit(commit.submit, task("c"))
    assert window.entered.acquire(timeout=30)
    assert window.asked == [0.04, 0.04]
    window.end()
    assert third.result(timeout=30).outcome is not None
    assert len(store.puts) == 2
    assert window.ended_by_full == [False, False]


def test_a_full_batch_is_written_without_waiting_for_its_window(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN a batch of at most 3 and a window the test never ends
    store, window = Store(), Window()
    commit = GroupCommit(store, Lines(), max_batch=3, max_wait_seconds=3600, wait=window)
    # WHEN 3 requests arrive
    handled = [f.result(timeout=30) for f in submit_all(pool, commit, [task(x) for x in "xyz"])]
    # THEN the batch was written as soon as the third joined
    assert window.ended_by_full == [True]
    assert [item.retry for item in handled] == [False, False, False]
    assert set(store.records()) == {"x.out", "y.out", "z.out"}


def test_callers_are_answered_only_after_the_pack_is_written_and_batches_overlap(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN batches of 2, and a store that holds every write until the test releases it
    store = Store(hold=True)
    commit = GroupCommit(store, Lines(), max_batch=2, max_wait_seconds=3600, wait=Window())
    # WHEN a full batch is being written
    first = submit_all(pool, commit, [task("a"), task("b")])
    assert store.writing.acquire(timeout=30)
    # THEN neither of its requests is answered yet
    assert not any(future.done() for future in first)
    # AND the next requests open the next batch, whose write starts meanwhile
    second = submit_all(pool, commit, [task("c"), task("d")])
    assert store.writing.acquire(timeout=30)
    assert commit.pending == 0
    # WHEN the writes complete / THEN all four are answered, in two packs
    store.release.set()
    assert all(not f.result(timeout=30).retry for f in first + second)
    assert len(store.puts) == 2
    assert set(store.records()) == {"a.out", "b.out", "c.out", "d.out"}


def test_a_batch_of_one_is_written_at_once() -> None:
    # GIVEN max_batch 1 (a server that serves one request at a time)
    store, window = Store(), Window()
    commit = GroupCommit(store, Lines(), max_batch=1, max_wait_seconds=3600, wait=window)
    # WHEN two requests come one after the other / THEN each is its own pack, no waiting
    assert commit.submit(task("one")).outcome is not None
    assert commit.submit(task("two")).outcome is not None
    assert window.ended_by_full == [True, True]
    assert [sorted(r.file_name for r in unpack(data)) for _, data, _ in store.puts] == [
        ["one.out"],
        ["two.out"],
    ]


def test_a_bug_while_settling_a_batch_retries_every_caller_and_strands_none(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN a log emitter that raises (a bug: deliver_packed itself fails after the write)
    commit = GroupCommit(Store(), Lines(fail=True), max_batch=4, max_wait_seconds=1, wait=Window())
    # WHEN 4 requests arrive
    handled = [f.result(timeout=30) for f in submit_all(pool, commit, [task(x) for x in "abcd"])]
    # THEN every caller is answered, with a retry carrying the error
    assert [item.retry for item in handled] == [True] * 4
    assert {type(item.error) for item in handled} == {RuntimeError}


class Interrupted(BaseException):
    """Something that is not an Exception stopping a thread (as a worker's shutdown may)."""


def test_an_interrupted_window_still_releases_every_request_of_its_batch(
    pool: ThreadPoolExecutor,
) -> None:
    # GIVEN a window that is interrupted once a second request has joined the batch
    store = Store()

    def interrupted(full: threading.Event, seconds: float) -> bool:
        eventually(lambda: commit.pending == 2)
        raise Interrupted

    commit = GroupCommit(store, Lines(), max_batch=10, max_wait_seconds=1, wait=interrupted)
    # WHEN two requests arrive
    opener = pool.submit(commit.submit, task("a"))
    eventually(lambda: commit.pending == 1)
    joined = pool.submit(commit.submit, task("b"))
    # THEN the opener's thread sees the interruption, the other request is told to retry
    with pytest.raises(Interrupted):
        opener.result(timeout=30)
    answer = joined.result(timeout=30)
    assert answer.retry and "interrupted" in str(answer.error)
    # AND nothing was written, and the next request opens a batch of its own
    assert store.puts == []
    assert commit.pending == 0


def test_real_waiting_still_settles_a_batch_that_never_fills(pool: ThreadPoolExecutor) -> None:
    # GIVEN the default wait (threading.Event.wait) with a short window, and a batch of 100
    store = Store()
    commit = GroupCommit(store, Lines(), max_batch=100, max_wait_seconds=0.01)
    # WHEN 3 requests arrive / THEN they are answered when the window ends, in packs of theirs
    handled = [f.result(timeout=30) for f in submit_all(pool, commit, [task(x) for x in "pqr"])]
    assert [item.retry for item in handled] == [False] * 3
    assert set(store.records()) == {"p.out", "q.out", "r.out"}
    assert commit.pending == 0


@pytest.mark.parametrize(("max_batch", "seconds"), [(0, 0.05), (1, -0.001)])
def test_impossible_limits_are_refused(max_batch: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="max_"):
        GroupCommit(Store(), Lines(), max_batch, seconds)


def test_settings_default_to_the_server_threads_and_a_50_ms_window() -> None:
    # GIVEN no pack settings / THEN the batch is the server's request threads
    settings = pack_settings_from_environment({"THREADS": "32"})
    assert (settings.max_batch, settings.max_wait_seconds) == (32, 0.05)
    # AND explicit settings win; a batch is at most 1000 (Cloud Run's largest concurrency)
    explicit = {"THREADS": "8", "PACK_MAX_BATCH": " 80 ", "PACK_MAX_WAIT_MS": "0"}
    assert pack_settings_from_environment(explicit) == (80, 0.0)
    assert pack_settings_from_environment({"THREADS": "5000"}).max_batch == 1000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PACK_MAX_BATCH", "0", "PACK_MAX_BATCH='0': use a whole number from 1 to 1000"),
        ("PACK_MAX_BATCH", "1001", "PACK_MAX_BATCH='1001': use a whole number from 1 to 1000"),
        ("PACK_MAX_BATCH", "ten", "PACK_MAX_BATCH='ten': use a whole number from 1 to 1000"),
        ("PACK_MAX_WAIT_MS", "-5", "PACK_MAX_WAIT_MS='-5': use a whole number from 0 to 10000"),
        ("PACK_MAX_WAIT_MS", "2.5", "PACK_MAX_WAIT_MS='2.5': use a whole number from 0 to 10000"),
        ("PACK_MAX_WAIT_MS", "²", "PACK_MAX_WAIT_MS='²': use a whole number from 0 to 10000"),
    ],
)
def test_a_bad_setting_is_one_clear_config_error(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        pack_settings_from_environment({name: value})
    assert str(raised.value) == message
