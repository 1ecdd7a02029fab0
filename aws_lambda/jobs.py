"""The AWS job backend for ``adder submit|watch|fetch|redrive|status aws``: SQS and S3.

Importing this module imports no SDK; boto3 is imported by :func:`open_backend` and botocore
by the methods that call it. Every botocore error is translated by :func:`aws_error`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import CloudUnavailableError, ConfigError, ProviderUnavailableError
from core.ops.backend import DeadLetter, JobBackend, QueueDepth, Refused, record_from_key
from core.ops.target import Setting

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
    from core.ops.target import Target

SETTINGS = (
    Setting(
        "queue_url", "the SQS task queue: URL or name", output="queue_url", config="queue_name"
    ),
    Setting(
        "dead_letter_queue_url",
        "the dead-letter queue's URL (default: from the task queue's redrive policy)",
        output="dead_letter_queue_url",
        config="config.dead_letter_queue",
    ),
    Setting("bucket", "the results bucket", output="results_bucket", config="result_bucket"),
    Setting("prefix", "the results prefix", output="results_prefix", config="result_prefix"),
    Setting(
        "region",
        "the AWS region ($AWS_REGION, $AWS_DEFAULT_REGION)",
        output="region",
        config="config.region",
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
    ),
    Setting(
        "endpoint_url",
        "another endpoint, e.g. a local moto server ($AWS_ENDPOINT_URL)",
        output="endpoint_url",  # only `adder sandbox aws`'s copy of the stack has it
        config="config.endpoint_url",
        env=("AWS_ENDPOINT_URL",),
    ),
)

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
"""SendMessageBatch limits: 10 entries, and (the classic limit, accepted everywhere) 256 KiB
of bodies in all; a single message may not be larger either."""
MAX_POOL_CONNECTIONS = 32
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 20
"""Above ReceiveMessage's long poll (RECEIVE_WAIT_SECONDS) and a slow S3 read of a record."""
SDK_ATTEMPTS = 3
"""Attempts of one call in all (botocore's ``total_max_attempts``, what ``max_attempts`` means
in an AWS config file; botocore's own ``max_attempts`` would count retries only, one more)."""
RECEIVE_WAIT_SECONDS = 1
DEAD_LETTER_LOCK_SECONDS = 60
"""How long a received dead letter stays hidden from others while a redrive moves it."""
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character SQS refuses in a body (its allowed set is XML's); one fails the whole batch."""

_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClient",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidToken",
        "InvalidSecurity",
        "AuthFailure",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "RequestExpired",
    }
)
_NOT_FOUND_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "NoSuchBucket",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
    }
)
_PERMISSIONS = {
    "SendMessageBatch": "sqs:SendMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
}


@dataclass(frozen=True)
class Resource:
    """What a call was about, for error messages: ``queue`` ``https://...``, its flag."""

    kind: str
    name: str
    flag: str
    service: str


def aws_error(
    exc: BaseException,
    resource: Resource | None = None,
    *,
    operation: str | None = None,
    permission: str | None = None,
    region: str | None = None,
    endpoint: str | None = None,
) -> ConfigError | CloudUnavailableError:
    """The project error for a botocore error: ConfigError (one line naming the fix) when no
    retry can help, CloudUnavailableError when another try may work. ``permission`` names
    what an access denied message says the caller needs (default: from the operation)."""
    from botocore import exceptions as bx

    what = f"{resource.kind} {resource.name}" if resource else "AWS"
    where = f"region {region or '?'}" + (f" at {endpoint}" if endpoint else "")
    if isinstance(exc, bx.ClientError):
        operation = operation or exc.operation_name
        permission = permission or _PERMISSIONS.get(
            operation, f"{resource.service if resource else 'aws'}:{operation}"
        )
        return _client_error(exc, resource, what, where, operation=operation, permission=permission)
    detail = _one_line(str(exc))
    reached = endpoint or _origin(str(getattr(exc, "kwargs", {}).get("endpoint_url") or "AWS"))
    kinds: tuple[tuple[tuple[type[BaseException], ...], ConfigError | CloudUnavailableError], ...]
    kinds = (
        ((bx.NoRegionError,), ConfigError("no AWS region: give --region or set AWS_REGION")),
        (
            (
                bx.NoCredentialsError,
                bx.PartialCredentialsError,
                bx.CredentialRetrievalError,
                bx.SSOError,
                bx.SSOTokenLoadError,
                bx.UnauthorizedSSOTokenError,
                bx.TokenRetrievalError,
            ),
            _no_credentials(detail),
        ),
        (
            (bx.ProfileNotFound,),
            ConfigError(f"{detail}: check AWS_PROFILE / aws configure list-profiles"),
        ),
        (
            (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ProxyConnectionError),
            ConfigError(f"cannot reach {reached}: check --endpoint-url / network"),
        ),
        (
            (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.HTTPClientError),
            CloudUnavailableError(f"{what}: {detail}; try again"),
        ),
        ((bx.ResponseStreamingError,), CloudUnavailableError(f"{what}: {detail}; try again")),
    )
    for classes, error in kinds:
        if isinstance(exc, classes):
            return error
    return ConfigError(f"{what}: {detail}")


