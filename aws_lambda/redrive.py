"""``adder redrive aws``: move dead-lettered messages back onto the task queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )


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
