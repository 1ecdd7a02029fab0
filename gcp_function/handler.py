"""One Pub/Sub delivery end to end: decode, run the core pipeline, log one line, or raise.

Returning means "acknowledge" (the task succeeded or was rejected with its error record
written); raising means "redeliver" (the function answers 500, Pub/Sub retries with backoff
and finally dead-letters the message). Either way exactly one JSON line is logged, and a
failure's line carries its stack trace: callers must not log it again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from core.observe import outcome_fields
from core.outcome import Outcome, OutcomeKind
from core.worker import process_message, reject
from gcp_function.envelope import (
    NO_DELIVERY,
    UndecodableMessageError,
    decode_pubsub_event,
    decode_request,
)
from gcp_function.logs import LOGGER_NAME

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cloudevents.sdk.types import SupportsDuplicateItems

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
    started = time.perf_counter()
    message = NO_DELIVERY
    try:
        try:
            message = decode()
        except UndecodableMessageError as rejection:
            message = rejection.delivery
            outcome = reject(rejection, rejection.raw, store)
        else:
            outcome = process_message(message.raw, store)
    except Exception as error:
        _log(None, message, started, error)
        raise
    _log(outcome, message, started)
    return outcome


def _log(
    outcome: Outcome | None,
    message: PubsubMessage,
    started: float,
    error: BaseException | None = None,
) -> None:
    fields = outcome_fields(
        outcome,
        message_id=message.message_id,
        seconds=time.perf_counter() - started,
        error=error,
        delivery_attempt=message.delivery_attempt,
        subscription=message.subscription,
    )
    what = f"message {message.message_id}" if message.message_id else "request without a message"
    if outcome is None:
        text = f"{what} failed and will be redelivered: {error}"
        LOGGER.error(text, exc_info=error, extra={"fields": fields})
    elif outcome.kind is OutcomeKind.REJECTED:
        text = f"{what} rejected ({outcome.code}): {outcome.reason}; wrote {outcome.name}.err"
        LOGGER.warning(text, extra={"fields": fields})
    else:
        LOGGER.info(f"task {outcome.task_id} {outcome.kind.value}", extra={"fields": fields})
