"""The AWS :class:`~core.ops.backend.JobBackend`: an SQS task queue, its dead-letter queue and
the S3 results. Every botocore error is translated by :func:`aws_lambda.job_errors.aws_error`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from aws_lambda.job_errors import aws_error, aws_resource, error_code_and_message
from aws_lambda.jobs import MAX_POOL_CONNECTIONS, ways
from core.errors import CloudUnavailableError, ConfigError
from core.ops.backend import DeadLetter, JobBackend, QueueDepth, Refused, record_from_key

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

    from core.ops.backend import RecordInfo

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
"""SendMessageBatch limits: 10 entries, and (the classic limit, accepted everywhere) 256 KiB
of bodies in all; a single message may not be larger either."""
RECEIVE_WAIT_SECONDS = 1
DEAD_LETTER_LOCK_SECONDS = 60
"""How long a received dead letter stays hidden from others while a redrive moves it."""
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character SQS refuses in a body (its allowed set is XML's); one fails the whole batch."""


def unsendable_reason(body: bytes) -> str | None:
    """Why SQS cannot take ``body`` as a message (too large, not UTF-8, empty, a character
    outside XML's set), or None."""
    if len(body) > MAX_BATCH_BYTES:
        return f"a message of {len(body):,} bytes is over SQS's limit of {MAX_BATCH_BYTES:,}"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"a message is not valid UTF-8 (byte {exc.start}); SQS carries text only"
    if not text:
        return "an empty message; SQS needs at least one character"
    bad = _NOT_SQS_TEXT.search(text)
    if bad is not None:
        return f"a message holds {bad.group()!r} at character {bad.start()}, which SQS refuses"
    return None


def _is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def _custom(client: Any) -> str | None:
    endpoint = getattr(client.meta, "endpoint_url", None)
    return str(endpoint) if endpoint and "amazonaws.com" not in endpoint else None


Kind = Literal["queue", "dead-letter queue", "bucket"]
_SERVICES: dict[Kind, str] = {"queue": "sqs", "dead-letter queue": "sqs", "bucket": "s3"}
_WAYS: dict[Kind, str] = {
    "queue": ways("queue_url"),
    "dead-letter queue": ways("dead_letter_queue_url")
    + " (default: the task queue's redrive policy)",
    "bucket": ways("bucket"),
}
"""How each is given, for the error lines' "check ..." part."""


