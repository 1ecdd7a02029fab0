"""One SQS batch: every record through core, with a deadline; partial failures.

Two layouts (``core.packing``): per task, records run concurrently and each writes its own
object; packed, the batch runs through ``core.delivery.deliver_packed`` and writes one object
for the whole batch, so a failed write returns every record that would have been
acknowledged to the queue.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from aws_lambda.envelope import SqsMessage, decode_sqs_record
from core.delivery import Delivery, deliver, deliver_packed
from core.errors import AdderError
from core.packing import ResultsLayout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from concurrent.futures import Executor

    from core.ports import ResultStore

logger = logging.getLogger("aws_lambda")

NOT_STARTED = "not_started"


class BatchItemFailure(TypedDict):
    """One entry of the partial batch response."""

    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    """What the handler returns; Lambda deletes every record not listed here."""

    batchItemFailures: list[BatchItemFailure]


class RecordResult(NamedTuple):
    """How one record ended: ``retry`` is true when it must go back to the queue."""

    message: SqsMessage
    retry: bool


class UnreportableFailureError(AdderError):
    """A record that must be retried has no messageId, so only failing the batch retries it."""


def handle_record(
    record: Mapping[str, Any],
    store: ResultStore,
    remaining_ms: Callable[[], float],
    margin_ms: float,
) -> RecordResult:
    """Process one record, unless the invocation is about to run out of time."""
    message = decode_sqs_record(record)
    if remaining_ms() < margin_ms:
        return _not_started(message)
    delivery = Delivery(message.body, message.message_id, message.receive_count)
    return RecordResult(message, retry=deliver(delivery, store, _emit).retry)


def handle_packed(
    records: Sequence[Mapping[str, Any]],
    store: ResultStore,
    remaining_ms: Callable[[], float],
    margin_ms: float,
) -> list[RecordResult]:
    """Process the whole batch into one pack (one write), unless the invocation is about to
    run out of time: then no record starts and every one is retried."""
    messages = [decode_sqs_record(record) for record in records]
    if not messages:
        return []
    if remaining_ms() < margin_ms:
        return [_not_started(message) for message in messages]
    deliveries = [Delivery(m.body, m.message_id, m.receive_count) for m in messages]
    handled = deliver_packed(deliveries, store, _emit)
    return [
        RecordResult(message, retry=item.retry)
        for message, item in zip(messages, handled, strict=True)
    ]


def _not_started(message: SqsMessage) -> RecordResult:
    logger.warning(
        "not started: invocation deadline near",
        extra={"message_id": message.message_id, "outcome": NOT_STARTED},
    )
    return RecordResult(message, retry=True)


def _emit(level: int, text: str, fields: dict[str, object]) -> None:
    """Lambda's JSON log format puts ``extra`` fields at the top level of the line."""
    logger.log(level, text, extra=fields)


def process_batch(
    records: Sequence[Mapping[str, Any]],
    store: ResultStore,
    *,
    executor: Executor | None,
    remaining_ms: Callable[[], float],
    margin_ms: float,
    layout: ResultsLayout = ResultsLayout.PER_TASK,
) -> PartialBatchResponse:
    """Run every record (per task: through ``executor`` when given; packed: into one pack)
    and list those to retry."""
    if layout is ResultsLayout.PACKED:
        return partial_batch_response(handle_packed(records, store, remaining_ms, margin_ms))

    def run(record: Mapping[str, Any]) -> RecordResult:
        return handle_record(record, store, remaining_ms, margin_ms)

    if executor is None or len(records) <= 1:
        results = [run(record) for record in records]
    else:
        results = list(executor.map(run, records))
    return partial_batch_response(results)


def partial_batch_response(results: Iterable[RecordResult]) -> PartialBatchResponse:
    """The records to retry, by messageId; a retry without one fails the whole batch."""
    failures: list[BatchItemFailure] = []
    for result in results:
        if not result.retry:
            continue
        if result.message.message_id is None:
            raise UnreportableFailureError(
                "a record without messageId failed; failing the whole batch so it is retried"
            )
        failures.append({"itemIdentifier": result.message.message_id})
    return {"batchItemFailures": failures}
