"""SQS event records: what the Lambda handler needs from each one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from core.delivery import platform_count


class SqsMessage(NamedTuple):
    """One record of an SQS event: its id (for batchItemFailures), body and receive count."""

    message_id: str | None
    body: str
    receive_count: int | None


def decode_sqs_record(record: Mapping[str, Any]) -> SqsMessage:
    """The task body and identity of one SQS record.

    A missing or non-string body decodes to ``""``, which core rejects as an empty task (an
    error record is written): a malformed record is recorded, never dropped.
    """
    body = record.get("body")
    attributes = record.get("attributes")
    count = attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
    message_id = record.get("messageId")
    return SqsMessage(
        message_id=message_id if isinstance(message_id, str) and message_id else None,
        body=body if isinstance(body, str) else "",
        receive_count=platform_count(count),
    )


def sqs_records(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The records of an SQS event; raises ValueError for anything that is not one."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        raise ValueError("not an SQS event: no 'Records' list")
    return records
