"""The deployed function in the real functions-framework server, writing to the GCS emulator.

Requests are what Pub/Sub and Eventarc send: CloudEvents in structured and binary mode, and
the raw push body of a push subscription (the stack's delivery path).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests

from core.records import raw_bytes
from tests.conftest import load_event

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.gcp.conftest import FunctionServer

pytestmark = pytest.mark.integration


def encode(task: bytes) -> str:
    return base64.b64encode(task).decode()


def structured(task: bytes | None, message_id: str, **message: Any) -> dict[str, Any]:
    """The structured-mode sample with another task (``None``: no data) and message id."""
    event: dict[str, Any] = load_event("gcp_pubsub_structured.json")
    event["id"] = message_id
    body = event["data"]["message"]
    body.update(messageId=message_id, message_id=message_id, **message)
    if task is None:
        del body["data"]
    elif "data" not in message:
        body["data"] = encode(task)
    return event


def push(task: bytes | None, message_id: str, **message: Any) -> dict[str, Any]:
    """The raw push sample with another task and message id."""
    body: dict[str, Any] = load_event("gcp_pubsub_push.json")
    body["message"].update(messageId=message_id, message_id=message_id, **message)
    if task is None:
        del body["message"]["data"]
    elif "data" not in message:
        body["message"]["data"] = encode(task)
    return body


def post_structured(server: FunctionServer, event: dict[str, Any]) -> requests.Response:
    return requests.post(
        server.url,
        data=json.dumps(event),
        headers={"Content-Type": "application/cloudevents+json"},
        timeout=30,
    )


def post_push(server: FunctionServer, body: dict[str, Any]) -> requests.Response:
    return requests.post(server.url, json=body, timeout=30)


def read(gcs_client: Any, server: FunctionServer, name: str) -> Any:
    """The blob ``{prefix}/{name}`` with its content, or None."""
    return gcs_client.bucket(server.bucket).get_blob(f"{server.prefix}/{name}")


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture(autouse=True)
def nothing_outside_the_prefix(function_server: FunctionServer, gcs_client: Any) -> Iterator[None]:
    yield
    # THEN (every test) the function wrote nothing outside its prefix
    names = [blob.name for blob in gcs_client.list_blobs(function_server.bucket)]
    assert [name for name in names if not name.startswith(function_server.prefix + "/")] == []


def test_structured_cloud_event_writes_the_result(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN the structured-mode sample event (task gcp-structured: 42 + 58)
    event = load_event("gcp_pubsub_structured.json")
    # WHEN it is posted to the function
    response = post_structured(function_server, event)
    # THEN it is acknowledged and the result object holds the sum, as text/plain
    assert response.status_code == 200, response.text
    blob = read(gcs_client, function_server, "gcp-structured.out")
    assert blob is not None
    assert blob.download_as_bytes() == b"100"
    assert blob.content_type == "text/plain"
    # AND one INFO line was logged for the message, with the outcome fields
    entry = function_server.entry_for("11111111111")
    assert entry["severity"] == "INFO"
    assert entry["task_id"] == "gcp-structured"
    assert entry["outcome"] == "succeeded"
    assert entry["message"] == "task gcp-structured succeeded"
    assert isinstance(entry["duration_ms"], float)


def test_binary_cloud_event_writes_the_result(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN the binary-mode sample (ce-* headers, MessagePublishedData body; 0.1 + 0.2)
    sample = load_event("gcp_pubsub_binary.json")
    # WHEN it is posted
    response = requests.post(
        function_server.url, data=json.dumps(sample["body"]), headers=sample["headers"], timeout=30
    )
    # THEN the exact decimal sum is stored
    assert response.status_code == 200, response.text
    blob = read(gcs_client, function_server, "gcp-binary.out")
    assert blob is not None and blob.download_as_bytes() == b"0.3"
    assert function_server.entry_for("22222222222")["outcome"] == "succeeded"


def test_raw_push_body_writes_the_result_and_logs_the_delivery_attempt(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN the raw push sample (what the stack's push subscription sends), attempt 2
    body = load_event("gcp_pubsub_push.json")
    # WHEN it is posted
    response = post_push(function_server, body)
    # THEN functions-framework converted it, the function wrote the exact big-integer sum
    assert response.status_code == 200, response.text
    blob = read(gcs_client, function_server, "gcp-push.out")
    assert blob is not None and blob.download_as_bytes() == b"12345678901234567890124"
    # AND the log line carries what the conversion drops: delivery attempt and subscription
    entry = function_server.entry_for("33333333333")
    assert entry["delivery_attempt"] == 2
    assert entry["subscription"] == "projects/example-project/subscriptions/adder-tasks-push"


@pytest.mark.parametrize("mode", ["structured", "push"])
@pytest.mark.parametrize(
    ("task", "code"),
    [
        (b'{"id": "@", "data": {"num1": "x", "num2": 1}}', "invalid_number"),
        (b'{"id": "@", "data": {"num1": 1}}', "missing_field"),
        (b'{"id": "@", "data": {"num1": NaN, "num2": 1}}', "invalid_number"),
    ],
    ids=["not-a-number", "missing-num2", "nan"],
)
def test_bad_task_with_an_id_is_acknowledged_with_its_error_record(
    function_server: FunctionServer, gcs_client: Any, mode: str, task: bytes, code: str
) -> None:
    # GIVEN a task with a usable id but bad numbers
    task_id, message_id = f"bad-{new_id()}", new_id()
    task = task.replace(b"@", task_id.encode())
    # WHEN it is delivered
    if mode == "structured":
        response = post_structured(function_server, structured(task, message_id))
    else:
        response = post_push(function_server, push(task, message_id))
    # THEN it is acknowledged (2xx), {id}.err holds the reason and the raw task, no .out
    assert response.status_code == 200, response.text
    blob = read(gcs_client, function_server, f"{task_id}.err")
    assert blob is not None
    assert blob.content_type == "application/json"
    record = json.loads(blob.download_as_bytes())
    assert record["task_id"] == task_id
    assert record["error"] == code
    assert record["raw"] == task.decode()
    assert read(gcs_client, function_server, f"{task_id}.out") is None
    entry = function_server.entry_for(message_id)
    assert entry["severity"] == "WARNING"
    assert entry["outcome"] == "rejected"
    assert entry["error_code"] == code
    assert entry["record"] == f"{task_id}.err"


@pytest.mark.parametrize("mode", ["structured", "push"])
def test_task_that_is_not_json_gets_a_hash_named_record(
    function_server: FunctionServer, gcs_client: Any, mode: str
) -> None:
    # GIVEN valid base64 of bytes that are not JSON (unique per run)
    task = f"not json {new_id()}".encode()
    message_id = new_id()
    # WHEN it is delivered
    post = post_structured if mode == "structured" else post_push
    response = post(
        function_server, (structured if mode == "structured" else push)(task, message_id)
    )
    # THEN invalid-{sha256 of the task bytes}.err holds it
    assert response.status_code == 200, response.text
    name = f"invalid-{hashlib.sha256(task).hexdigest()}.err"
    blob = read(gcs_client, function_server, name)
    assert blob is not None
    assert json.loads(blob.download_as_bytes())["error"] == "invalid_json"


@pytest.mark.parametrize(
    "message",
    [
        {"data": "this is not base64!"},
        {"data": "QUJDRA=x"},
        {"data": ""},
    ],
    ids=["bad-characters", "bad-padding", "empty"],
)
@pytest.mark.parametrize("mode", ["structured", "push"])
def test_undecodable_data_is_recorded_with_the_whole_message(
    function_server: FunctionServer, gcs_client: Any, mode: str, message: dict[str, str]
) -> None:
    # GIVEN a message whose data is not base64 (or is empty)
    message_id = new_id()
    body = (structured if mode == "structured" else push)(b"", message_id, **message)
    # WHEN it is delivered
    post = post_structured if mode == "structured" else post_push
    response = post(function_server, body)
    # THEN it is acknowledged, and an invalid_envelope record keeps the message (id included)
    assert response.status_code == 200, response.text
    entry = function_server.entry_for(message_id)
    assert entry["outcome"] == "rejected"
    assert entry["error_code"] == "invalid_envelope"
    blob = read(gcs_client, function_server, entry["record"])
    assert blob is not None
    record = json.loads(blob.download_as_bytes())
    assert record["error"] == "invalid_envelope"
    assert json.loads(record["raw"])["messageId"] == message_id
    if mode == "structured":
        # the record is named after the hash of the message exactly as delivered
        expected = hashlib.sha256(raw_bytes(body["data"]["message"])).hexdigest()
        assert entry["record"] == f"invalid-{expected}.err"


def test_structured_event_without_data_is_recorded(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN a CloudEvent whose Pub/Sub message has attributes but no data
    message_id = new_id()
    event = structured(None, message_id)
    # WHEN it is posted / THEN it is acknowledged with an invalid_envelope record
    assert post_structured(function_server, event).status_code == 200
    entry = function_server.entry_for(message_id)
    assert entry["error_code"] == "invalid_envelope"
    assert "has no data" in entry["reason"]
    assert read(gcs_client, function_server, entry["record"]) is not None


def test_raw_push_without_data_is_refused_by_the_framework_before_the_function(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN a raw push body with no message.data (functions-framework needs it to convert)
    message_id = new_id()
    body = push(None, message_id)
    before = {blob.name for blob in gcs_client.list_blobs(function_server.bucket)}
    # WHEN it is posted
    response = post_push(function_server, body)
    # THEN functions-framework answers 400 without calling the function: Pub/Sub will
    # redeliver and finally dead-letter it (kept in the dead-letter subscription)
    assert response.status_code == 400
    assert "converting from background event to" in response.text
    after = {blob.name for blob in gcs_client.list_blobs(function_server.bucket)}
    assert after == before
    assert [e for e in function_server.log_entries() if e.get("message_id") == message_id] == []


def test_redelivery_and_resubmission_replace_the_result(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN a task delivered twice (Pub/Sub is at-least-once), then re-submitted changed
    task_id = f"again-{new_id()}"
    first = push(f'{{"id": "{task_id}", "data": {{"num1": 1, "num2": 1}}}}'.encode(), new_id())
    second = push(f'{{"id": "{task_id}", "data": {{"num1": 2, "num2": 2}}}}'.encode(), new_id())
    # WHEN they are posted
    statuses = [post_push(function_server, body).status_code for body in (first, first, second)]
    # THEN all are acknowledged and the object holds the latest result, whole
    assert statuses == [200, 200, 200]
    blob = read(gcs_client, function_server, f"{task_id}.out")
    assert blob is not None and blob.download_as_bytes() == b"4"


@pytest.mark.parametrize("mode", ["structured", "push"])
def test_store_failure_answers_500_so_pubsub_redelivers(
    broken_function_server: FunctionServer, gcs_client: Any, mode: str
) -> None:
    # GIVEN the function configured with a bucket that does not exist
    message_id = new_id()
    task = b'{"id": "transient", "data": {"num1": 1, "num2": 2}}'
    body = (structured if mode == "structured" else push)(task, message_id)
    # WHEN a good task is delivered
    post = post_structured if mode == "structured" else post_push
    response = post(broken_function_server, body)
    # THEN the function fails with 5xx (Pub/Sub retries with backoff, then dead-letters)
    assert 500 <= response.status_code < 600
    # AND it logged the failure as a retry, with the store's error
    entry = broken_function_server.entry_for(message_id)
    assert entry["severity"] == "ERROR"
    assert entry["outcome"] == "retry"
    assert entry["error_type"] == "StoreWriteError"
    assert "404" in entry["reason"]
    assert entry["task_id"] is None


def test_bad_task_on_a_failing_store_is_also_redelivered(
    broken_function_server: FunctionServer,
) -> None:
    # GIVEN an undecodable message, while the store is failing
    message_id = new_id()
    body = push(b"", message_id, data="%%%")
    # WHEN it is delivered / THEN its error record could not be written: 5xx, not dropped
    assert 500 <= post_push(broken_function_server, copy.deepcopy(body)).status_code < 600
    assert broken_function_server.entry_for(message_id)["outcome"] == "retry"
