"""The SQS adapter of the worker's receiver port (:class:`core.worker.port.Receiver`), and the
AWS worker's binding: an :class:`SqsReceiver` on the config's queue and the functions' own
:class:`~aws_lambda.s3_store.S3ResultStore` on its bucket (``adder work`` on ``provider: aws``).

- receive: ``ReceiveMessage`` long poll (up to 10 messages, up to 20 s), with each message's
  ``ApproximateReceiveCount`` (the task's ``delivery_attempt``);
- extend and release: ``ChangeMessageVisibilityBatch`` (release: visibility 0, or the retry
  delay), up to 10 a call;
- acknowledge: ``DeleteMessageBatch``, up to 10 a call; entries SQS refuses are returned.

The lease is the queue's ``VisibilityTimeout`` (read once with ``GetQueueAttributes``). IAM
the worker needs: ``sqs:GetQueueUrl``, ``sqs:GetQueueAttributes``, ``sqs:ReceiveMessage``,
``sqs:ChangeMessageVisibility``, ``sqs:DeleteMessage`` on the queue, ``s3:PutObject`` on the
results prefix (and ``kms:Decrypt``/``kms:GenerateDataKey`` with a customer-managed key).
Every botocore error is sorted by :func:`aws_lambda.job_errors.aws_error`: a ConfigError
(no queue, access denied, no credentials) stops the worker with one line; throttling and
5xx are CloudUnavailableError, retried by the worker.

:func:`prepare_notice_poller` (``adder work``'s notice hook): after an Auto Scaling
termination notice and the drain, the group's lifecycle action is completed
(:mod:`aws_lambda.autoscaling_lifecycle`, ``config.lifecycle_hook`` and
``config.autoscaling_group``).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from aws_lambda.autoscaling_lifecycle import LifecycleCompleter
from aws_lambda.job_errors import aws_error
from aws_lambda.s3_store import S3ResultStore, default_client_config
from core.delivery import platform_count
from core.errors import ConfigError
from core.ops.problems import Resource, one_line
from core.worker.loop import MAX_POLLERS
from core.worker.notices import AWS_AUTOSCALING_SOURCE, Ec2NoticePoller
from core.worker.port import ReceivedMessage, Receiver

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
    )

    from core.worker.command import WorkerConfig
    from core.worker.notices import NoticePoller

MAX_BATCH = 10
"""ReceiveMessage, DeleteMessageBatch and ChangeMessageVisibilityBatch take up to 10."""
MAX_WAIT_SECONDS = 20
SDK_ATTEMPTS = 3
CONNECT_TIMEOUT_SECONDS = 3
SQS_READ_TIMEOUT_SECONDS = MAX_WAIT_SECONDS + 10
"""Above the longest long poll, so a quiet queue is not a read timeout."""


class SqsReceiver(Receiver):
    """One SQS queue, seen by one worker process (thread-safe: boto3 clients are)."""

    max_batch = MAX_BATCH

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        *,
        lease_seconds: float,
        where: str = "the config file",
        owns_client: bool = False,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.lease_seconds = lease_seconds
        self.describe = f"SQS queue {queue_url}"
        self._where = where
        self._owns_client = owns_client
        self._reached = True  # opened by for_queue, which reached it

    @classmethod
    def for_queue(
        cls,
        sqs: SQSClient,
        queue: str,
        *,
        where: str = "the config file",
        owns_client: bool = False,
    ) -> SqsReceiver:
        """The receiver of ``queue`` (a URL or a name: GetQueueUrl), its lease read from the
        queue's VisibilityTimeout."""
        probe = cls(sqs, queue, lease_seconds=30, where=where)
        probe._reached = False
        with probe._calling("sqs:GetQueueUrl"):
            url = queue if queue.startswith(("https://", "http://")) else None
            if url is None:
                url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        probe.queue_url = url
        with probe._calling("sqs:GetQueueAttributes"):
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["VisibilityTimeout"]
            ).get("Attributes", {})
        lease = float(attributes.get("VisibilityTimeout") or 30)
        return cls(sqs, url, lease_seconds=max(1.0, lease), where=where, owns_client=owns_client)

    @contextlib.contextmanager
    def _calling(self, needs: str) -> Iterator[None]:
        """Translate botocore's errors raised in the block (``needs``: the IAM action)."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            endpoint = getattr(self.sqs.meta, "endpoint_url", None)
            custom = endpoint if endpoint and "amazonaws.com" not in endpoint else None
            place = f" in region {self.sqs.meta.region_name}" + (f" at {custom}" if custom else "")
            settings = "queue_name, config.region" + (" and config.endpoint_url" if custom else "")
            resource = Resource(
                f"SQS queue {self.queue_url}{place}",
                f"check {settings} in {self._where}",
                f"{needs} on it",
            )
            raise aws_error(exc, resource, reached=self._reached) from exc
        self._reached = True

    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """ReceiveMessage: up to ``max_messages`` (10 at most), long-polling ``wait_seconds``."""
        with self._calling("sqs:ReceiveMessage"):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                WaitTimeSeconds=max(0, min(MAX_WAIT_SECONDS, math.ceil(wait_seconds))),
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        return [
            ReceivedMessage(
                body=message["Body"].encode("utf-8", "surrogatepass"),
                message_id=message.get("MessageId"),
                delivery_count=platform_count(
                    message.get("Attributes", {}).get("ApproximateReceiveCount")
                ),
                handle=message["ReceiptHandle"],
            )
            for message in response.get("Messages", [])
        ]

    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        """ChangeMessageVisibilityBatch to ``seconds`` from now (entries SQS refuses, e.g. a
        receipt that went to another consumer, are skipped)."""
        self._change_visibility(messages, math.ceil(seconds))

    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        """ChangeMessageVisibilityBatch to ``delay_seconds`` (0: visible now)."""
        self._change_visibility(messages, math.ceil(delay_seconds))

    def _change_visibility(self, messages: Sequence[ReceivedMessage], seconds: int) -> None:
        for start in range(0, len(messages), MAX_BATCH):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": str(m.handle), "VisibilityTimeout": seconds}
                for i, m in enumerate(messages[start : start + MAX_BATCH])
            ]
            with self._calling("sqs:ChangeMessageVisibility"):
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """DeleteMessageBatch; the messages SQS did not delete are returned."""
        refused: list[ReceivedMessage] = []
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": str(m.handle)} for i, m in enumerate(chunk)
            ]
            with self._calling("sqs:DeleteMessage"):
                response = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            refused += [chunk[int(failure["Id"])] for failure in response.get("Failed", [])]
        return refused

    def close(self) -> None:
        """Close the client's connection pool when this receiver created it."""
        if self._owns_client:
            self.sqs.close()


