"""The S3 adapter of the results port."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.errors import StoreWriteError
from core.ports import ResultStore
from core.settings import required_setting, setting

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_s3 import S3Client

MAX_POOL_CONNECTIONS = 32
ATTEMPTS = 3
"""PutObject attempts in all (botocore's ``total_max_attempts``; its ``max_attempts`` would
count retries only, one more)."""
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5
MAX_BACKOFF_SECONDS = sum(2 ** (retry - 1) for retry in range(1, ATTEMPTS))
"""Standard mode sleeps up to ``2 ** (n - 1)`` s (random, capped at 20 s) before retry n."""
WORST_CASE_WRITE_SECONDS = (
    ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) + MAX_BACKOFF_SECONDS
)
"""The longest one write can take before it gives up: 3 x (2 + 5) + 1 + 2 = 24 s. A record
started later than this before the Lambda timeout can be cut off by it; then the whole batch
returns to the queue after the visibility timeout (nothing lost, finished tasks written
again with the same content)."""


def default_client_config(max_pool_connections: int = MAX_POOL_CONNECTIONS) -> Config:
    """botocore settings: standard retry mode (``ATTEMPTS`` attempts, exponential backoff with
    jitter, retries throttling and 5xx), short timeouts so one stuck request cannot eat the
    invocation's deadline, and a connection pool as large as the handler's thread pool."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_pool_connections=max_pool_connections,
    )


class S3ResultStore(ResultStore):
    """Writes ``{prefix}/{id}.out`` and ``{prefix}/{name}.err`` objects to one bucket.

    The boto3 client is created on first use (so importing stays cheap) and reused for the
    life of the process; pass ``client`` to inject one.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        """The S3 client, created once (thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = boto3.session.Session().client(
                        "s3", config=default_client_config()
                    )
        return self._client

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """PutObject ``key``; any SDK or network failure is a StoreWriteError."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except Exception as exc:
            raise store_error(exc, f"s3://{self.bucket}/{key}") from exc


def store_error(exc: Exception, where: str) -> Exception:
    """What a failed write raises: StoreWriteError for botocore's errors (the store's fault,
    retried by the queue), the exception itself for anything else (a bug)."""
    if isinstance(exc, (BotoCoreError, ClientError)):
        return StoreWriteError(f"cannot write {where}: {exc}")
    return exc


def store_from_environment(environ: Mapping[str, str] | None = None) -> S3ResultStore:
    """The function's store: ``RESULTS_BUCKET`` (required) and ``RESULTS_PREFIX``."""
    bucket = required_setting("RESULTS_BUCKET", "the results bucket", environ)
    return S3ResultStore(bucket, setting("RESULTS_PREFIX", environ))