class AwsJobBackend(JobBackend):
    """One job's SQS task queue, dead-letter queue and S3 results (``s3`` may be left out by
    a caller that only sends, e.g. ``submit(AwsJobBackend(sqs, queue_url=url), ...)``).

    ``queue_url`` may be a URL, a queue name or an ARN (resolved with GetQueueUrl on first
    use); without ``dead_letter_queue_url``, the dead-letter queue is the one the task queue's
    redrive policy names, if it has one.
    """

    max_batch_messages = MAX_BATCH_ENTRIES
    max_batch_bytes = MAX_BATCH_BYTES
    max_concurrency = MAX_POOL_CONNECTIONS
    max_fetch_concurrency = MAX_POOL_CONNECTIONS

    def __init__(
        self,
        sqs: SQSClient,
        s3: S3Client | None = None,
        *,
        queue_url: str | None = None,
        dead_letter_queue_url: str | None = None,
        bucket: str | None = None,
        prefix: str = "",
        owns_clients: bool = False,
    ) -> None:
        self.sqs = sqs
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._queue_given = queue_url
        self._dlq_given = dead_letter_queue_url
        self._queue_url: str | None = queue_url if queue_url and _is_url(queue_url) else None
        self._dlq_url: str | None = None
        self._dlq_looked_up = False
        self._owns_clients = owns_clients
        self._lock = threading.RLock()
        self._reached: set[str] = set()
        """The services that answered once: an unreachable one is a ConfigError until then."""
        self.queue_label = f"SQS queue {self._queue_url or queue_url or '(none given)'}"
        self.results_label = (
            f"s3://{bucket}/{self.prefix + '/' if self.prefix else ''}"
            if bucket
            else "(no results bucket given: --bucket)"
        )

    # --- the calls, and how their errors name what they touched ---------------------------

    @contextlib.contextmanager
    def _calling(self, kind: Kind, needs: str, key: str = "") -> Iterator[None]:
        """Translate what botocore raises inside the block for the ``kind`` the call touches
        (``needs`` is the IAM permission it takes); anything else is a bug and goes up."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._translated(exc, kind, needs, key) from exc
        self._reached.add(_SERVICES[kind])

    def _translated(
        self, exc: BotoCoreError | ClientError, kind: Kind, needs: str, key: str = ""
    ) -> ConfigError | CloudUnavailableError:
        names = {"queue": self._queue_given, "dead-letter queue": self._dlq_given or self._dlq_url}
        what = f"{_SERVICES[kind].upper()} {kind} {names.get(kind, self.bucket) or '?'}"
        if key:
            what = f"S3 object s3://{self.bucket}/{key}"
        client: Any = self._s3 if kind == "bucket" and self._s3 is not None else self.sqs
        resource = aws_resource(
            what, _WAYS[kind], needs, region=client.meta.region_name, endpoint=_custom(client)
        )
        return aws_error(exc, resource, reached=_SERVICES[kind] in self._reached)

    @property
    def s3(self) -> S3Client:
        """The S3 client (a backend made for submitting only has none)."""
        if self._s3 is None:
            raise ConfigError(
                "this backend was opened without an S3 client: it cannot read results"
            )
        return self._s3

    def task_queue_url(self) -> str:
        """The task queue's URL (GetQueueUrl once when a name or ARN was given)."""
        if self._queue_url is not None:
            return self._queue_url
        if not self._queue_given:
            raise ConfigError("this command needs the task queue: give --queue-url")
        with self._lock:
            if self._queue_url is None:
                self._queue_url = self._lookup_queue(self._queue_given, "queue")
                self.queue_label = f"SQS queue {self._queue_url}"
        return self._queue_url

    def dead_letter_queue_url(self) -> str | None:
        """The dead-letter queue's URL: the one given, else the redrive policy's, else None."""
        if self._dlq_looked_up:
            return self._dlq_url
        with self._lock:
            if not self._dlq_looked_up:
                if self._dlq_given:
                    self._dlq_url = self._lookup_queue(self._dlq_given, "dead-letter queue")
                elif self._queue_given:
                    self._dlq_url = self._dlq_from_redrive_policy()
                self._dlq_looked_up = True
        return self._dlq_url

    def _lookup_queue(self, given: str, kind: Kind) -> str:
        if _is_url(given):
            return given
        arguments: dict[str, str] = {"QueueName": given}
        if given.startswith("arn:"):
            parts = given.split(":")
            if len(parts) != 6 or parts[2] != "sqs":
                raise ConfigError(f"{given} is not an SQS queue ARN: give its URL or name")
            arguments = {"QueueName": parts[5], "QueueOwnerAWSAccountId": parts[4]}
        with self._calling(kind, "sqs:GetQueueUrl"):
            return self.sqs.get_queue_url(**arguments)["QueueUrl"]

    def _dlq_from_redrive_policy(self) -> str | None:
        url = self.task_queue_url()
        with self._calling("queue", "sqs:GetQueueAttributes"):
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        policy = attributes.get("RedrivePolicy")
        if not policy:
            return None
        try:
            arn = str(json.loads(policy)["deadLetterTargetArn"])
        except (ValueError, KeyError, TypeError):
            return None
        self._dlq_given = arn
        return self._lookup_queue(arn, "dead-letter queue")

    def check(self, command: str) -> None:
        """Fail now, with one line, if what ``command`` needs is missing or unreachable."""
        if command in {"submit", "redrive"} or (command == "status" and self._queue_given):
            url = self.task_queue_url()
            needs = "sqs:GetQueueAttributes"
            if command == "submit":
                needs += " and sqs:SendMessage"
            with self._calling("queue", needs):
                self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        if command in {"redrive", "watch", "status"}:
            dlq = self.dead_letter_queue_url()
            if dlq is None and command == "redrive":
                raise ConfigError(
                    f"adder redrive aws needs the dead-letter queue: give --dead-letter-queue-url"
                    f" (the task queue {self.task_queue_url()} has no redrive policy)"
                )
            if dlq is not None and command == "redrive":
                with self._calling("dead-letter queue", "sqs:GetQueueAttributes"):
                    self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])

    # --- the port ------------------------------------------------------------------------

    def unsendable(self, body: bytes) -> str | None:
        """Why SQS can never take ``body`` (see :func:`unsendable_reason`)."""
        return unsendable_reason(body)

    def send_batch(self, bodies: Sequence[bytes]) -> list[Refused]:
        """One SendMessageBatch; the entries SQS reports failed come back as Refused."""
        url = self.task_queue_url()
        refused: list[Refused] = []
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for index, body in enumerate(bodies):
            reason = unsendable_reason(body)
            if reason is not None:
                refused.append(Refused(index, reason, retry=False))
            else:
                entries.append({"Id": str(index), "MessageBody": body.decode("utf-8")})
        if not entries:
            return refused
        with self._calling("queue", "sqs:SendMessage"):
            response = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        for failed in response.get("Failed", []):
            reason = f"refused by SQS: {failed.get('Code')}: {failed.get('Message', '')}"
            retry = not failed.get("SenderFault", False)
            refused.append(Refused(int(failed["Id"]), reason.rstrip(": "), retry=retry))
        return sorted(refused, key=lambda refusal: refusal.index)

    def list_records(self) -> Iterator[RecordInfo]:
        """Every ``.out``, ``.err`` and pack under the prefix: one ListObjectsV2 per 1,000 keys."""
        if not self.bucket:
            return
        start = f"{self.prefix}/" if self.prefix else ""
        with self._calling("bucket", "s3:ListBucket"):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", []):
                    etag = item.get("ETag", "").strip('"')
                    md5 = etag if len(etag) == 32 and "-" not in etag else None
                    record = record_from_key(item["Key"], self.prefix, item.get("Size", 0), md5)
                    if record is not None:
                        yield record

    def read_record(self, record: RecordInfo) -> bytes:
        """GetObject of the record's key, read whole."""
        try:
            return self.s3.get_object(Bucket=str(self.bucket), Key=record.key)["Body"].read()
        except ClientError as exc:
            if error_code_and_message(exc.response)[0] in {"NoSuchKey", "404"}:
                # deleted since it was listed: a failure of this record only
                raise CloudUnavailableError(
                    f"S3 object s3://{self.bucket}/{record.key} is gone since it was listed"
                ) from exc
            raise self._translated(exc, "bucket", "s3:GetObject", record.key) from exc
        except BotoCoreError as exc:
            raise self._translated(exc, "bucket", "s3:GetObject", record.key) from exc

    def dead_letter_count(self) -> int | None:
        """Messages in the dead-letter queue, waiting or locked; None without one."""
        url = self.dead_letter_queue_url()
        if url is None:
            return None
        attributes = self._attributes(url, "dead-letter queue")
        return attributes.get("ApproximateNumberOfMessages", 0) + attributes.get(
            "ApproximateNumberOfMessagesNotVisible", 0
        )

    def queue_depth(self) -> QueueDepth:
        """The task queue's waiting (visible or delayed) and in-flight message counts."""
        if not self._queue_given:
            return QueueDepth(None, None)
        attributes = self._attributes(self.task_queue_url(), "queue")
        waiting = attributes.get("ApproximateNumberOfMessages", 0) + attributes.get(
            "ApproximateNumberOfMessagesDelayed", 0
        )
        return QueueDepth(waiting, attributes.get("ApproximateNumberOfMessagesNotVisible", 0))

    def _attributes(self, url: str, kind: Kind) -> dict[str, int]:
        with self._calling(kind, "sqs:GetQueueAttributes"):
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            ).get("Attributes", {})
        return {name: int(value) for name, value in attributes.items()}

    def _required_dlq(self) -> str:
        url = self.dead_letter_queue_url()
        if url is None:
            raise ConfigError(
                "no dead-letter queue: give --dead-letter-queue-url (or a task queue with a"
                " redrive policy)"
            )
        return url

    def receive_dead_letters(self, max_messages: int) -> list[DeadLetter]:
        """ReceiveMessage on the dead-letter queue: up to 10, locked for 60 s, 1 s long poll."""
        url = self._required_dlq()
        with self._calling("dead-letter queue", "sqs:ReceiveMessage"):
            messages = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(max_messages, MAX_BATCH_ENTRIES)),
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                VisibilityTimeout=DEAD_LETTER_LOCK_SECONDS,
            ).get("Messages", [])
        return [
            DeadLetter(message["Body"].encode("utf-8", "surrogatepass"), message["ReceiptHandle"])
            for message in messages
        ]

    def delete_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """DeleteMessageBatch, 10 at a time; a CloudUnavailableError if some were not deleted
        (they come back after their lock and are redriven again: a duplicate, not a loss)."""
        url = self._required_dlq()
        failed = 0
        for start in range(0, len(letters), MAX_BATCH_ENTRIES):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": str(letter.handle)}
                for i, letter in enumerate(letters[start : start + MAX_BATCH_ENTRIES])
            ]
            with self._calling("dead-letter queue", "sqs:DeleteMessage"):
                response = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            failed += len(response.get("Failed", []))
        if failed:
            raise CloudUnavailableError(
                f"{failed} dead letters were sent again but not deleted from {url}; they will be"
                " redriven again (a duplicate, not a loss)"
            )

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """ChangeMessageVisibilityBatch to 0, 10 at a time; on failure their lock expires."""
        url = self.dead_letter_queue_url()
        if url is None:
            return
        for start in range(0, len(letters), MAX_BATCH_ENTRIES):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": str(letter.handle), "VisibilityTimeout": 0}
                for i, letter in enumerate(letters[start : start + MAX_BATCH_ENTRIES])
            ]
            with contextlib.suppress(BotoCoreError, ClientError):
                self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)

    def close(self) -> None:
        """Close the clients' connection pools when this backend created them."""
        if self._owns_clients:
            self.sqs.close()
            if self._s3 is not None:
                self._s3.close()
