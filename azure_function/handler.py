"""Service Bus messages through the core pipeline: decode, process, log one line each.

One message per call (the default layout: one blob per task), or a batch per call (the packed
layout: one pack blob per batch, :mod:`core.packing`). Kept apart from ``function_app.py`` so
that the same code runs from the repository and from the root of the deployment zip, and so
that it can be tested without the Functions host.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.delivery import Delivery, deliver, deliver_packed, platform_count, platform_text
from core.jsontext import json_line
from core.ports import LazyResultStore, ResultStore

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import azure.functions as func

    from core.delivery import LogEmitter
    from core.outcome import Outcome

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
    return deliver(delivery, LazyResultStore(store), _emitter(logger)).outcome_or_raise()


def handle_batch(
    msgs: Sequence[func.ServiceBusMessage],
    store: Callable[[], ResultStore],
    *,
    logger: logging.Logger = LOGGER,
) -> list[Outcome]:
    """Process a batch into one pack (one blob write); core logs one line per message.

    Returns when every message is acknowledged: the host completes the whole batch. Raises
    when any message must be retried (the pack could not be written, the store cannot be
    configured, or something unexpected): the host then abandons every message of the batch,
    whatever ``autoCompleteMessages`` says (Service Bus extension 5.x, ``ServiceBusListener``:
    "For failed executions, we abandon the messages regardless of the autoCompleteMessages
    configuration"). Service Bus redelivers them and dead-letters each at the queue's max
    delivery count. Redelivered, the same batch makes the same pack (it is named by its
    content, :func:`core.packing.pack_key`), and a message regrouped into another batch puts
    the same record into another pack: readers take either.
    """
    deliveries = [decode_servicebus_message(msg) for msg in msgs]
    handled = deliver_packed(deliveries, _configured(store), _emitter(logger))
    return [item.outcome_or_raise() for item in handled]


def _emitter(logger: logging.Logger) -> LogEmitter:
    def emit(level: int, text: str, fields: dict[str, object]) -> None:
        logger.log(level, json_line(fields))  # the Functions host keeps the message text only

    return emit


class _UnconfiguredStore(ResultStore):
    """Stands for a store that could not be configured: its one write raises why."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise self.error


def _configured(store: Callable[[], ResultStore]) -> ResultStore:
    """The store, built before the batch runs: the pack's key needs its prefix. A store that
    cannot be configured fails the pack's write, so every message is logged and retried."""
    try:
        return store()
    except Exception as error:
        return _UnconfiguredStore(error)


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