def _client_error(
    exc: Any, resource: Resource | None, what: str, where: str, *, operation: str, permission: str
) -> ConfigError | CloudUnavailableError:
    code, message = error_code_and_message(exc.response)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _CREDENTIAL_CODES:
        return _no_credentials(code)
    if code in _NOT_FOUND_CODES or (code in {"404", "NotFound"} and resource is not None):
        flag = resource.flag if resource else "the settings"
        return ConfigError(f"no {what} in {where}: check {flag} / the stack")
    if "Throttl" in code or code in _TRANSIENT_CODES or status == 429 or status >= 500:
        return CloudUnavailableError(f"{operation} on {what} failed ({code or status}); try again")
    if "AccessDenied" in code or code in {"403", "Forbidden"} or status == 403:
        return ConfigError(
            f"access denied to {what}: the caller needs {permission} on it (check the IAM "
            "policy of your credentials)"
        )
    return ConfigError(f"{operation} on {what} refused: {code}: {_one_line(message)}")


def error_code_and_message(response: Any) -> tuple[str, str]:
    """The error's code and message; a code that is only the HTTP status, with the service's
    XML error document as the message (some proxies and emulators), is read from the XML."""
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code") or error.get("QueryErrorCode") or "")
    message = str(error.get("Message") or "")
    if (not code or code.isdigit()) and message.lstrip().startswith("<"):
        found_code = re.search(r"<Code>([^<]+)</Code>", message)
        found_message = re.search(r"<Message>([^<]*)</Message>", message)
        code = found_code.group(1) if found_code else code
        message = found_message.group(1) if found_message else ""
    return code, message


