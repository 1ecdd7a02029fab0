"""One Service Bus message through the core pipeline: decode, process, log one line.

Kept apart from ``function_app.py`` so that the same code runs from the repository and from the
root of the deployment zip, and so that it can be tested without the Functions host.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.delivery import Delivery, deliver, platform_count, platform_text
from core.jsontext import json_line
from core.ports import LazyResultStore

if TYPE_CHECKING:
    from collections.abc import Callable

    import azure.functions as func

    from core.outcome import Outcome
    from core.ports import ResultStore

LOGGER = logging.getLogger("azure_function")


def decode_servicebus_message(msg: func.ServiceBusMessage) -> Delivery:
    """The message's body bytes, id and delivery count (1 on the first delivery).

    A body the binding cannot hand over becomes ``b""``: the pipeline then records the message
    as a bad task (``invalid-<sha256>.err``) instead of dropping it.
    """
    return Delivery(
        body=_body_bytes(msg),
        message_id=platform_text(getattr(msg, "message_id", None)),
        attempt=platform_count(getattr(msg, "delivery_count", None)),
    )


def handle_message(
    msg: func.ServiceBusMessage,
    store: Callable[[], ResultStore],
    *,
    logger: logging.Logger = LOGGER,
) -> Outcome:
    """Process one message; core logs how it ended.

    Returns for a success or a bad task (the host completes the message). Re-raises
    :class:`~core.errors.StoreWriteError` and anything unexpected (the host abandons the
    message; Service Bus redelivers it and dead-letters it at the queue's max delivery count).
    ``store`` is called for the results store, so that a store that cannot be configured is
    logged like any other failure.
    """
    delivery = decode_servicebus_message(msg)

    def emit(level: int, text: str, fields: dict[str, object]) -> None:
        logger.log(level, json_line(fields))  # the Functions host keeps the message text only

    return deliver(delivery, LazyResultStore(store), emit).outcome_or_raise()


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
