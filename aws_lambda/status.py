"""``adder status aws`` and ``adder redrive aws``: queue depths, result counts, DLQ redrive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )


@dataclass
class QueueDepth:
    """Approximate message counts of one queue (SQS reports them eventually consistent)."""

    visible: int
    in_flight: int
    delayed: int


def queue_depth(client: SQSClient, queue_url: str) -> QueueDepth:
    """The approximate visible, in-flight and delayed message counts of ``queue_url``."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def count_records(client: S3Client, bucket: str, prefix: str) -> tuple[int, int]:
    """How many results (``.out``) and error records (``.err``) lie under ``prefix``."""
    prefix = prefix.strip("/")
    results = errors = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith(RESULT_SUFFIX):
                results += 1
            elif key.endswith(ERROR_SUFFIX):
                errors += 1
    return results, errors


def redrive(client: SQSClient, dead_letter_url: str, queue_url: str, *, idle_polls: int = 3) -> int:
    """Move every message of the dead-letter queue back onto the task queue; return how many.

    Each message is sent to the task queue before it is deleted from the DLQ, so a failure
    in between can duplicate a message but never lose one (results are idempotent).
    """
    moved = 0
    idle = 0
    while idle < idle_polls:
        received = client.receive_message(
            QueueUrl=dead_letter_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
        ).get("Messages", [])
        if not received:
            idle += 1
            continue
        idle = 0
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "MessageBody": message["Body"]} for i, message in enumerate(received)
        ]
        sent = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        ok = {int(entry["Id"]) for entry in sent.get("Successful", [])}
        to_delete: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": received[i]["ReceiptHandle"]} for i in sorted(ok)
        ]
        if to_delete:
            client.delete_message_batch(QueueUrl=dead_letter_url, Entries=to_delete)
        moved += len(ok)
    return moved