def make_worker_clients(
    region: str | None, endpoint_url: str | None, concurrency: int, where: str
) -> tuple[SQSClient, S3Client]:
    """SQS and S3 clients from one session: standard retries (3 attempts); SQS's read timeout
    above the 20 s long poll and a pool for the pollers, settlers and heartbeat; S3's as
    :func:`~aws_lambda.s3_store.default_client_config` with one connection per task thread. A
    ConfigError when no region or no credentials can be found."""
    pollers = min(MAX_POLLERS, math.ceil(concurrency / MAX_BATCH))
    sqs_config = Config(
        retries={"mode": "standard", "total_max_attempts": SDK_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=SQS_READ_TIMEOUT_SECONDS,
        max_pool_connections=max(MAX_BATCH, 2 * pollers + 2),
    )
    try:
        session = boto3.session.Session(region_name=region or None)
        if not session.region_name:
            raise ConfigError(
                f"no AWS region: set config.region in {where} (or AWS_REGION, AWS_DEFAULT_REGION)"
            )
        if session.get_credentials() is None:
            raise NoCredentialsError  # worded below, as when a call finds none
        sqs = session.client("sqs", config=sqs_config, endpoint_url=endpoint_url or None)
        s3 = session.client(
            "s3",
            config=default_client_config(max(MAX_BATCH, concurrency)),
            endpoint_url=endpoint_url or None,
        )
    except BotoCoreError as exc:
        account = Resource(f"AWS in region {region}", f"check {where}", "")
        raise aws_error(exc, account) from exc
    except ValueError as exc:  # botocore's "Invalid endpoint: ..."
        raise ConfigError(
            f"{one_line(exc)}: config.endpoint_url in {where} must be a URL,"
            " e.g. http://127.0.0.1:5000"
        ) from exc
    return sqs, s3


def check_bucket(s3: S3Client, bucket: str, where: str) -> None:
    """HeadBucket once, so that a wrong bucket name stops the worker with one line instead
    of sending every task to the dead-letter queue. A 403 is not an error here: HeadBucket
    needs ``s3:ListBucket``, which the worker does not otherwise need."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status == 403:
            return
        resource = Resource(
            f"S3 bucket {bucket}", f"check result_bucket in {where}", "s3:PutObject on it"
        )
        raise aws_error(exc, resource) from exc
    except BotoCoreError as exc:
        resource = Resource(f"S3 bucket {bucket}", f"check config.endpoint_url in {where}", "")
        raise aws_error(exc, resource) from exc


def open_worker(
    config: WorkerConfig,
    concurrency: int,
    *,
    sqs: SQSClient | None = None,
    s3: S3Client | None = None,
) -> tuple[SqsReceiver, S3ResultStore]:
    """The AWS worker's receiver and store for ``config`` (clients made once here, or given)."""
    where = str(config.path)
    settings: dict[str, Any] = dict(config.settings)
    owns = sqs is None or s3 is None
    if sqs is None or s3 is None:
        region = str(settings.get("region") or os.environ.get("AWS_REGION") or "") or None
        endpoint = str(settings.get("endpoint_url") or "") or None
        sqs, s3 = make_worker_clients(region, endpoint, concurrency, where)
    receiver = SqsReceiver.for_queue(sqs, config.queue_name, where=where, owns_client=owns)
    check_bucket(s3, config.result_bucket, where)
    return receiver, S3ResultStore(config.result_bucket, config.result_prefix, client=s3)


def prepare_notice_poller(config: WorkerConfig, poller: NoticePoller) -> None:
    """Once the worker has drained after an Auto Scaling termination notice, complete the
    group's lifecycle action (:class:`~aws_lambda.autoscaling_lifecycle.LifecycleCompleter`);
    Spot notices need nothing."""
    if isinstance(poller, Ec2NoticePoller):
        completer = LifecycleCompleter.from_config(config, poller)
        poller.acknowledge_with(AWS_AUTOSCALING_SOURCE, completer.complete)
