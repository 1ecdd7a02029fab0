"""One Pub/Sub delivery end to end: decode, run the core pipeline, log one line, or raise.

Returning means "acknowledge" (the task succeeded or was rejected with its error record
written); raising means "redeliver" (functions-framework answers 500, Pub/Sub retries with
backoff and finally dead-letters the message).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from core.observe import outcome_fields
from core.outcome import Outcome, OutcomeKind
from core.worker import process_message, reject
from gcp_function.envelope import UndecodableMessageError, decode_pubsub_event
from gcp_function.logs import LOGGER_NAME

if TYPE_CHECKING:
    from collections.abc import Mapping

    from core.ports import ResultStore
    from gcp_function.envelope import CloudEventLike, PubsubMessage

LOGGER = logging.getLogger(LOGGER_NAME)


def handle_event(
    event: CloudEventLike, store: ResultStore, push_body: Mapping[str, object] | None = None
) -> Outcome:
    """Handle one CloudEvent; raise (after logging) when the message must be redelivered."""
    started = time.perf_counter()
    rejection: UndecodableMessageError | None = None
    try:
        message = decode_pubsub_event(event, push_body)
    except UndecodableMessageError as error:
        message, rejection = error.delivery, error
    try:
        if rejection is None:
            outcome = process_message(message.raw, store)
        else:
            outcome = reject(rejection, rejection.raw, store)
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
    if outcome is None:
        text = f"message {message.message_id} failed and will be redelivered: {error}"
        LOGGER.error(text, extra={"fields": fields})
    elif outcome.kind is OutcomeKind.REJECTED:
        text = (
            f"message {message.message_id} rejected ({outcome.code}): {outcome.reason};"
            f" wrote {outcome.name}.err"
        )
        LOGGER.warning(text, extra={"fields": fields})
    else:
        LOGGER.info(f"task {outcome.task_id} {outcome.kind.value}", extra={"fields": fields})
