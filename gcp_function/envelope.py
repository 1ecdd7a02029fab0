"""Pub/Sub envelope decoding: a CloudEvent (or the push body behind it) in, task bytes out.

Three deliveries reach the function, all as a ``google.cloud.pubsub.topic.v1.messagePublished``
CloudEvent once functions-framework has parsed the request:

* structured or binary mode: ``data`` is ``{"message": {...}, "subscription": "..."}``
  (the ``MessagePublishedData`` schema);
* a raw push body ``{"message": {...}, "subscription": "...", "deliveryAttempt": n}``, which
  functions-framework converts to ``data = {"message": {"@type", "data", "attributes",
  "messageId", "publishTime"}}``, dropping ``subscription`` and ``deliveryAttempt``. Pass
  the request's JSON body as ``push_body`` to keep those two.

``message.data`` is base64 (standard or URL-safe alphabet, padding optional). A message
without data, or with data that is not base64, raises :class:`UndecodableMessageError`: a bad
task whose error record holds the whole message, so nothing is lost.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from core.errors import InvalidTaskError

INVALID_ENVELOPE = "invalid_envelope"
"""Error code of a message the function cannot get task bytes out of."""


if TYPE_CHECKING:
    from typing import Protocol

    class CloudEventLike(Protocol):
        """What is read from a ``cloudevents.http.CloudEvent``."""

        data: object

        def get(self, key: str, default: object = None) -> object:
            """A CloudEvent attribute such as ``id``."""


class PubsubMessage(NamedTuple):
    """One decoded Pub/Sub message: the task bytes and what identifies the delivery.

    (A NamedTuple rather than a dataclass: it is cheaper to create at import, which counts
    toward every cold start.)
    """

    raw: bytes
    """The task exactly as published (``message.data``, base64-decoded)."""
    message_id: str | None
    attributes: dict[str, str]
    subscription: str | None
    delivery_attempt: int | None
    """Set only for a raw push of a subscription with a dead-letter policy."""


class UndecodableMessageError(InvalidTaskError):
    """The event holds no task bytes; ``raw`` is what it does hold (for the error record)."""

    def __init__(self, message: str, raw: object, delivery: PubsubMessage) -> None:
        super().__init__(INVALID_ENVELOPE, message)
        self.raw = raw
        self.delivery = delivery


def decode_pubsub_event(
    event: CloudEventLike, push_body: Mapping[str, object] | None = None
) -> PubsubMessage:
    """The Pub/Sub message carried by ``event``.

    Raises :class:`UndecodableMessageError` when it carries no usable ``message.data``.

    >>> from cloudevents.http import CloudEvent
    >>> attributes = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "s"}
    >>> data = {"message": {"data": "eyJpZCI6ICJ0MSJ9", "messageId": "7"}}
    >>> decode_pubsub_event(CloudEvent(attributes, data)).raw
    b'{"id": "t1"}'
    """
    data = event.data
    push = push_body or {}
    envelope = data if isinstance(data, Mapping) else {}
    message = envelope.get("message")
    if not isinstance(message, Mapping):
        message = {}
    delivery = PubsubMessage(
        raw=b"",
        message_id=_text(message.get("messageId"))
        or _text(message.get("message_id"))
        or _text(event.get("id")),
        attributes=_attributes(message.get("attributes")),
        subscription=_text(envelope.get("subscription")) or _text(push.get("subscription")),
        delivery_attempt=_count(push.get("deliveryAttempt"))
        or _count(envelope.get("deliveryAttempt")),
    )
    if not isinstance(data, Mapping):
        what = "no data" if data is None else f"{type(data).__name__} data"
        raise UndecodableMessageError(
            f"event has {what}, not a Pub/Sub message", b"" if data is None else data, delivery
        )
    if not message:
        raise UndecodableMessageError("event data has no 'message' object", data, delivery)
    encoded = message.get("data")
    if encoded is None or encoded == "":
        raise UndecodableMessageError("Pub/Sub message has no data", message, delivery)
    if not isinstance(encoded, str):
        raise UndecodableMessageError(
            f"Pub/Sub message data is a {type(encoded).__name__}, not a base64 string",
            message,
            delivery,
        )
    try:
        raw = decode_base64(encoded)
    except ValueError as exc:
        raise UndecodableMessageError(
            f"Pub/Sub message data is not valid base64: {exc}", message, delivery
        ) from None
    return delivery._replace(raw=raw)


def decode_base64(text: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding; ``ValueError`` if invalid."""
    if not text.isascii():
        raise ValueError("non-ASCII character")
    normalized = text.replace("-", "+").replace("_", "/")
    remainder = len(normalized) % 4
    if remainder == 1:
        raise ValueError(f"length {len(text)} is not possible for base64")
    if remainder and "=" not in normalized:
        normalized += "=" * (4 - remainder)
    try:
        return base64.b64decode(normalized, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _attributes(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items()}
