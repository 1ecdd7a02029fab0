"""The Lambda batch logic with an in-memory store: outcomes, deadline, partial failures."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aws_lambda.batch import UnreportableFailureError, process_batch
from aws_lambda.envelope import decode_sqs_record, sqs_records
from aws_lambda.handler import handle_event
from tests.conftest import load_event
from tests.unit.fakes import InMemoryResultStore


def record(message_id: str | None, body: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"body": body, "attributes": {"ApproximateReceiveCount": "1"}}
    if message_id is not None:
        entry["messageId"] = message_id
    return entry


def test_sample_event_success_and_bad_task_are_handled_not_retried() -> None:
    # GIVEN the sample SQS event: two good tasks and one bad one
    store = InMemoryResultStore()
    # WHEN the handler processes it
    response = handle_event(load_event("sqs_batch.json"), context=None, store=store)
    # THEN nothing is retried, results and the error record are written
    assert response == {"batchItemFailures": []}
    assert store.objects["test-task.out"] == b"100"
    assert store.objects["flat.out"] == b"0.3"
    assert json.loads(store.objects["bad-number.err"])["error"] == "invalid_number"


def test_only_the_record_whose_write_fails_is_reported() -> None:
    store = InMemoryResultStore(fail_names={"boom.out"})
    records = [
        record("m1", '{"id": "ok", "data": {"num1": 1, "num2": 2}}'),
        record("m2", '{"id": "boom", "data": {"num1": 1, "num2": 2}}'),
        record("m3", "garbage"),
    ]
    with ThreadPoolExecutor(4) as pool:
        response = process_batch(
            records, store, executor=pool, remaining_ms=lambda: 60_000, margin_ms=1000
        )
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert store.objects["ok.out"] == b"3"
    assert any(name.startswith("invalid-") for name in store.objects)


def test_no_record_starts_when_the_deadline_is_near() -> None:
    # GIVEN an invocation with 500 ms left and a 3000 ms margin
    store = InMemoryResultStore()
    records = [
        record(f"m{i}", f'{{"id": "t{i}", "data": {{"num1": 1, "num2": 2}}}}') for i in range(3)
    ]
    # WHEN the batch runs / THEN every record is reported for retry and nothing is written
    response = process_batch(
        records, store, executor=None, remaining_ms=lambda: 500, margin_ms=3000
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(3)]}
    assert store.objects == {}


def test_deadline_reached_midway_reports_only_unstarted_records() -> None:
    clock = iter([10_000, 10_000, 100, 100])
    store = InMemoryResultStore()
    records = [
        record(f"m{i}", f'{{"id": "t{i}", "data": {{"num1": 1, "num2": 2}}}}') for i in range(4)
    ]
    response = process_batch(
        records, store, executor=None, remaining_ms=lambda: next(clock), margin_ms=1000
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]}
    assert sorted(store.objects) == ["t0.out", "t1.out"]


def test_failure_without_message_id_fails_the_whole_batch() -> None:
    store = InMemoryResultStore(fail_all=True)
    with pytest.raises(UnreportableFailureError):
        process_batch(
            [record(None, "{}")], store, executor=None, remaining_ms=lambda: 1e9, margin_ms=0
        )


def test_unexpected_exception_is_retried_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(raw: object, store: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr("core.delivery.process_message", explode)
    response = process_batch(
        [record("m1", "{}")],
        InMemoryResultStore(),
        executor=None,
        remaining_ms=lambda: 1e9,
        margin_ms=0,
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}


def test_one_structured_log_line_per_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aws_lambda")
    store = InMemoryResultStore(fail_names={"b.out"})
    records = [
        record("m1", '{"id": "a", "data": {"num1": 1, "num2": 2}}'),
        record("m2", '{"id": "b", "data": {"num1": 1, "num2": 2}}'),
        record("m3", '{"id": "c", "data": {"num1": true, "num2": 2}}'),
    ]
    process_batch(records, store, executor=None, remaining_ms=lambda: 1e9, margin_ms=0)
    lines = {r.message_id: r for r in caplog.records}  # type: ignore[attr-defined]
    assert [lines[m].outcome for m in ("m1", "m2", "m3")] == ["succeeded", "retry", "rejected"]  # type: ignore[attr-defined]
    assert lines["m1"].task_id == "a" and lines["m1"].delivery_attempt == 1  # type: ignore[attr-defined]
    assert lines["m3"].error_code == "invalid_number"  # type: ignore[attr-defined]
    assert all(isinstance(r.duration_ms, float) for r in caplog.records)  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [None, 42, ""])
def test_malformed_record_body_becomes_an_empty_task(body: object) -> None:
    message = decode_sqs_record({"messageId": "m", "body": body})
    assert message.body == ""
    store = InMemoryResultStore()
    response = process_batch(
        [{"messageId": "m", "body": body}],
        store,
        executor=None,
        remaining_ms=lambda: 1e9,
        margin_ms=0,
    )
    assert response == {"batchItemFailures": []}
    (name,) = store.objects
    assert json.loads(store.objects[name])["error"] == "empty"


def test_non_sqs_event_is_refused() -> None:
    with pytest.raises(ValueError, match="not an SQS event"):
        sqs_records({"detail": {}})
