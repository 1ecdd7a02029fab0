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


MISSING = object()
"""A field left out of a message (as opposed to present with the value None)."""


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
    # named after the hash of the Pub/Sub message as delivered (the same in both modes)
    message = body["data"]["message"] if mode == "structured" else body["message"]
    expected = hashlib.sha256(raw_bytes(message)).hexdigest()
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


@pytest.mark.parametrize("data", [MISSING, None], ids=["no-data", "null-data"])
def test_attributes_only_push_is_acknowledged_with_an_invalid_envelope_record(
    function_server: FunctionServer, gcs_client: Any, data: object
) -> None:
    # GIVEN a raw push of a message with attributes and no data (Pub/Sub allows it), or
    # with data null
    message_id = new_id()
    body = push(None, message_id)
    if data is not MISSING:
        body["message"]["data"] = data
    # WHEN it is posted
    response = post_push(function_server, body)
    # THEN it reaches the function and is acknowledged (no 400, so no endless redelivery)
    assert response.status_code == 200, response.text
    # AND one WARNING line names the message, its delivery and the record
    entry = function_server.entry_for(message_id)
    assert entry["severity"] == "WARNING"
    assert entry["outcome"] == "rejected"
    assert entry["error_code"] == "invalid_envelope"
    assert "has no data" in entry["reason"]
    assert entry["delivery_attempt"] == 2
    assert entry["subscription"] == body["subscription"]
    # AND invalid-{sha256 of the message}.err holds the message exactly as pushed
    expected = hashlib.sha256(raw_bytes(body["message"])).hexdigest()
    assert entry["record"] == f"invalid-{expected}.err"
    blob = read(gcs_client, function_server, entry["record"])
    assert blob is not None
    record = json.loads(blob.download_as_bytes())
    assert record["error"] == "invalid_envelope"
    assert json.loads(record["raw"]) == body["message"]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_body_that_is_not_json_is_acknowledged_with_its_record(
    function_server: FunctionServer, gcs_client: Any, content_type: str
) -> None:
    # GIVEN a request body that is not JSON at all (unique per run)
    body = f"not json {new_id()}".encode()
    # WHEN it is posted
    response = requests.post(
        function_server.url, data=body, headers={"Content-Type": content_type}, timeout=30
    )
    # THEN it is acknowledged and invalid-{sha256 of the body}.err keeps the body
    assert response.status_code == 200, response.text
    name = f"invalid-{hashlib.sha256(body).hexdigest()}.err"
    entry = function_server.entry_where("record", name)
    assert entry["error_code"] == "invalid_envelope"
    assert entry["message_id"] is None
    blob = read(gcs_client, function_server, name)
    assert blob is not None
    record = json.loads(blob.download_as_bytes())
    assert (record["error"], record["raw"]) == ("invalid_envelope", body.decode())


@pytest.mark.parametrize(
    "body",
    [
        {"subscription": "projects/p/subscriptions/s", "nonce": "@"},
        {"message": "@", "subscription": "projects/p/subscriptions/s"},
    ],
    ids=["no-message", "message-not-an-object"],
)
def test_json_body_without_a_message_is_acknowledged_with_its_record(
    function_server: FunctionServer, gcs_client: Any, body: dict[str, str]
) -> None:
    # GIVEN a JSON body that is neither a CloudEvent nor a Pub/Sub push (unique per run)
    body = {key: new_id() if value == "@" else value for key, value in body.items()}
    # WHEN it is posted
    response = post_push(function_server, body)
    # THEN it is acknowledged and its record holds the body
    assert response.status_code == 200, response.text
    name = f"invalid-{hashlib.sha256(raw_bytes(body)).hexdigest()}.err"
    entry = function_server.entry_where("record", name)
    assert entry["error_code"] == "invalid_envelope"
    assert "no 'message' object" in entry["reason"]
    blob = read(gcs_client, function_server, name)
    assert blob is not None
    assert json.loads(json.loads(blob.download_as_bytes())["raw"]) == body


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_cloud_event_with_no_data_is_recorded_with_its_attributes(
    function_server: FunctionServer, gcs_client: Any, mode: str
) -> None:
    # GIVEN a Pub/Sub CloudEvent that has no data at all
    message_id = new_id()
    event = structured(None, message_id)
    del event["data"]
    # WHEN it is posted in structured or binary mode (then with an empty body)
    if mode == "structured":
        response = post_structured(function_server, event)
    else:
        headers = {f"ce-{k}": str(v) for k, v in event.items() if k != "datacontenttype"}
        response = requests.post(function_server.url, data=b"", headers=headers, timeout=30)
    # THEN it is acknowledged; the record, named by the event id, keeps the attributes
    assert response.status_code == 200, response.text
    entry = function_server.entry_for(message_id)
    assert entry["error_code"] == "invalid_envelope"
    assert "event has no data" in entry["reason"]
    blob = read(gcs_client, function_server, entry["record"])
    assert blob is not None
    kept = json.loads(json.loads(blob.download_as_bytes())["raw"])
    assert {key: kept[key] for key in ("id", "source", "type")} == {
        key: event[key] for key in ("id", "source", "type")
    }


