"""``adder status aws``: queue depths and result counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


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
