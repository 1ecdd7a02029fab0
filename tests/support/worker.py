"""Pieces the worker tests of every cloud share."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from core.ports import ResultStore

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from core.worker.loop import Worker

HOLD_SECONDS = 120.0
"""How long a held write waits for its gate before the test fails."""


class HeldStore(ResultStore):
    """A worker's store, with every write from number ``hold_from`` on held at ``gate``;
    ``held`` is set once ``hold_count`` writes wait there (tasks "in hand" at a notice)."""

    def __init__(self, store: ResultStore, hold_from: int, hold_count: int) -> None:
        self.store = store
        self.prefix = store.prefix
        self.hold_from = hold_from
        self.hold_count = hold_count
        self.gate = threading.Event()
        self.held = threading.Event()
        self.writes = 0
        self.waiting = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.writes += 1
            hold = self.writes >= self.hold_from
            if hold:
                self.waiting += 1
                if self.waiting >= self.hold_count:
                    self.held.set()
        if hold:
            assert self.gate.wait(HOLD_SECONDS)
        self.store.put(key, data, content_type)


class Task:
    """One task of a workload and the record it must leave."""

    def __init__(self, i: int, prefix: str) -> None:
        self.task_id = f"{prefix}-{i:06d}"
        if i % 101 == 100:  # about 1% bad: not JSON, recorded under invalid-<sha256>
            self.body = f"not json {self.task_id}".encode()
            name = "invalid-" + hashlib.sha256(self.body).hexdigest()
            self.record, self.expected = f"{name}.err", None
        else:
            num1, num2, total = (
                (f"{10**30 + i}", f"{i}", str(10**30 + 2 * i))
                if i % 2
                else (f"{i}.25", "-0.5", f"{i - 1}.75" if i else "-0.25")
            )
            self.body = (
                f'{{"id": "{self.task_id}", "data": {{"num1": {num1}, "num2": {num2}}}}}'.encode()
            )
            self.record, self.expected = f"{self.task_id}.out", total


def workload(count: int, prefix: str) -> list[Task]:
    return [Task(i, prefix) for i in range(count)]


def assert_fetched_exactly(directory: Path, tasks: Sequence[Task]) -> None:
    """``directory`` (what ``adder fetch`` wrote) holds each task's record and nothing else:
    the exact sum for a good task, an ``invalid_json`` error record for a bad one."""
    fetched = {path.name: path.read_bytes() for path in directory.iterdir()}
    assert set(fetched) == {task.record for task in tasks}
    for task in tasks:
        if task.expected is not None:
            assert fetched[task.record] == task.expected.encode()
        else:
            assert json.loads(fetched[task.record])["error"] == "invalid_json"


def wait_until(
    condition: Callable[[], bool], seconds: float = HOLD_SECONDS, interval: float = 0.01
) -> None:
    """Wait (polling) until ``condition`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(interval)


def run_to_notice(
    worker: Worker, store: HeldStore, notice_out: threading.Event, announce: Callable[[], None]
) -> tuple[Any, int]:
    """Run ``worker`` until its writes are held and it takes no more (its hands full), then
    set ``notice_out`` and ``announce`` a termination notice, let the held writes go and wait
    for the worker to stop.

    Returns the worker's summary and how many tasks it had in hand at the notice.
    """
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    assert store.held.wait(HOLD_SECONDS)
    wait_until(lambda: worker.state().parked)
    in_hand = worker.state().unfinished
    notice_out.set()
    announce()
    assert worker.draining.wait(HOLD_SECONDS)
    store.gate.set()
    thread.join(HOLD_SECONDS)
    [summary] = result
    return summary, in_hand
