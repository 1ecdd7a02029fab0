"""Decoding Pub/Sub CloudEvents and push bodies into task bytes (no network)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from gcp_function.envelope import (
    INVALID_ENVELOPE,
    UndecodableMessageError,
    decode_base64,
    decode_pubsub_event,
    decode_push_body,
    decode_request,
)
from tests.conftest import load_event

PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
TASK = b'{"id": "t1", "data": {"num1": 1, "num2": 2}}'


def event_with(data: Any, event_id: str = "ev-1") -> CloudEvent:
    return CloudEvent({"type": PUBSUB_TYPE, "source": "//pubsub", "id": event_id}, data)


def structured_event(name: str) -> CloudEvent:
    sample = load_event(name)
    attributes = {key: value for key, value in sample.items() if key != "data"}
    return CloudEvent(attributes, sample["data"])


def test_structured_sample_decodes_to_the_published_bytes() -> None:
    # GIVEN the structured-mode sample (Eventarc's MessagePublishedData)
    event = structured_event("gcp_pubsub_structured.json")
    # WHEN it is decoded
    message = decode_pubsub_event(event)
    # THEN the task bytes, id, attributes and subscription come through; no delivery count
    assert json.loads(message.raw) == {"id": "gcp-structured", "data": {"num1": 42, "num2": 58}}
    assert message.message_id == "11111111111"
    assert message.attributes == {"origin": "adder-submit"}
    assert message.subscription is not None
    assert message.subscription.startswith("projects/example-project/subscriptions/")
    assert message.delivery_attempt is None


def test_converted_push_body_keeps_delivery_attempt_from_the_request_body() -> None:
    # GIVEN a raw push body, as functions-framework converts it (subscription and
    # deliveryAttempt dropped, "@type" added), plus the request body itself
    push = load_event("gcp_pubsub_push.json")
    converted = {
        "message": {
            "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
            "data": push["message"]["data"],
            "attributes": push["message"]["attributes"],
            "messageId": push["message"]["messageId"],
            "publishTime": push["message"]["publishTime"],
        }
    }
    # WHEN it is decoded with and without the request body
    with_body = decode_pubsub_event(event_with(converted, "33333333333"), push)
    without = decode_pubsub_event(event_with(converted, "33333333333"))
    # THEN the body supplies what the conversion dropped
    assert with_body.delivery_attempt == 2
    assert with_body.subscription == "projects/example-project/subscriptions/adder-tasks-push"
    assert without.delivery_attempt is None and without.subscription is None
    assert with_body.raw == without.raw
    assert json.loads(with_body.raw)["id"] == "gcp-push"


def test_message_id_falls_back_to_snake_case_then_the_event_id() -> None:
    data = base64.b64encode(TASK).decode()
    snake = decode_pubsub_event(event_with({"message": {"data": data, "message_id": "m2"}}))
    bare = decode_pubsub_event(event_with({"message": {"data": data}}, "ev-9"))
    assert snake.message_id == "m2"
    assert bare.message_id == "ev-9"


@pytest.mark.parametrize(
    "encode",
    [
        base64.b64encode,
        base64.urlsafe_b64encode,
        lambda raw: base64.b64encode(raw).rstrip(b"="),
        lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="),
    ],
    ids=["standard", "urlsafe", "standard-unpadded", "urlsafe-unpadded"],
)
def test_both_base64_alphabets_with_or_without_padding(encode: Any) -> None:
    # GIVEN bytes whose encoding uses '+' '/' (or '-' '_') and needs padding
    raw = b"\xfb\xff\xfe" + TASK + b"?"
    # WHEN decoded / THEN the exact bytes come back
    assert decode_base64(encode(raw).decode()) == raw


NO_DATA = {"messageId": "m1", "attributes": {"k": "v"}}
EMPTY = {"messageId": "m1", "data": ""}
NOT_B64 = {"messageId": "m1", "data": "not base64!"}
BAD_LENGTH = {"messageId": "m1", "data": "abcde"}
NON_ASCII = {"messageId": "m1", "data": "ünïcode"}
NUMBER = {"messageId": "m1", "data": 42}
NO_MESSAGE = {"subscription": "projects/p/subscriptions/s"}
V1 = {"specversion": "1.0"}


@pytest.mark.parametrize(
    ("data", "reason", "kept"),
    [
        ({"message": NO_DATA}, "has no data", NO_DATA),
        ({"message": EMPTY}, "has no data", EMPTY),
        ({"message": NOT_B64}, "not valid base64", NOT_B64),
        ({"message": BAD_LENGTH}, "not valid base64", BAD_LENGTH),
        ({"message": NON_ASCII}, "not valid base64", NON_ASCII),
        ({"message": NUMBER}, "not a base64 string", NUMBER),
        (NO_MESSAGE, "no 'message' object", NO_MESSAGE),
        ({"message": "text"}, "no 'message' object", {"message": "text"}),
        (b"\xff\x00 opaque", "bytes data", b"\xff\x00 opaque"),
        ("plain text", "str data", "plain text"),
        (None, "no data", {"type": PUBSUB_TYPE, "source": "//pubsub", "id": "ev-7", **V1}),
    ],
)
def test_undecodable_messages_are_bad_tasks_carrying_what_exists(
    data: Any, reason: str, kept: object
) -> None:
    # GIVEN an event whose message has no usable data
    event = event_with(data, "ev-7")
    # WHEN it is decoded
    with pytest.raises(UndecodableMessageError) as caught:
        decode_pubsub_event(event)
    # THEN it is a permanent failure with a stable code and reason, keeping what there is
    error = caught.value
    assert error.code == INVALID_ENVELOPE
    assert reason in error.message
    assert error.task_id is None
    assert error.raw == kept
    assert error.delivery.message_id == (
        "m1" if isinstance(kept, dict) and "messageId" in kept else "ev-7"
    )


def test_undecodable_message_keeps_identifiers_for_the_log() -> None:
    push = {"message": {"messageId": "m5"}, "subscription": "projects/p/subscriptions/s"}
    with pytest.raises(UndecodableMessageError) as caught:
        decode_pubsub_event(
            event_with({"message": {"messageId": "m5"}}), {**push, "deliveryAttempt": 4}
        )
    assert caught.value.delivery.message_id == "m5"
    assert caught.value.delivery.delivery_attempt == 4
    assert caught.value.delivery.subscription == "projects/p/subscriptions/s"


@pytest.mark.parametrize("attempt", [True, "x", -1.5, None, {"n": 1}])
def test_odd_delivery_attempt_values_are_ignored(attempt: object) -> None:
    data = {"message": {"data": base64.b64encode(TASK).decode(), "messageId": "m"}}
    assert (
        decode_pubsub_event(event_with(data), {"deliveryAttempt": attempt}).delivery_attempt is None
    )


def test_delivery_attempt_as_text_is_read() -> None:
    data = {"message": {"data": base64.b64encode(TASK).decode(), "messageId": "m"}}
    assert decode_pubsub_event(event_with(data), {"deliveryAttempt": "5"}).delivery_attempt == 5


JSON = {"Content-Type": "application/json"}
CLOUDEVENT = {"Content-Type": "application/cloudevents+json"}
DEEP = b"[" * 5000 + b"]" * 5000


def test_raw_push_body_is_decoded_directly_with_its_delivery_fields() -> None:
    # GIVEN the raw push sample, as the HTTP request body
    body = json.dumps(load_event("gcp_pubsub_push.json")).encode()
    # WHEN the request is decoded
    message = decode_request(JSON, body)
    # THEN the task bytes, message id, subscription and delivery attempt come through
    assert json.loads(message.raw)["id"] == "gcp-push"
    assert (message.message_id, message.delivery_attempt) == ("33333333333", 2)
    assert message.subscription == "projects/example-project/subscriptions/adder-tasks-push"


def test_structured_cloud_event_request_is_decoded() -> None:
    body = json.dumps(load_event("gcp_pubsub_structured.json")).encode()
    assert json.loads(decode_request(CLOUDEVENT, body).raw)["id"] == "gcp-structured"


@pytest.mark.parametrize(
    ("headers", "body", "reason", "kept"),
    [
        (JSON, b'{"message": {"attributes": {"k": "v"}, "messageId": "1"}}', "has no data", None),
        (JSON, b"not json", "not JSON", b"not json"),
        (JSON, b"", "not JSON", b""),
        (JSON, b"[1, 2]", "a JSON list", b"[1, 2]"),
        (JSON, b'{"subscription": "s"}', "no 'message' object", {"subscription": "s"}),
        (JSON, DEEP, "(RecursionError)", DEEP),
        (CLOUDEVENT, b'{"specversion": ["1.0"]}', "(TypeError)", b'{"specversion": ["1.0"]}'),
        (JSON, b'{"message": {"data": "\xff"}}', "(UnicodeDecodeError)", None),
    ],
    ids=["attributes-only", "not-json", "empty", "list", "no-message", "deep", "bad-ce", "utf8"],
)
def test_requests_without_a_message_are_bad_tasks_keeping_the_body(
    headers: dict[str, str], body: bytes, reason: str, kept: object
) -> None:
    # GIVEN a request body that holds no Pub/Sub message data
    # WHEN it is decoded
    with pytest.raises(UndecodableMessageError) as caught:
        decode_request(headers, body)
    # THEN it is an invalid_envelope carrying what arrived (the message, else the body)
    assert caught.value.code == INVALID_ENVELOPE
    assert reason in caught.value.message
    if kept is not None:
        assert caught.value.raw == kept


def test_push_attributes_keep_strings_and_skip_containers() -> None:
    body = b'{"message": {"data": "e30=", "attributes": {"a": "x", "n": 1, "deep": [[1]]}}}'
    assert decode_push_body(body).attributes == {"a": "x", "n": "1"}