def _origin(url: str) -> str:
    """``scheme://host:port`` of a request URL (the endpoint, not the request)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _no_credentials(detail: str) -> ConfigError:
    return ConfigError(
        f"no usable AWS credentials ({detail}): run aws configure (or aws sso login), set "
        "AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
        self.queue_label = f"SQS queue {self._queue_url or queue_url or '(none given)'}"
        self.results_label = (
            f"s3://{bucket}/{self.prefix + '/' if self.prefix else ''}"
            if bucket
            else "(no results bucket given: --bucket)"
        )

    # --- what the queue and bucket are -------------------------------------------------

    def _queue(self) -> Resource:
        return Resource("queue", self._queue_given or "?", "--queue-url", "sqs")

    def _dead_letter_queue(self) -> Resource:
        name = self._dlq_given or self._dlq_url or "?"
        return Resource("dead-letter queue", name, "--dead-letter-queue-url", "sqs")

    def _bucket(self) -> Resource:
        return Resource("bucket", self.bucket or "?", "--bucket", "s3")

    @property
    def s3(self) -> S3Client:
        """The S3 client (a backend made for submitting only has none)."""
        if self._s3 is None:
            raise ConfigError(
                "this backend was opened without an S3 client: it cannot read results"
            )
        return self._s3

    @contextlib.contextmanager
    def _calling(
        self, resource: Resource, client: Any, permission: str | None = None
    ) -> Iterator[None]:
        """Translate what botocore raises inside the block (see :func:`aws_error`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._translated(exc, resource, client, permission) from exc

    @staticmethod
    def _translated(
        exc: Exception, resource: Resource, client: Any, permission: str | None = None
    ) -> ConfigError | CloudUnavailableError:
        return aws_error(
            exc,
            resource,
            permission=permission,
            region=client.meta.region_name,
            endpoint=_custom_endpoint(client),
        )

    def task_queue_url(self) -> str:
        """The task queue's URL (GetQueueUrl once when a name or ARN was given)."""
        if self._queue_url is not None:
            return self._queue_url
        if not self._queue_given:
            raise ConfigError("this command needs the task queue: give --queue-url")
        with self._lock:
            if self._queue_url is None:
                self._queue_url = self._lookup_queue(self._queue_given, self._queue())
                self.queue_label = f"SQS queue {self._queue_url}"
        return self._queue_url

    def dead_letter_queue_url(self) -> str | None:
        """The dead-letter queue's URL: the one given, else the redrive policy's, else None."""
        if self._dlq_looked_up:
            return self._dlq_url
        with self._lock:
            if not self._dlq_looked_up:
                if self._dlq_given:
                    if _is_url(self._dlq_given):
                        self._dlq_url = self._dlq_given
                    else:
                        self._dlq_url = self._lookup_queue(
                            self._dlq_given, self._dead_letter_queue()
                        )
                elif self._queue_given:
                    self._dlq_url = self._dlq_from_redrive_policy()
                self._dlq_looked_up = True
        return self._dlq_url

    def _lookup_queue(self, given: str, resource: Resource) -> str:
        if _is_url(given):
            return given
        arguments: dict[str, str] = {"QueueName": given}
        if given.startswith("arn:"):
            parts = given.split(":")
            if len(parts) != 6 or parts[2] != "sqs":
                raise ConfigError(f"{given} is not an SQS queue ARN: give its URL or name")
            arguments = {"QueueName": parts[5], "QueueOwnerAWSAccountId": parts[4]}
        with self._calling(resource, self.sqs):
            return self.sqs.get_queue_url(**arguments)["QueueUrl"]

    def _dlq_from_redrive_policy(self) -> str | None:
        url = self.task_queue_url()
        with self._calling(self._queue(), self.sqs):
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
        return self._lookup_queue(arn, self._dead_letter_queue())

    def check(self, command: str) -> None:
        """Fail now, with one line, if what ``command`` needs is missing or unreachable."""
        if command in {"submit", "redrive"} or (command == "status" and self._queue_given):
            url = self.task_queue_url()
            needs = "sqs:GetQueueAttributes and sqs:SendMessage" if command == "submit" else None
            with self._calling(self._queue(), self.sqs, needs):
                self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        if command in {"redrive", "watch", "status"}:
            dlq = self.dead_letter_queue_url()
            if dlq is None and command == "redrive":
                raise ConfigError(
                    f"adder redrive aws needs the dead-letter queue: give --dead-letter-queue-url"
                    f" (the task queue {self.task_queue_url()} has no redrive policy)"
                )
            if dlq is not None and command == "redrive":
                with self._calling(self._dead_letter_queue(), self.sqs):
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
        with self._calling(self._queue(), self.sqs):
            response = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
        for failed in response.get("Failed", []):
            reason = f"refused by SQS: {failed.get('Code')}: {failed.get('Message', '')}"
            retry = not failed.get("SenderFault", False)
            refused.append(Refused(int(failed["Id"]), reason.rstrip(": "), retry=retry))
        return sorted(refused, key=lambda refusal: refusal.index)

    def list_records(self) -> Iterator[RecordInfo]:
        """Every ``.out`` and ``.err`` under the prefix: one ListObjectsV2 per 1,000 keys."""
        if not self.bucket:
            return
        start = f"{self.prefix}/" if self.prefix else ""
        with self._calling(self._bucket(), self.s3):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, Delimiter="/"
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
        from botocore.exceptions import BotoCoreError, ClientError

        resource = Resource("object", f"s3://{self.bucket}/{record.key}", "--bucket", "s3")
        try:
            response = self.s3.get_object(Bucket=str(self.bucket), Key=record.key)
            return response["Body"].read()
        except ClientError as exc:
            if error_code_and_message(exc.response)[0] in {"NoSuchKey", "404"}:
                # deleted since it was listed: a failure of this record only
                raise CloudUnavailableError(f"{resource.name} is gone since it was listed") from exc
            raise self._translated(exc, resource, self.s3) from exc
        except BotoCoreError as exc:
            raise self._translated(exc, resource, self.s3) from exc

    def dead_letter_count(self) -> int | None:
        """Messages in the dead-letter queue, waiting or locked; None without one."""
        url = self.dead_letter_queue_url()
        if url is None:
            return None
        attributes = self._attributes(url, self._dead_letter_queue())
        return attributes.get("ApproximateNumberOfMessages", 0) + attributes.get(
            "ApproximateNumberOfMessagesNotVisible", 0
        )

    def queue_depth(self) -> QueueDepth:
        """The task queue's waiting (visible or delayed) and in-flight message counts."""
        if not self._queue_given:
            return QueueDepth(None, None)
        attributes = self._attributes(self.task_queue_url(), self._queue())
        waiting = attributes.get("ApproximateNumberOfMessages", 0) + attributes.get(
            "ApproximateNumberOfMessagesDelayed", 0
        )
        return QueueDepth(waiting, attributes.get("ApproximateNumberOfMessagesNotVisible", 0))

    def _attributes(self, url: str, resource: Resource) -> dict[str, int]:
        with self._calling(resource, self.sqs):
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
        with self._calling(self._dead_letter_queue(), self.sqs):
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
            chunk = letters[start : start + MAX_BATCH_ENTRIES]
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": str(letter.handle)}
                for i, letter in enumerate(chunk)
            ]
            with self._calling(self._dead_letter_queue(), self.sqs):
                response = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            failed += len(response.get("Failed", []))
        if failed:
            raise CloudUnavailableError(
                f"{failed} dead letters were sent again but not deleted from {url}; they will be"
                " redriven again (a duplicate, not a loss)"
            )

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """ChangeMessageVisibilityBatch to 0, 10 at a time; on failure their lock expires."""
        from botocore.exceptions import BotoCoreError, ClientError

        url = self.dead_letter_queue_url()
        if url is None:
            return
        for start in range(0, len(letters), MAX_BATCH_ENTRIES):
            chunk = letters[start : start + MAX_BATCH_ENTRIES]
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": str(letter.handle), "VisibilityTimeout": 0}
                for i, letter in enumerate(chunk)
            ]
            with contextlib.suppress(BotoCoreError, ClientError):
                self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)

    def close(self) -> None:
        """Close the clients' connection pools when this backend created them."""
        if self._owns_clients:
            self.sqs.close()
            if self._s3 is not None:
                self._s3.close()


