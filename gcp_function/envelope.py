"""Pub/Sub envelope decoding: one HTTP delivery (or a CloudEvent) in, task bytes out.

:func:`decode_request` takes the request's headers and body as they arrived, so that every
delivery reaches the function, whatever its shape:

* a CloudEvent in structured or binary mode (Eventarc): ``data`` is
  ``{"message": {...}, "subscription": "..."}`` (the ``MessagePublishedData`` schema);
* anything else is read as the raw body of a push subscription,
  ``{"message": {...}, "subscription": "...", "deliveryAttempt": n}``, decoded directly
  (functions-framework's own conversion refuses a message without data, and drops
  ``subscription`` and ``deliveryAttempt``).

``message.data`` is base64 (standard or URL-safe alphabet, padding optional). A message
without data, with data that is not base64, a body that is not JSON, a JSON body without a
``message`` object, or a CloudEvent without data or that cannot be parsed raises
:class:`UndecodableMessageError`: a bad task whose error record holds what did arrive, so
nothing is lost and the message is acknowledged instead of redelivered forever.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from cloudevents.exceptions import GenericException, InvalidRequiredFields, MissingRequiredFields
from cloudevents.http import from_http

from core.delivery import platform_count
from core.errors import InvalidTaskError

INVALID_ENVELOPE = "invalid_envelope"
"""Error code of a message the function cannot get task bytes out of."""


if TYPE_CHECKING:
    from typing import Protocol

    from cloudevents.sdk.types import SupportsDuplicateItems

    class CloudEventLike(Protocol):
        """What is read from a ``cloudevents.http.CloudEvent``."""

        data: object

        def get(self, key: str, default: object = None) -> object:
            """A CloudEvent attribute such as ``id``."""

        def get_attributes(self) -> Mapping[str, object]:
            """Every attribute (``id``, ``source``, ``type``, ``time``, ...)."""


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


NO_DELIVERY = PubsubMessage(b"", None, {}, None, None)
"""What is known of a delivery whose body is not a Pub/Sub message at all."""

_UNPARSABLE = (GenericException, ValueError, TypeError, AttributeError, KeyError, RecursionError)
"""What the CloudEvents SDK raises for a body it cannot parse (seen: a list as specversion
gives TypeError, a deeply nested body RecursionError)."""


def decode_request(
    headers: Mapping[str, str] | SupportsDuplicateItems[str, str], body: bytes
) -> PubsubMessage:
    """The Pub/Sub message of one HTTP delivery: a CloudEvent, else a raw push body.

    Raises :class:`UndecodableMessageError` when there is none; it never echoes ``headers``.
    """
    try:
        event = from_http(headers, body)
    except (MissingRequiredFields, InvalidRequiredFields):
        # no (valid) specversion: not a CloudEvent, as functions-framework decides too
        return decode_push_body(body)
    except _UNPARSABLE as exc:
        raise UndecodableMessageError(
            f"request body cannot be parsed as a CloudEvent ({type(exc).__name__})",
            body,
            NO_DELIVERY,
        ) from None
    return decode_pubsub_event(event)


def decode_push_body(body: bytes) -> PubsubMessage:
    """The message of a push subscription's request body (``message``, ``subscription``,
    ``deliveryAttempt``).

    >>> body = b'{"message": {"data": "eyJpZCI6ICJ0MSJ9"}, "deliveryAttempt": 3}'
    >>> message = decode_push_body(body)
    >>> message.raw, message.delivery_attempt
    (b'{"id": "t1"}', 3)
    """
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise UndecodableMessageError(
            "request body is not JSON: neither a Pub/Sub push nor a CloudEvent", body, NO_DELIVERY
        ) from None
    if not isinstance(envelope, Mapping):
        raise UndecodableMessageError(
            f"request body is a JSON {type(envelope).__name__}, not a Pub/Sub push",
            body,
            NO_DELIVERY,
        )
    return _decode_envelope(envelope, envelope, None)


def decode_pubsub_event(
    event: CloudEventLike, push_body: Mapping[str, object] | None = None
) -> PubsubMessage:
    """The Pub/Sub message carried by ``event``.

    Raises :class:`UndecodableMessageError` when it carries no usable ``message.data``; for an
    event with no data at all, the error's ``raw`` is the event's attributes but ``time``.

    >>> from cloudevents.http import CloudEvent
    >>> attributes = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "s"}
    >>> data = {"message": {"data": "eyJpZCI6ICJ0MSJ9", "messageId": "7"}}
    >>> decode_pubsub_event(CloudEvent(attributes, data)).raw
    b'{"id": "t1"}'
    """
    data = event.data
    event_id = _text(event.get("id"))
    if data is None:
        # id and source identify an event; time is left out: the SDK makes one up when the
        # sender sent none, which would give every redelivery a record of its own
        kept = {key: value for key, value in event.get_attributes().items() if key != "time"}
        raise UndecodableMessageError(
            "event has no data, not a Pub/Sub message",
            kept,
            NO_DELIVERY._replace(message_id=event_id),
        )
    if not isinstance(data, Mapping):
        raise UndecodableMessageError(
            f"event has {type(data).__name__} data, not a Pub/Sub message",
            data,
            NO_DELIVERY._replace(message_id=event_id),
        )
    return _decode_envelope(data, push_body or {}, event_id)


def _decode_envelope(
    envelope: Mapping[str, object], push: Mapping[str, object], event_id: str | None
) -> PubsubMessage:
    """Decode ``{"message": {...}, "subscription": ...}``; ``push`` is the raw push body."""
    message = envelope.get("message")
    if not isinstance(message, Mapping):
        message = {}
    delivery = PubsubMessage(
        raw=b"",
        message_id=_text(message.get("messageId")) or _text(message.get("message_id")) or event_id,
        attributes=_attributes(message.get("attributes")),
        subscription=_text(envelope.get("subscription")) or _text(push.get("subscription")),
        delivery_attempt=platform_count(push.get("deliveryAttempt"))
        or platform_count(envelope.get("deliveryAttempt")),
    )
    if not message:
        raise UndecodableMessageError(
            "no 'message' object: not a Pub/Sub message envelope", envelope, delivery
        )
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


def _attributes(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    # Pub/Sub's attributes are strings; a container is skipped (its text could be huge or,
    # nested deeply enough, overflow the stack)
    scalars = (str, int, float, bool)
    return {str(key): str(item) for key, item in value.items() if isinstance(item, scalars)}
