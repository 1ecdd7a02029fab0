"""Results in Azure Blob Storage: ``{prefix}/{task_id}.out`` and ``.err`` blobs in one container.

The ``BlobServiceClient`` is built once per store, on the first write, and reused; the SDK is
imported then too, so importing this module (and indexing the function app) stays cheap. Its
retry policy is the SDK's own ``ExponentialRetry``, bounded so that a failing write gives up
within the function timeout (60 s by default, see infra/azure): 4 attempts of at most 3 s to
connect plus 7 s to read, and back-offs of 2, 4 and 8 s (each +-1 s), take at most 57 s. Then the
message goes back to the queue, which is the retry that outlasts an outage.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from core.errors import ConfigError, StoreWriteError
from core.ports import ResultStore
from core.settings import required_setting, setting

if TYPE_CHECKING:
    from collections.abc import Mapping

    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

ACCOUNT_URL_SETTING = "RESULTS_BLOB_ACCOUNT_URL"
CONNECTION_STRING_SETTING = "RESULTS_BLOB_CONNECTION_STRING"
CONTAINER_SETTING = "RESULTS_CONTAINER"
PREFIX_SETTING = "RESULTS_PREFIX"


CONNECTION_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 7


RETRIES = 3


def default_retry(
    initial_backoff: int = 0, increment_base: int = 2, random_jitter_range: int = 1
) -> ExponentialRetry:
    """The store's retry policy: 3 retries, the n-th after ``initial_backoff + increment_base**n``
    seconds (+- ``random_jitter_range``). Tests shorten the waits; the count stays."""
    from azure.storage.blob import ExponentialRetry

    return ExponentialRetry(
        initial_backoff=initial_backoff,
        increment_base=increment_base,
        retry_total=RETRIES,
        random_jitter_range=random_jitter_range,
        retry_to_secondary=False,
    )


class BlobResultStore(ResultStore):
    """Writes results and error records as block blobs, replacing any previous version.

    Give ``connection_string`` (local use, Azurite) or ``account_url`` (then the credential is
    ``credential`` or, by default, ``DefaultAzureCredential``: the managed identity on Azure),
    or inject a ready ``client``.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account_url: str | None = None,
        connection_string: str | None = None,
        credential: TokenCredential | None = None,
        client: BlobServiceClient | None = None,
        retry: ExponentialRetry | None = None,
    ) -> None:
        if client is None and not (account_url or connection_string):
            raise ConfigError(
                f"set {ACCOUNT_URL_SETTING} (or {CONNECTION_STRING_SETTING} for local use)"
            )
        self.container = container
        self.prefix = prefix.strip("/")
        self._account_url = account_url
        self._connection_string = connection_string
        self._credential = credential
        self._client = client
        self._retry = retry
        self._container_client: ContainerClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> BlobServiceClient:
        """The service client, built on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        retry = self._retry or default_retry()
        if self._connection_string:
            return BlobServiceClient.from_connection_string(
                self._connection_string,
                retry_policy=retry,
                connection_timeout=CONNECTION_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
            )
        credential = self._credential
        if credential is None:
            from azure.identity import DefaultAzureCredential  # heavy: only when it is used

            credential = DefaultAzureCredential()
        return BlobServiceClient(
            str(self._account_url),
            credential=credential,
            retry_policy=retry,
            connection_timeout=CONNECTION_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )

    def _container(self) -> ContainerClient:
        if self._container_client is None:
            self._container_client = self.client.get_container_client(self.container)
        return self._container_client

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Upload ``key`` as a block blob, replacing it; store failures are StoreWriteError."""
        from azure.storage.blob import ContentSettings

        try:
            self._container().upload_blob(
                key,
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
            )
        except Exception as exc:
            raise store_error(exc, f"{key} to container {self.container}") from exc


def store_from_environment(environ: Mapping[str, str] | None = None) -> BlobResultStore:
    """The function's store: ``RESULTS_CONTAINER`` (required), ``RESULTS_PREFIX``, and
    ``RESULTS_BLOB_ACCOUNT_URL`` (or ``RESULTS_BLOB_CONNECTION_STRING`` for local use)."""
    container = required_setting(CONTAINER_SETTING, "the results container's name", environ)
    return BlobResultStore(
        container,
        setting(PREFIX_SETTING, environ),
        account_url=setting(ACCOUNT_URL_SETTING, environ) or None,
        connection_string=setting(CONNECTION_STRING_SETTING, environ) or None,
    )


def store_error(exc: Exception, where: str) -> Exception:
    """What a failed write raises: StoreWriteError for SDK, network and client-configuration
    errors (the write did not happen; Service Bus redelivers), the exception itself else."""
    from azure.core.exceptions import AzureError

    if isinstance(exc, (AzureError, OSError, ValueError)):
        return StoreWriteError(f"could not write {where}: {_first_line(exc)}")
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
