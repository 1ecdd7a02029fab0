"""The shared pipeline's three outcomes, and the error records it writes."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from core.errors import InvalidTaskError, StoreWriteError
from core.outcome import OutcomeKind
from core.pipeline import process_message
from core.records import MAX_RAW_KEPT, ErrorRecord
from tests.unit.fakes import InMemoryResultStore


def test_success_writes_the_result() -> None:
    store = InMemoryResultStore()
    outcome = process_message(b'{"id": "t", "data": {"num1": 42, "num2": 58}}', store)
    assert (outcome.kind, outcome.name, outcome.task_id) == (OutcomeKind.SUCCEEDED, "t", "t")
    assert store.objects == {"t.out": b"100"}


def test_bad_task_with_an_id_gets_an_error_record_named_after_it() -> None:
    store = InMemoryResultStore()
    raw = b'{"id": "t", "data": {"num1": true, "num2": 58}}'
    outcome = process_message(raw, store)
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.code == "invalid_number"
    record = json.loads(store.objects["t.err"])
    assert record == {
        "task_id": "t",
        "error": "invalid_number",
        "message": "data.num1 must be a JSON number, not a boolean (true)",
        "raw": raw.decode(),
        "raw_bytes": len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
    }


def test_bad_task_without_an_id_is_named_by_a_stable_hash_of_the_message() -> None:
    store = InMemoryResultStore()
    raw = b"\x00\xffnot json"
    first = process_message(raw, store)
    second = process_message(raw, InMemoryResultStore())
    expected = "invalid-" + hashlib.sha256(raw).hexdigest()
    assert first.name == second.name == expected
    record = json.loads(store.objects[expected + ".err"])
    assert record["task_id"] is None
    assert record["error"] == "invalid_encoding"
    assert base64.b64decode(record["raw_base64"]) == raw


def test_a_mapping_is_hashed_as_canonical_json() -> None:
    a = process_message({"id": 1, "data": {"num1": 1, "num2": 2}}, InMemoryResultStore())
    b = process_message({"data": {"num2": 2, "num1": 1}, "id": 1}, InMemoryResultStore())
    assert a.name == b.name


def test_huge_raw_message_is_kept_truncated_with_its_size_and_hash() -> None:
    raw = b"x" * (MAX_RAW_KEPT * 2)
    record = ErrorRecord.for_rejection(InvalidTaskError("too_large", "too big"), raw)
    doc = json.loads(record.to_json())
    assert len(doc["raw"]) == MAX_RAW_KEPT
    assert doc["raw_truncated"] is True
    assert doc["raw_bytes"] == len(raw)
    assert doc["raw_sha256"] == hashlib.sha256(raw).hexdigest()


def test_store_failure_is_raised_as_transient_not_swallowed() -> None:
    store = InMemoryResultStore(fail_all=True)
    with pytest.raises(StoreWriteError):
        process_message(b'{"id": "t", "data": {"num1": 1, "num2": 2}}', store)


def test_failure_to_write_the_error_record_is_transient_too() -> None:
    store = InMemoryResultStore(fail_all=True)
    with pytest.raises(StoreWriteError):
        process_message(b"garbage", store)


def test_skip_if_skips_a_valid_task_without_writing() -> None:
    store = InMemoryResultStore()
    outcome = process_message(
        b'{"id": "t", "data": {"num1": 1, "num2": 2}}', store, skip_if=lambda task_id: True
    )
    assert outcome.kind is OutcomeKind.SKIPPED
    assert store.objects == {}
