"""The function's pipeline, logging and wiring, with the in-memory store (no network)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest
from cloudevents.http import CloudEvent

from core.errors import ConfigError, StoreWriteError
from core.group_commit import GroupCommit
from core.outcome import OutcomeKind
from core.packing import unpack
from gcp_function.gcs_store import store_from_environment
from gcp_function.handler import group_commit_from_environment, handle_event
from gcp_function.logs import LOGGER_NAME, CloudLoggingFormatter
from tests.conftest import REPO_ROOT, load_event
from tests.support.logs import handler_on
from tests.unit.fakes import InMemoryResultStore

if TYPE_CHECKING:
    from collections.abc import Iterator

PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the function's logger writes, through the Cloud Logging formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    with handler_on(LOGGER_NAME, handler, logging.INFO):
        yield stream


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def event(message: dict[str, Any], event_id: str = "ev-1") -> CloudEvent:
    return CloudEvent(
        {"type": PUBSUB_TYPE, "source": "//pubsub", "id": event_id}, {"message": message}
    )


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_success_writes_the_result_and_logs_one_info_line(log_lines: io.StringIO) -> None:
    # GIVEN a valid task message, delivered for the 3rd time
    store = InMemoryResultStore()
    message = {"data": b64(b'{"id": "t1", "data": {"num1": 1, "num2": 2}}'), "messageId": "m1"}
    # WHEN it is handled
    outcome = handle_event(event(message), store, {"deliveryAttempt": 3})
    # THEN the result is stored and one JSON line says so, with the outcome fields
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert store.objects == {"t1.out": b"3"}
    [entry] = entries(log_lines)
    assert entry["severity"] == "INFO"
    assert entry["message"] == "task t1 succeeded"
    assert entry["task_id"] == "t1"
    assert entry["message_id"] == "m1"
    assert entry["outcome"] == "succeeded"
    assert entry["delivery_attempt"] == 3
    assert entry["duration_ms"] >= 0


def test_bad_task_is_acknowledged_with_its_record_and_a_warning(log_lines: io.StringIO) -> None:
    store = InMemoryResultStore()
    message = {"data": b64(b'{"id": "t2", "data": {"num1": "1", "num2": 2}}'), "messageId": "m2"}
    outcome = handle_event(event(message), store)
    assert outcome.kind is OutcomeKind.REJECTED
    assert list(store.objects) == ["t2.err"]
    [entry] = entries(log_lines)
    assert entry["severity"] == "WARNING"
    assert entry["error_code"] == "invalid_number"
    assert entry["record"] == "t2.err"


def test_undecodable_message_record_holds_the_message_and_is_stable(
    log_lines: io.StringIO,
) -> None:
    # GIVEN a message whose data is not base64, delivered twice, and another one like it
    store = InMemoryResultStore()
    bad = {"data": "@@not base64@@", "messageId": "m3", "attributes": {"k": "v"}}
    other = {**bad, "messageId": "m4"}
    # WHEN they are handled
    first = handle_event(event(bad), store)
    again = handle_event(event(bad), store)
    third = handle_event(event(other), store)
    # THEN redelivery rewrites the same record; a different message gets its own
    assert first.kind is OutcomeKind.REJECTED and first.code == "invalid_envelope"
    assert first.name == again.name != third.name
    assert first.name.startswith("invalid-")
    record = json.loads(store.objects[first.name + ".err"])
    assert json.loads(record["raw"]) == bad
    assert record["error"] == "invalid_envelope"
    assert {entry["message_id"] for entry in entries(log_lines)} == {"m3", "m4"}


def test_store_failure_is_logged_as_retry_and_raised(log_lines: io.StringIO) -> None:
    # GIVEN a store that fails every write
    store = InMemoryResultStore(fail_all=True)
    message = {"data": b64(b'{"id": "t5", "data": {"num1": 1, "num2": 2}}'), "messageId": "m5"}
    # WHEN a task is handled / THEN the transient error propagates (-> 500 -> redelivery)
    with pytest.raises(StoreWriteError):
        handle_event(event(message), store)
    # AND one ERROR line names the task and carries the stack trace
    [entry] = entries(log_lines)
    assert entry["severity"] == "ERROR"
    assert entry["outcome"] == "retry"
    assert entry["error_type"] == "StoreWriteError"
    assert entry["task_id"] == "t5"
    assert "StoreWriteError: injected failure" in entry["stack_trace"]


def test_an_unexpected_error_is_also_redelivered_not_swallowed(log_lines: io.StringIO) -> None:
    class Broken(InMemoryResultStore):
        def write_result(self, task_id: str, text: str) -> None:
            raise RuntimeError("bug")

    message = {"data": b64(b'{"id": "t6", "data": {"num1": 1, "num2": 2}}'), "messageId": "m6"}
    with pytest.raises(RuntimeError):
        handle_event(event(message), Broken())
    assert entries(log_lines)[0]["outcome"] == "retry"


def test_formatter_keeps_unicode_and_stack_traces() -> None:
    record = logging.LogRecord(LOGGER_NAME, logging.ERROR, __file__, 1, "tâche %s", ("数",), None)
    record.fields = {"task_id": "数"}
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(CloudLoggingFormatter().format(record))
    assert entry["message"] == "tâche 数"
    assert entry["task_id"] == "数"
    assert entry["severity"] == "ERROR"
    assert "ValueError: boom" in entry["stack_trace"]


def test_missing_bucket_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RESULTS_BUCKET"):
        store_from_environment({"RESULTS_PREFIX": "p"})
    store = store_from_environment({"RESULTS_BUCKET": "b", "RESULTS_PREFIX": "/p/"})
    assert (store.bucket_name, store.prefix) == ("b", "p")


@pytest.fixture
def app_with_memory_store() -> Iterator[tuple[Any, InMemoryResultStore]]:
    """The real functions-framework app around gcp_function/main.py, its store swapped."""
    import os

    os.environ["RESULTS_BUCKET"] = "unit-test-bucket"
    app = functions_framework.create_app(  # type: ignore[no-untyped-call]
        "process_task", str(REPO_ROOT / "gcp_function" / "main.py"), "cloudevent"
    )
    module: Any = sys.modules["main"]
    store = InMemoryResultStore()
    module.STORE = store
    try:
        yield app, store
    finally:
        sys.modules.pop("main", None)


def test_main_acknowledges_a_raw_push_and_reads_its_delivery_attempt(
    app_with_memory_store: tuple[Any, InMemoryResultStore], log_lines: io.StringIO
) -> None:
    # GIVEN the function in functions-framework's app, and the raw push sample
    app, store = app_with_memory_store
    # WHEN the push body is posted
    response = app.test_client().post("/", json=load_event("gcp_pubsub_push.json"))
    # THEN it is acknowledged and the result written
    assert response.status_code == 200
    assert store.objects == {"gcp-push.out": b"12345678901234567890124"}
    # AND the log line has what functions-framework's conversion drops, from the request body
    [entry] = entries(log_lines)
    assert entry["message_id"] == "33333333333"
    assert entry["delivery_attempt"] == 2
    assert entry["subscription"] == "projects/example-project/subscriptions/adder-tasks-push"


def test_main_answers_500_when_the_store_fails_without_flask_logging_a_traceback(
    app_with_memory_store: tuple[Any, InMemoryResultStore],
    log_lines: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the function in functions-framework's app, with a store that fails
    app, store = app_with_memory_store
    store.fail_all = True
    # WHEN a good task is pushed
    response = app.test_client().post("/", json=load_event("gcp_pubsub_push.json"))
    # THEN 500 (Pub/Sub redelivers), with a fixed answer
    assert response.status_code == 500
    assert response.get_data(as_text=True) == "not processed, will be retried"
    # AND the one JSON line has the stack; Flask wrote nothing (no plain-text traceback)
    [entry] = entries(log_lines)
    assert (entry["task_id"], entry["outcome"]) == ("gcp-push", "retry")
    assert "Traceback" in entry["stack_trace"]
    assert "Traceback" not in capsys.readouterr().err


def test_main_refuses_other_methods(
    app_with_memory_store: tuple[Any, InMemoryResultStore], log_lines: io.StringIO
) -> None:
    app, store = app_with_memory_store
    assert app.test_client().get("/").status_code == 405
    assert store.objects == {} and entries(log_lines) == []


# --- packed layout ------------------------------------------------------------------------


def test_the_layout_setting_chooses_the_group_commit() -> None:
    # GIVEN no layout, per_task, or packed (with and without pack settings)
    store = InMemoryResultStore()
    # THEN one object per task has no group commit
    assert group_commit_from_environment(store, {}) is None
    assert group_commit_from_environment(store, {"RESULTS_LAYOUT": "per_task"}) is None
    # AND packed has one, its batch the server's threads unless PACK_MAX_BATCH says otherwise
    commit = group_commit_from_environment(store, {"RESULTS_LAYOUT": "packed", "THREADS": "8"})
    assert commit is not None and commit.store is store
    assert (commit.max_batch, commit.max_wait_seconds) == (8, 0.05)
    environ = {"RESULTS_LAYOUT": "packed", "PACK_MAX_BATCH": "3", "PACK_MAX_WAIT_MS": "20"}
    commit = group_commit_from_environment(store, environ)
    assert commit is not None and (commit.max_batch, commit.max_wait_seconds) == (3, 0.02)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RESULTS_LAYOUT": "pack"}, "RESULTS_LAYOUT='pack': use 'per_task' or 'packed'"),
        (
            {"RESULTS_LAYOUT": "packed", "PACK_MAX_BATCH": "0"},
            "PACK_MAX_BATCH='0': use a whole number from 1 to 1000",
        ),
    ],
)
def test_a_bad_layout_setting_is_one_clear_config_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        group_commit_from_environment(InMemoryResultStore(), environ)
    assert str(raised.value) == message


def one_request_batches(store: InMemoryResultStore) -> GroupCommit:
    """The packed layout's group commit on ``store``, one request per batch, no window."""
    environ = {"RESULTS_LAYOUT": "packed", "PACK_MAX_BATCH": "1", "PACK_MAX_WAIT_MS": "0"}
    commit = group_commit_from_environment(store, environ)
    assert commit is not None
    return commit


