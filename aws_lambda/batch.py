"""One SQS batch: every record through core, concurrently, with a deadline; partial failures."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from aws_lambda.envelope import SqsMessage, decode_sqs_record
from core.delivery import Delivery, deliver
from core.errors import AdderError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
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
        logger.warning(
            "not started: invocation deadline near",
            extra={"message_id": message.message_id, "outcome": NOT_STARTED},
        )
        return RecordResult(message, retry=True)
    delivery = Delivery(message.body, message.message_id, message.receive_count)
    return RecordResult(message, retry=deliver(delivery, store, _emit).retry)


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
) -> PartialBatchResponse:
    """Run every record (through ``executor`` when given) and list those to retry."""

    def run(record: Mapping[str, Any]) -> RecordResult:
        return handle_record(record, store, remaining_ms, margin_ms)

    if executor is None or len(records) <= 1:
        results = [run(record) for record in records]
    else:
        results = list(executor.map(run, records))
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
