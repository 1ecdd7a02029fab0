"""One contract for every ResultStore adapter; each backend's tests subclass it.

A subclass provides three fixtures: ``store`` (the adapter under test, empty), ``read`` (a
function that returns the stored bytes for a record name such as ``t1.out``, or None) and
``broken_store`` (the same adapter with its store down or unreachable, retrying quickly).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from core.errors import InvalidTaskError, StoreWriteError
from core.outcome import OutcomeKind
from core.pipeline import process_message
from core.records import ErrorRecord

if TYPE_CHECKING:
    from core.ports import ResultStore

Reader = Callable[[str], bytes | None]


class ResultStoreContract:
    """Behaviour every results store must have."""

    def test_result_is_written_under_task_id(self, store: ResultStore, read: Reader) -> None:
        # GIVEN an empty store / WHEN a result is written
        store.write_result("test-task", "100")
        # THEN {id}.out holds exactly the text
        assert read("test-task.out") == b"100"

    def test_result_is_replaced_whole(self, store: ResultStore, read: Reader) -> None:
        store.write_result("t1", "1" * 5000)
        store.write_result("t1", "2")
        assert read("t1.out") == b"2"

    def test_error_record_is_json_with_reason_and_raw(
        self, store: ResultStore, read: Reader
    ) -> None:
        error = InvalidTaskError("invalid_number", "data.num1 must be a JSON number", "bad-1")
        raw = b'{"id": "bad-1", "data": {"num1": "x", "num2": 1}}'
        store.write_error(ErrorRecord.for_rejection(error, raw))
        stored = read("bad-1.err")
        assert stored is not None
        record = json.loads(stored)
        assert record["task_id"] == "bad-1"
        assert record["error"] == "invalid_number"
        assert record["raw"] == raw.decode()

    def test_unicode_task_id_round_trips(self, store: ResultStore, read: Reader) -> None:
        store.write_result("tâche-数-🙂", "3")
        assert read("tâche-数-🙂.out") == b"3"

    def test_pipeline_success_and_rejection(self, store: ResultStore, read: Reader) -> None:
        good = process_message(b'{"id": "ok", "data": {"num1": 0.1, "num2": 0.2}}', store)
        bad = process_message(b"not json", store)
        assert good.kind is OutcomeKind.SUCCEEDED
        assert read("ok.out") == b"0.3"
        assert bad.kind is OutcomeKind.REJECTED
        assert bad.name.startswith("invalid-")
        stored = read(bad.name + ".err")
        assert stored is not None and json.loads(stored)["error"] == "invalid_json"

    def test_concurrent_duplicate_writes_leave_one_whole_result(
        self, store: ResultStore, read: Reader
    ) -> None:
        body = b'{"id": "dup", "data": {"num1": 40, "num2": 2}}'
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(lambda _: process_message(body, store), range(16)))
        assert all(outcome.kind is OutcomeKind.SUCCEEDED for outcome in outcomes)
        assert read("dup.out") == b"42"

    def test_a_store_that_is_down_raises_store_write_error(self, broken_store: ResultStore) -> None:
        # GIVEN a store that cannot be reached / WHEN a result and a record are written
        # THEN each write raises StoreWriteError (the queue retries), naming what failed
        with pytest.raises(StoreWriteError, match=r"t-down\.out"):
            broken_store.write_result("t-down", "1")
        record = ErrorRecord.for_rejection(InvalidTaskError("empty", "empty", "t-down"), b"")
        with pytest.raises(StoreWriteError, match=r"t-down\.err"):
            broken_store.write_error(record)

    def test_the_pipeline_lets_a_store_failure_through_with_the_task_id(
        self, broken_store: ResultStore
    ) -> None:
        with pytest.raises(StoreWriteError) as failure:
            process_message(b'{"id": "t-down", "data": {"num1": 1, "num2": 2}}', broken_store)
        assert failure.value.task_id == "t-down"
