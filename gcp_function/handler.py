"""One Pub/Sub delivery end to end: decode, hand it to core's delivery pipeline, or raise.

Returning means "acknowledge" (the task succeeded or was rejected with its error record
written); raising means "redeliver" (the function answers 500, Pub/Sub retries with backoff
and finally dead-letters the message). Either way core logs exactly one JSON line, and a
failure's line carries its stack trace: callers must not log it again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.delivery import Delivery, deliver
from gcp_function.envelope import UndecodableMessageError, decode_pubsub_event, decode_request
from gcp_function.logs import LOGGER_NAME

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cloudevents.sdk.types import SupportsDuplicateItems

    from core.outcome import Outcome
    from core.ports import ResultStore
    from gcp_function.envelope import CloudEventLike, PubsubMessage

LOGGER = logging.getLogger(LOGGER_NAME)


def handle_request(
    headers: Mapping[str, str] | SupportsDuplicateItems[str, str], body: bytes, store: ResultStore
) -> Outcome:
    """Handle one HTTP delivery (a raw push or a CloudEvent), as it arrived."""
    return _handle(lambda: decode_request(headers, body), store)


def handle_event(
    event: CloudEventLike, store: ResultStore, push_body: Mapping[str, object] | None = None
) -> Outcome:
    """Handle one parsed CloudEvent; raise (after logging) when it must be redelivered."""
    return _handle(lambda: decode_pubsub_event(event, push_body), store)


def _handle(decode: Callable[[], PubsubMessage], store: ResultStore) -> Outcome:
    try:
        delivery = _delivery(decode())
    except UndecodableMessageError as rejection:
        delivery = _delivery(rejection.delivery)._replace(body=rejection.raw, undecodable=rejection)
    return deliver(delivery, store, _emit).outcome_or_raise()


def _delivery(message: PubsubMessage) -> Delivery:
    return Delivery(
        message.raw,
        message.message_id,
        message.delivery_attempt,
        {"subscription": message.subscription},
    )


def _emit(level: int, text: str, fields: dict[str, object]) -> None:
    """Cloud Logging's format: see :class:`gcp_function.logs.CloudLoggingFormatter`."""
    LOGGER.log(level, text, extra={"fields": fields})
