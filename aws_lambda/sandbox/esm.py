"""Drive a Lambda handler the way the SQS event source mapping does, against a real queue
(``adder sandbox aws``, the tests).

Receive a batch, build the SQS event Lambda would build, call the handler, delete the records
it did not report as failures, and leave the failures to reappear after the visibility
timeout (the queue's redrive policy moves them to the dead-letter queue in the end).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

Handler = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]


class LambdaContext:
    """The part of Lambda's context object the handler reads: the time left."""

    function_name = "adder-worker"
    aws_request_id = "local-esm"

    def __init__(self, timeout_ms: int) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class MappingStats:
    """What the mapping saw: invocations, records delivered, deleted, and left to retry."""

    invocations: int = 0
    delivered: int = 0
    deleted: int = 0
    retried: int = 0
    failed_invocations: int = 0


def to_event_record(message: MessageTypeDef, queue_arn: str) -> dict[str, Any]:
    """The record Lambda builds for one received SQS message."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


class EventSourceMapping:
    """A local stand-in for Lambda's poller: same event, same delete/retry contract."""

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        function_timeout_ms: int = 30_000,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.function_timeout_ms = function_timeout_ms
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.stats = MappingStats()
        self._lock = threading.Lock()

    def _receive_batch(self) -> list[MessageTypeDef]:
        messages: list[MessageTypeDef] = []
        while len(messages) < self.batch_size:
            received = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not received:
                break
            messages += received
        return messages

    def poll_once(self) -> int:
        """One receive-invoke-delete round; returns how many records were delivered."""
        messages = self._receive_batch()
        if not messages:
            return 0
        event = {"Records": [to_event_record(m, self.queue_arn) for m in messages]}
        try:
            response = self.handler(event, LambdaContext(self.function_timeout_ms))
        except Exception:
            with self._lock:  # a failed invocation: every record returns to the queue
                self.stats.invocations += 1
                self.stats.failed_invocations += 1
                self.stats.delivered += len(messages)
                self.stats.retried += len(messages)
            return len(messages)
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done[start : start + 10])
                ],
            )
        with self._lock:
            self.stats.invocations += 1
            self.stats.delivered += len(messages)
            self.stats.deleted += len(done)
            self.stats.retried += len(messages) - len(done)
        return len(messages)

    def queue_is_empty(self) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]) == 0
            and int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0
        )

    def _settled_empty(self) -> bool:
        # Queue counts are approximate (and cached briefly by the test server): believe an
        # empty queue only when it still looks empty a moment later.
        if not self.queue_is_empty():
            return False
        time.sleep(0.3)
        return self.queue_is_empty()

    def drain(self, *, pollers: int = 1, timeout: float = 300.0) -> MappingStats:
        """Poll with ``pollers`` threads until the queue holds no message at all."""
        deadline = time.monotonic() + timeout
        errors: list[BaseException] = []

        def poll() -> None:
            try:
                while time.monotonic() < deadline:
                    if self.poll_once() == 0:
                        if self._settled_empty():
                            return
                        time.sleep(0.2)  # failures are invisible until their timeout ends
            except BaseException as exc:  # surface poller crashes in the test
                errors.append(exc)

        threads = [threading.Thread(target=poll, name=f"esm-poller-{i}") for i in range(pollers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        if not self.queue_is_empty():
            raise TimeoutError(f"queue not drained within {timeout:.0f}s")
        return self.stats
