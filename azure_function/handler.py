"""One Service Bus message through the core pipeline: decode, process, log one line.

Kept apart from ``function_app.py`` so that the same code runs from the repository and from the
root of the deployment zip, and so that it can be tested without the Functions host.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.jsontext import json_line
from core.observe import outcome_fields
from core.outcome import OutcomeKind
from core.worker import process_message

if TYPE_CHECKING:
    from collections.abc import Callable

    import azure.functions as func

    from core.outcome import Outcome
    from core.ports import ResultStore

LOGGER = logging.getLogger("azure_function")

_LEVELS = {OutcomeKind.SUCCEEDED: logging.INFO, OutcomeKind.REJECTED: logging.WARNING}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the pipeline needs from one Service Bus message."""

    body: bytes
    message_id: str | None
    delivery_count: int | None


def decode_servicebus_message(msg: func.ServiceBusMessage) -> Delivery:
    """The message's body bytes, id and delivery count (1 on the first delivery).

    A body the binding cannot hand over becomes ``b""``: the pipeline then records the message
    as a bad task (``invalid-<sha256>.err``) instead of dropping it.
    """
    return Delivery(
        body=_body_bytes(msg),
        message_id=_optional_text(getattr(msg, "message_id", None)),
        delivery_count=_optional_int(getattr(msg, "delivery_count", None)),
    )


def handle_message(
    msg: func.ServiceBusMessage,
    store: Callable[[], ResultStore],
    *,
    logger: logging.Logger = LOGGER,
) -> Outcome:
    """Process one message and log how it ended.

    Returns for a success or a bad task (the host completes the message). Re-raises
    :class:`~core.errors.StoreWriteError` and anything unexpected (the host abandons the
    message; Service Bus redelivers it and dead-letters it at the queue's max delivery count).
    ``store`` is called for the results store, so that a store that cannot be configured is
    logged like any other failure.
    """
    started = time.perf_counter()
    delivery = decode_servicebus_message(msg)
    try:
        outcome = process_message(delivery.body, store())
    except Exception as exc:
        _log(logger, logging.ERROR, outcome=None, delivery=delivery, started=started, error=exc)
        raise
    level = _LEVELS.get(outcome.kind, logging.INFO)
    _log(logger, level, outcome=outcome, delivery=delivery, started=started, error=None)
    return outcome


def _log(
    logger: logging.Logger,
    level: int,
    *,
    outcome: Outcome | None,
    delivery: Delivery,
    started: float,
    error: BaseException | None,
) -> None:
    fields = outcome_fields(
        outcome,
        message_id=delivery.message_id,
        seconds=time.perf_counter() - started,
        error=error,
        delivery_count=delivery.delivery_count,
    )
    logger.log(level, json_line(fields))


def _body_bytes(msg: func.ServiceBusMessage) -> bytes:
    try:
        body: object = msg.get_body()
    except Exception:  # an unreadable body is a bad task, recorded as empty
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return b"" if body is None else str(body).encode("utf-8", "surrogatepass")


def _optional_text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _optional_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