def _custom_endpoint(client: Any) -> str | None:
    endpoint = getattr(client.meta, "endpoint_url", None)
    if endpoint and "amazonaws.com" not in endpoint:
        return str(endpoint)
    return None


def make_clients(region: str | None, endpoint_url: str | None) -> tuple[SQSClient, S3Client]:
    """SQS and S3 clients sharing one session: standard retries (3 attempts), 3 s connect and
    20 s read timeouts, 32 pooled connections; a ConfigError when no region or no credentials
    can be found."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:
        from core.clouds import CLOUDS

        raise ProviderUnavailableError(
            f"the AWS commands need boto3: {CLOUDS['aws'].install_hint}"
        ) from None
    config = Config(
        retries={"mode": "standard", "total_max_attempts": SDK_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )
    try:
        session = boto3.session.Session(region_name=region)
        if not session.region_name:
            raise ConfigError("no AWS region: give --region or set AWS_REGION")
        if session.get_credentials() is None:
            raise _no_credentials("none found")
        sqs = session.client("sqs", config=config, endpoint_url=endpoint_url)
        s3 = session.client("s3", config=config, endpoint_url=endpoint_url)
    except BotoCoreError as exc:
        raise aws_error(exc, endpoint=endpoint_url, region=region) from exc
    except ValueError as exc:  # botocore's "Invalid endpoint: ..."
        raise ConfigError(
            f"{_one_line(str(exc))}: give --endpoint-url as a URL, e.g. http://127.0.0.1:5000"
        ) from exc
    return sqs, s3


def open_backend(target: Target, command: str) -> JobBackend:
    """The SQS + S3 backend of ``target``, checked for what ``command`` needs (boto3 is
    imported here): submit needs the queue; watch and fetch the bucket (and watch the
    dead-letter queue when one is found); redrive the queue and its dead-letter queue; status
    shows whatever is given."""
    what = f"adder {command} aws"
    if command in {"submit", "redrive"}:
        target.require("queue_url", SETTINGS, what)
    if command in {"watch", "fetch"}:
        target.require("bucket", SETTINGS, what)
    if command == "status" and not any(
        target.get(name) for name in ("queue_url", "dead_letter_queue_url", "bucket")
    ):
        raise ConfigError(
            f"{what} needs a queue or a bucket: give --queue-url and/or --bucket, --stack DIR or"
            " --config FILE"
        )
    sqs, s3 = make_clients(target.get("region"), target.get("endpoint_url"))
    backend = AwsJobBackend(
        sqs,
        s3,
        queue_url=target.get("queue_url"),
        dead_letter_queue_url=target.get("dead_letter_queue_url"),
        bucket=target.get("bucket"),
        prefix=target.get("prefix") or "",
        owns_clients=True,
    )
    try:
        backend.check(command)
    except BaseException:
        backend.close()
        raise
    return backend