def test_packed_handling_writes_a_pack_and_a_failed_pack_is_redelivered(
    log_lines: io.StringIO,
) -> None:
    # GIVEN the group commit of a packed instance serving one request at a time
    store = InMemoryResultStore()
    commit = one_request_batches(store)
    message = {"data": b64(b'{"id": "p1", "data": {"num1": 1, "num2": 2}}'), "messageId": "m7"}
    # WHEN a task is handled through it
    outcome = handle_event(event(message), store, {"deliveryAttempt": 2}, commit)
    # THEN the result is in a pack (nothing else written) and the log line is the usual one
    assert outcome.kind is OutcomeKind.SUCCEEDED
    [(key, data)] = store.objects.items()
    assert key.startswith("packed/") and key.endswith(".jsonl")
    assert [(r.file_name, r.content) for r in unpack(data)] == [("p1.out", b"3")]
    [entry] = entries(log_lines)
    assert (entry["task_id"], entry["delivery_attempt"]) == ("p1", 2)
    # WHEN the store fails / THEN the error propagates (-> 500 -> redelivery)
    store.fail_all = True
    with pytest.raises(StoreWriteError):
        handle_event(event({**message, "messageId": "m8"}), store, None, commit)


def test_main_in_the_packed_layout_answers_from_the_pack_write(
    log_lines: io.StringIO,
) -> None:
    # GIVEN gcp_function/main.py loaded with RESULTS_LAYOUT=packed
    os.environ.update(RESULTS_BUCKET="unit-test-bucket", RESULTS_LAYOUT="packed", THREADS="6")
    app = functions_framework.create_app(  # type: ignore[no-untyped-call]
        "process_task", str(REPO_ROOT / "gcp_function" / "main.py"), "cloudevent"
    )
    module: Any = sys.modules["main"]
    try:
        # THEN the instance has a group commit on its store, batches of its 6 threads
        assert isinstance(module.COMMIT, GroupCommit)
        assert module.COMMIT.store is module.STORE and module.COMMIT.max_batch == 6
        # WHEN a push is posted (the store swapped for memory, one request per batch)
        store = InMemoryResultStore()
        module.COMMIT = one_request_batches(store)
        response = app.test_client().post("/", json=load_event("gcp_pubsub_push.json"))
        # THEN it is acknowledged once its pack is written
        assert response.status_code == 200
        [data] = store.objects.values()
        assert [r.file_name for r in unpack(data)] == ["gcp-push.out"]
        # AND a failed pack write is a 500: Pub/Sub delivers it again
        store.fail_all = True
        response = app.test_client().post("/", json=load_event("gcp_pubsub_push.json"))
        assert response.status_code == 500
    finally:
        sys.modules.pop("main", None)
