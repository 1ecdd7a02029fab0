"""``GcsResultStore``: results and error records as objects in a Cloud Storage bucket.

The storage client is created on the first write (importing this module imports no Google
SDK, so a cold start pays for it only once, when it is needed) and reused for the life of the
instance. Retries are the SDK's own: ``DEFAULT_RETRY`` (429, 5xx, connection errors, with
exponential backoff) capped at ``retry_seconds``, which stays well below the function timeout
(60 s by default): a store that is still failing after that is reported as
:class:`~core.errors.StoreWriteError`, the function answers 500 and Pub/Sub redelivers the
message later, with its own backoff, instead of the instance being killed mid-retry.

Writes replace the object (same bytes for the same task, so a redelivery is harmless). On a
bucket with an existing object that needs ``storage.objects.delete`` as well as ``create``:
see ``infra/gcp/README.md`` ("Least privilege").
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, StoreWriteError
from core.ports import ResultStore
from core.settings import required_setting, setting

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_RETRY_SECONDS = 30.0
"""Total time the SDK may spend retrying one write (all attempts and backoff)."""
DEFAULT_REQUEST_TIMEOUT = 10.0
"""Seconds one HTTP attempt may take (the SDK default is 60 s, longer than the whole budget)."""


class GcsResultStore(ResultStore):
    """Writes ``{prefix}/{name}.out`` and ``.err`` objects to ``bucket``.

    ``client`` (a ``google.cloud.storage.Client``) is built on first use when not given.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        if not bucket:
            raise ConfigError("a results bucket name is required")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.retry_seconds = retry_seconds
        self.request_timeout = request_timeout
        self._client = client
        self._bucket: Any = None
        self._retry: Any = None
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload ``key``; a failure of the store (after the SDK's retries) is StoreWriteError."""
        try:
            bucket = self._bucket if self._bucket is not None else self._connect()
            bucket.blob(key).upload_from_string(
                data, content_type=content_type, retry=self._retry, timeout=self.request_timeout
            )
        except Exception as exc:
            raise store_error(exc, f"gs://{self.bucket_name}/{key}") from exc

    def _connect(self) -> Any:
        """Create (once, thread-safely) the client, the bucket handle and the retry policy."""
        with self._lock:
            if self._bucket is None:
                from google.cloud import storage  # type: ignore[import-untyped]
                from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

                client = self._client if self._client is not None else storage.Client()
                self._client = client
                self._retry = DEFAULT_RETRY.with_timeout(self.retry_seconds)
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket


def store_error(exc: Exception, where: str) -> Exception:
    """What a failed write raises: StoreWriteError for the SDK's and the network's errors
    (the store's fault, retried by Pub/Sub), the exception itself for anything else (a bug)."""
    if isinstance(exc, _transient_errors()):
        return StoreWriteError(f"could not write {where}: {type(exc).__name__}: {exc}")
    return exc


@functools.cache
def _transient_errors() -> tuple[type[BaseException], ...]:
    """Every exception a write may raise that is the store's fault, not the code's."""
    import http.client

    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from google.cloud.storage.exceptions import (  # type: ignore[import-untyped]
        DataCorruption,
        InvalidResponse,
    )

    return (
        GoogleAPIError,  # every HTTP error status, and RetryError when the retry budget is spent
        GoogleAuthError,  # no credentials, token refresh failed
        InvalidResponse,
        DataCorruption,
        requests.RequestException,
        http.client.HTTPException,
        OSError,  # connection refused/reset, socket timeouts
    )


def store_from_environment(environ: Mapping[str, str] | None = None) -> GcsResultStore:
    """The function's store: ``RESULTS_BUCKET`` (required) and ``RESULTS_PREFIX``."""
    bucket = required_setting("RESULTS_BUCKET", "the results bucket", environ)
    return GcsResultStore(bucket, setting("RESULTS_PREFIX", environ))