def test_malformed_cloud_event_is_recorded_not_crashed_on(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN a structured CloudEvent the CloudEvents SDK cannot parse (specversion a list:
    # from_http raises TypeError, which functions-framework let through as a 500)
    body = json.dumps({"specversion": ["1.0"], "id": new_id()}).encode()
    # WHEN it is posted
    response = requests.post(
        function_server.url,
        data=body,
        headers={"Content-Type": "application/cloudevents+json"},
        timeout=30,
    )
    # THEN it is acknowledged with a record of the body, not retried forever
    assert response.status_code == 200, response.text
    name = f"invalid-{hashlib.sha256(body).hexdigest()}.err"
    entry = function_server.entry_where("record", name)
    assert entry["reason"] == "request body cannot be parsed as a CloudEvent (TypeError)"
    assert read(gcs_client, function_server, name) is not None


def test_other_methods_are_refused_without_a_record(
    function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN a GET (Pub/Sub only ever POSTs; there is no message to record)
    before = {blob.name for blob in gcs_client.list_blobs(function_server.bucket)}
    # WHEN it is sent / THEN 405, and the bucket is unchanged
    assert requests.get(function_server.url, timeout=30).status_code == 405
    assert {blob.name for blob in gcs_client.list_blobs(function_server.bucket)} == before


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
def test_store_failure_answers_500_and_logs_one_json_line_with_the_stack(
    broken_function_server: FunctionServer, mode: str
) -> None:
    # GIVEN the function configured with a bucket that does not exist
    message_id, task_id = new_id(), f"transient-{new_id()}"
    task = f'{{"id": "{task_id}", "data": {{"num1": 1, "num2": 2}}}}'.encode()
    body = (structured if mode == "structured" else push)(task, message_id)
    offset = broken_function_server.log_size()
    # WHEN a good task is delivered
    post = post_structured if mode == "structured" else post_push
    response = post(broken_function_server, body)
    # THEN the function fails with 500 (Pub/Sub retries with backoff, then dead-letters)
    assert response.status_code == 500
    # AND it logged the failure as a retry naming the task, with the store's error and stack
    entry = broken_function_server.entry_for(message_id)
    assert entry["severity"] == "ERROR"
    assert entry["outcome"] == "retry"
    assert entry["error_type"] == "StoreWriteError"
    assert "404" in entry["reason"]
    assert entry["task_id"] == task_id
    assert "StoreWriteError" in entry["stack_trace"]
    # AND that JSON line is all the request wrote: no plain-text Flask traceback beside it
    lines = broken_function_server.lines_since(offset)
    assert all(line.startswith("{") for line in lines), lines
    assert [json.loads(line)["message_id"] for line in lines] == [message_id]


def test_bad_task_on_a_failing_store_is_also_redelivered(
    broken_function_server: FunctionServer,
) -> None:
    # GIVEN an undecodable message, while the store is failing
    message_id = new_id()
    body = push(b"", message_id, data="%%%")
    # WHEN it is delivered / THEN its error record could not be written: 5xx, not dropped
    assert 500 <= post_push(broken_function_server, copy.deepcopy(body)).status_code < 600
    assert broken_function_server.entry_for(message_id)["outcome"] == "retry"


TOKEN = "SECRET-TOKEN-123"


@pytest.mark.parametrize("case", ["good-task", "bad-task", "no-data", "not-json", "store-failure"])
def test_the_authorization_token_is_never_echoed_or_logged(
    function_server: FunctionServer, broken_function_server: FunctionServer, case: str
) -> None:
    # GIVEN a push carrying the OIDC token Pub/Sub attaches, as every real push does
    server = broken_function_server if case == "store-failure" else function_server
    message_id = new_id()
    task = {
        "good-task": f'{{"id": "{new_id()}", "data": {{"num1": 1, "num2": 2}}}}'.encode(),
        "bad-task": f'{{"id": "{new_id()}", "data": {{"num1": true, "num2": 2}}}}'.encode(),
        "store-failure": b'{"id": "t", "data": {"num1": 1, "num2": 2}}',
    }.get(case)
    data = json.dumps(push(task, message_id)).encode() if case != "not-json" else b"{oops"
    # WHEN it is posted
    response = requests.post(
        server.url,
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    )
    # THEN it ends as usual (acknowledged, or 500 for the store failure)
    assert response.status_code == (500 if case == "store-failure" else 200), response.text
    if case != "not-json":
        server.entry_for(message_id)
    # AND the token is in neither the answer nor anything the server wrote to stdout/stderr
    assert TOKEN not in response.text
    assert all(TOKEN not in value for value in response.headers.values())
    assert TOKEN not in server.log.read_text(encoding="utf-8", errors="replace")
