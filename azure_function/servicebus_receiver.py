"""The Service Bus adapter of the worker's receiver port (:class:`core.worker.port.Receiver`),
and the Azure worker's binding: a peek-lock ``ServiceBusReceiver`` on the config's queue and
the function's own :class:`~azure_function.blob_store.BlobResultStore` on its container
(``adder work`` on ``provider: azure``).

- receive: ``receive_messages(max_message_count, max_wait_time)`` in PEEK_LOCK mode, no
  prefetch (a message is locked only once the worker asked for it), up to 10 a call;
- extend: ``renew_message_lock`` for each message (the lock runs for the queue's lock
  duration from the renewal);
- acknowledge: ``complete_message`` for each; a message whose lock is gone
  (``MessageLockLostError``: expired, or already redelivered) is returned as not taken;
- release: ``abandon_message`` for each when the worker wants the message back now (a delay of
  0: draining, or ``--retry-delay 0``); for a delay, nothing is called and the lock is left to
  run out, so the message comes back when it ends, within one lock duration (Service Bus has
  no delayed abandon; the default retry delay is one lease, so this is that delay, without a
  call). Either way Service Bus counts a delivery, and dead-letters the message after the
  queue's max delivery count.
- delivery count: ``message.delivery_count + 1``. The SDK returns the AMQP header's
  ``delivery-count``, which AMQP 1.0 defines as the number of *earlier* unsuccessful attempts
  (0 on a first delivery, see ``azure.servicebus.amqp.AmqpMessageHeader``); Service Bus sends
  its DeliveryCount less one there, and the other SDKs add the one back (azure-sdk-for-java
  PR #11845; .NET documents ``DeliveryCount`` as starting at 1), as the Functions host does.

**Lock renewal: the worker's heartbeat, not ``AutoLockRenewer``.** The worker already knows
which messages are in hand and extends their leases at half-life through :meth:`extend`;
an ``AutoLockRenewer`` would renew the same locks a second time from its own thread pool,
calling ``renew_message_lock`` on the receiver outside this adapter's lock, concurrently with
receives and settlements, which the SDK does not support ("We do not guarantee that the
ServiceBusClient, ServiceBusSender, and ServiceBusReceiver are thread-safe ... use
``threading.Lock()``", azure-servicebus README, "Thread safety"). It would also keep renewing
a message the worker has let go (a lapsed release) until its ``max_lock_renewal_duration``.
So ``extend`` renews, and nothing else does.

**Thread safety.** The worker calls from many threads; every SDK call here runs under one
lock (:class:`_Gate`). Settlement and renewal go first: a receive waits while any of them
waits, and a long poll is cut into :data:`RECEIVE_SLICE_SECONDS` slices, the lock given up
between slices, so an acknowledgement or a renewal never waits more than one slice behind a
receive on an empty queue.

**Lease.** The lease the worker plans with is ``config.lock_duration`` (seconds, or the ISO
8601 form infra/azure's ``queue_lock_duration`` output gives, e.g. ``PT1M30S``; default
:data:`DEFAULT_LOCK_SECONDS`). It must not be longer than the queue's lock duration (the
worker would renew too late and lose locks: duplicates, and deliveries counted); shorter is
safe, it only renews more often. Reading it from the queue needs the Manage right, which the
worker's identity does not have.

**Where.** ``config.namespace``: the Service Bus namespace, a name (``sb-adder-1a2b3c``) or
host name; or ``$SERVICEBUS_CONNECTION_STRING`` (a connection string with Listen). The results:
the container ``result_bucket`` under ``result_prefix``, in ``config.account_url`` (the
account's blob endpoint, infra/azure's ``results_blob_account_url`` output) or
``config.storage_account`` (its name: ``https://<name>.blob.core.windows.net/``); or
``$RESULTS_BLOB_CONNECTION_STRING`` (Azurite, local use). Connection strings are read from
the environment only: they hold keys, and keys do not belong in the config file.
Credentials: ``DefaultAzureCredential`` built to fail within seconds (the job commands'
:func:`~azure_function.jobs.default_credential`); on a VM with a user-assigned managed
identity set ``AZURE_CLIENT_ID`` to its client id (infra/azure's
``worker_identity_client_id``). The roles it needs: "Azure Service Bus Data Receiver" on the
queue and "Storage Blob Data Contributor" on the results container. Errors are worded by
:mod:`azure_function.job_errors`: a ConfigError (no queue, access denied, no credentials)
stops the worker with one line; a CloudUnavailableError (a dropped connection, throttling) is
retried by the worker.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure_function.blob_store import (
    CONNECTION_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    BlobResultStore,
    default_retry,
)
from azure_function.job_backend import message_body
from azure_function.job_errors import translate_error
from azure_function.jobs import (
    INSTALL_HINT,
    SERVICE_BUS_BACKOFF_SECONDS,
    SERVICE_BUS_RETRIES,
    SERVICE_BUS_SCOPE,
    STORAGE_SCOPE,
    check_credential,
    default_credential,
    fully_qualified_namespace,
    namespace_of_connection_string,
    quiet_sdk_logs,
)
from core.delivery import platform_text
from core.errors import ConfigError, ProviderUnavailableError
from core.ops.problems import Resource
from core.worker.port import ReceivedMessage, Receiver

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from azure.core.credentials import TokenCredential
    from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver
    from azure.storage.blob import BlobServiceClient

    from core.worker.command import WorkerConfig

MAX_BATCH = 10
"""Messages one receive asks for (the worker's batch: acknowledgements come 10 a call)."""
DEFAULT_LOCK_SECONDS = 30.0
"""The lease assumed without ``config.lock_duration``: at most the lock duration of any queue
of infra/azure (at least 31 s) and half Service Bus's default (1 minute)."""
MIN_LOCK_SECONDS = 5.0
MAX_LOCK_SECONDS = 300.0
"""Service Bus's range of lock durations."""
RECEIVE_SLICE_SECONDS = 1.0
"""The longest one ``receive_messages`` call holds the receiver (see the module's notes)."""
MIN_WAIT_SECONDS = 0.05
"""The SDK refuses a wait of 0: a receive that should not wait waits this long."""
CONNECTION_STRING_ENV = "SERVICEBUS_CONNECTION_STRING"
BLOB_CONNECTION_STRING_ENV = "RESULTS_BLOB_CONNECTION_STRING"
PUBLIC_BLOB_SUFFIX = ".blob.core.windows.net"
WORKER_LOGIN = (
    "run az login, or give the machine a managed identity (AZURE_CLIENT_ID selects a"
    f" user-assigned one), or set ${CONNECTION_STRING_ENV} (and ${BLOB_CONNECTION_STRING_ENV})"
)
"""How a worker gets credentials: the fix of its "no usable credentials" line."""

_ISO_DURATION = re.compile(r"^PT(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")


class _Gate:
    """One lock over the SDK receiver, settlements and renewals first: a receive starts only
    when nothing else waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """Hold the receiver for a settlement or a renewal."""
        with self._cond:
            self._urgent_waiting += 1
            try:
                while self._busy:
                    self._cond.wait()
            finally:
                self._urgent_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def patient(self) -> Iterator[None]:
        """Hold the receiver for a receive, once no settlement or renewal waits."""
        with self._cond:
            while self._busy or self._urgent_waiting:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


def _lock_lost_errors() -> tuple[type[BaseException], ...]:
    """What settling or renewing a message whose lock is gone raises: the broker's
    message-lock-lost (or not found), the SDK's own check of an expired or settled message,
    and its ValueError for a receiver whose link was shut down (those locks are gone too)."""
    from azure.servicebus.exceptions import (
        MessageAlreadySettled,
        MessageLockLostError,
        MessageNotFoundError,
    )

    return (MessageLockLostError, MessageNotFoundError, MessageAlreadySettled, ValueError)


class ServiceBusQueueReceiver(Receiver):
    """One Service Bus queue in peek-lock mode, seen by one worker process (thread-safe: the
    SDK receiver is used under one lock)."""

    max_batch = MAX_BATCH

    def __init__(
        self,
        receiver: ServiceBusReceiver,
        *,
        queue: str,
        host: str,
        lease_seconds: float = DEFAULT_LOCK_SECONDS,
        where: str = "the config file",
        owned: Sequence[Any] = (),
    ) -> None:
        self.receiver = receiver
        self.queue = queue
        self.host = host
        self.lease_seconds = lease_seconds
        self.describe = f"Service Bus queue {queue} on {host}"
        self.resource = Resource(
            f"Service Bus queue {queue!r} on {host}",
            f"check queue_name and config.namespace in {where} (or ${CONNECTION_STRING_ENV})",
            "'Azure Service Bus Data Receiver' on the queue (or a connection string with Listen)",
        )
        self._gate = _Gate()
        self._owned = tuple(owned)
        self._closed = False
        self._lost = _lock_lost_errors()

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """Translate the SDK's errors raised in the block (a bug is raised as it is)."""
        try:
            yield
        except Exception as exc:
            raise translate_error(exc, self.resource) from exc

    def _reopen(self) -> None:
        """Open the link again if the SDK shut it down after an error (nothing when it is
        open), with the SDK's own retries and timeouts: a receive would otherwise reopen it
        within its short slice, too short for a new connection and token; and a settlement
        or renewal on a shut receiver is refused by the SDK without a call, where a reopened
        one settles or renews by lock token over the management link."""
        self.receiver.__enter__()

    def open(self) -> None:
        """Attach the receiver link now (the first receive would otherwise do it within its
        short slice): a missing queue or a refused credential is one line at start."""
        with self._gate.urgent(), self._calling():
            self.receiver.__enter__()

    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` (10 at most), waiting up to ``wait_seconds`` for the first,
        in slices of at most :data:`RECEIVE_SLICE_SECONDS`."""
        count = max(1, min(MAX_BATCH, max_messages))
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while True:
            wait = min(RECEIVE_SLICE_SECONDS, max(MIN_WAIT_SECONDS, deadline - time.monotonic()))
            with self._gate.patient(), self._calling():
                if self._closed:  # a poll still looping after the worker closed the receiver
                    return []
                self._reopen()
                got = self.receiver.receive_messages(max_message_count=count, max_wait_time=wait)
            if got or time.monotonic() >= deadline:
                return [self._received(message) for message in got]

    @staticmethod
    def _received(message: ServiceBusReceivedMessage) -> ReceivedMessage:
        count = message.delivery_count
        return ReceivedMessage(
            body=message_body(message),
            message_id=platform_text(message.message_id),
            delivery_count=None if count is None else count + 1,
            handle=message,
            platform={"sequence_number": message.sequence_number},
        )

    @staticmethod
    def _message(message: ReceivedMessage) -> ServiceBusReceivedMessage:
        handle: ServiceBusReceivedMessage = message.handle  # type: ignore[assignment]
        return handle

    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        """Renew each message's lock (for the queue's lock duration from now; ``seconds`` is
        the worker's lease, which is at most that). A lock already lost is skipped."""
        for message in messages:
            with self._gate.urgent():
                try:
                    self._reopen()
                    self.receiver.renew_message_lock(self._message(message))
                except self._lost:
                    continue
                except Exception as exc:
                    raise translate_error(exc, self.resource) from exc

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """Complete each message; those whose lock was lost are returned (they come back: a
        duplicate, not a loss). Any other failure ends the call: raised when nothing was
        completed yet (the worker logs it), else the rest are returned as not taken."""
        refused: list[ReceivedMessage] = []
        for index, message in enumerate(messages):
            with self._gate.urgent():
                try:
                    self._reopen()
                    self.receiver.complete_message(self._message(message))
                except self._lost:
                    refused.append(message)
                except Exception as exc:
                    error = translate_error(exc, self.resource)
                    if isinstance(error, ConfigError) or index == len(refused):
                        raise error from exc
                    return [*refused, *messages[index:]]
        return refused

    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        """Abandon each message (delay 0: back at once); for a delay, leave its lock to run
        out (back within one lock duration; see the module's notes)."""
        if delay_seconds > 0:
            return
        for message in messages:
            with self._gate.urgent():
                try:
                    self._reopen()
                    self.receiver.abandon_message(self._message(message))
                except self._lost:
                    continue  # its lock is gone: it is back already
                except Exception as exc:
                    raise translate_error(exc, self.resource) from exc

    def close(self) -> None:
        """Close the receiver link (buffered messages are released by the SDK; locked ones
        keep their locks until they run out) and the client this receiver was built with."""
        with self._gate.urgent():
            if self._closed:
                return
            self._closed = True
            for closeable in (self.receiver, *self._owned):
                with contextlib.suppress(Exception):
                    closeable.close()


# --- the binding ---------------------------------------------------------------------------


def lock_seconds(value: object, where: str) -> float:
    """``config.lock_duration`` in seconds: a number, or an ISO 8601 duration (``PT1M30S``);
    :data:`DEFAULT_LOCK_SECONDS` when absent."""
    if value is None or value == "":
        return DEFAULT_LOCK_SECONDS
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().upper()
        match = _ISO_DURATION.match(text)
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif match and text != "PT":
            hours, minutes, rest = (float(part or 0) for part in match.groups())
            seconds = hours * 3600 + minutes * 60 + rest
    if seconds is None or not MIN_LOCK_SECONDS <= seconds <= MAX_LOCK_SECONDS:
        raise ConfigError(
            f"config.lock_duration in {where} must be the queue's lock duration, in seconds"
            f" ({MIN_LOCK_SECONDS:g}-{MAX_LOCK_SECONDS:g}) or as ISO 8601 (PT1M30S): got {value!r}"
        )
    return seconds


def results_account_url(settings: dict[str, Any], where: str) -> str | None:
    """``config.account_url``, else ``config.storage_account`` as its public blob endpoint."""
    url = str(settings.get("account_url") or "").strip()
    if url:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(
                f"config.account_url in {where} must be the account's blob endpoint, e.g."
                f" https://ACCOUNT{PUBLIC_BLOB_SUFFIX}/ (or give config.storage_account)"
            )
        return url
    account = str(settings.get("storage_account") or "").strip()
    return f"https://{account}{PUBLIC_BLOB_SUFFIX}/" if account else None


def blob_service_client(
    *,
    account_url: str | None,
    connection_string: str | None,
    credential: TokenCredential | None,
    connections: int,
) -> BlobServiceClient:
    """The results account's client as :class:`BlobResultStore` builds it (its retry policy
    and timeouts) with a connection pool for every task thread."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    options: dict[str, Any] = {
        "retry_policy": default_retry(),
        "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        "transport": RequestsTransport(session=session, session_owner=True),
    }
    try:
        if connection_string:
            return BlobServiceClient.from_connection_string(connection_string, **options)
        return BlobServiceClient(str(account_url), credential=credential, **options)
    except ValueError:  # never echo the string: it holds a key
        raise ConfigError(
            f"${BLOB_CONNECTION_STRING_ENV} is malformed: expected"
            " DefaultEndpointsProtocol=https;AccountName=...;AccountKey=..."
            if connection_string
            else f"config.account_url is not a URL: {account_url}"
        ) from None


def check_container(client: BlobServiceClient, container: str, where: str) -> None:
    """Read the container's properties once, so that a wrong name or account stops the worker
    with one line instead of sending every task to the dead-letter queue. A 403 is not an
    error here (a role without the read may still write)."""
    from azure.core.exceptions import HttpResponseError

    account = str(client.url).rstrip("/")
    resource = Resource(
        f"container {container!r} at {account}",
        f"check result_bucket and config.account_url in {where} (or ${BLOB_CONNECTION_STRING_ENV})",
        "'Storage Blob Data Contributor' on the container (or a connection string)",
    )
    try:
        client.get_container_client(container).get_container_properties(retry_total=1)
    except HttpResponseError as exc:
        if exc.status_code == 403:
            return
        raise translate_error(exc, resource) from None
    except Exception as exc:
        raise translate_error(exc, resource) from None


@dataclass(frozen=True)
class WorkerSettings:
    """Where an Azure worker works, from its config file and environment (checked)."""

    where: str
    """The config file, as error lines name it."""
    queue: str
    lease_seconds: float
    namespace: str | None
    connection_string: str | None
    container: str
    prefix: str
    account_url: str | None
    blob_connection_string: str | None

    @property
    def host(self) -> str:
        """The namespace's host name."""
        if self.connection_string:
            return namespace_of_connection_string(self.connection_string)
        return fully_qualified_namespace(str(self.namespace))

    @property
    def needs_credential(self) -> bool:
        """Entra ID is used for Service Bus or Storage (no connection string for it)."""
        return not (self.connection_string and self.blob_connection_string)


def worker_settings(
    config: WorkerConfig, environ: Mapping[str, str] | None = None
) -> WorkerSettings:
    """The Azure part of ``config`` (``config.namespace``, ``config.account_url`` or
    ``config.storage_account``, ``config.lock_duration``) and the connection strings in the
    environment; a one-line ConfigError when something is missing or malformed."""
    env = os.environ if environ is None else environ
    where = str(config.path)
    settings: dict[str, Any] = dict(config.settings)
    lease = lock_seconds(settings.get("lock_duration"), where)
    connection_string = env.get(CONNECTION_STRING_ENV, "").strip() or None
    namespace = str(settings.get("namespace") or "").strip() or None
    blob_connection_string = env.get(BLOB_CONNECTION_STRING_ENV, "").strip() or None
    account_url = None if blob_connection_string else results_account_url(settings, where)
    if not connection_string and not namespace:
        raise ConfigError(
            f"config file {where} has no config.namespace: adder work on azure needs the"
            f" Service Bus namespace (or ${CONNECTION_STRING_ENV})"
        )
    if not blob_connection_string and not account_url:
        raise ConfigError(
            f"config file {where} has no config.account_url (or config.storage_account): adder"
            f" work on azure needs the results storage account (or ${BLOB_CONNECTION_STRING_ENV})"
        )
    return WorkerSettings(
        where=where,
        queue=config.queue_name,
        lease_seconds=lease,
        namespace=namespace,
        connection_string=connection_string,
        container=config.result_bucket,
        prefix=config.result_prefix,
        account_url=account_url,
        blob_connection_string=blob_connection_string,
    )


def open_receiver(
    settings: WorkerSettings, credential: TokenCredential | None = None
) -> ServiceBusQueueReceiver:
    """The queue's receiver, its link attached (a token is got first when Entra ID is used):
    no credentials, no queue or no Listen right is one line here, before any work."""
    host = settings.host
    client = _service_bus_client(host, settings.connection_string, credential)
    receiver = ServiceBusQueueReceiver(
        client.get_queue_receiver(settings.queue, prefetch_count=0),
        queue=settings.queue,
        host=host,
        lease_seconds=settings.lease_seconds,
        where=settings.where,
        owned=(client,),
    )
    try:
        if not settings.connection_string:
            assert credential is not None
            check_credential(credential, SERVICE_BUS_SCOPE, receiver.resource, WORKER_LOGIN)
        receiver.open()
    except BaseException:
        receiver.close()
        raise
    return receiver


def open_store(
    settings: WorkerSettings, concurrency: int, credential: TokenCredential | None = None
) -> BlobResultStore:
    """The results store (the function's, its client pooled for ``concurrency`` threads),
    the container checked once."""
    if settings.account_url:
        assert credential is not None
        account = Resource(
            f"storage account {settings.account_url.rstrip('/')}",
            f"check config.account_url in {settings.where} (or ${BLOB_CONNECTION_STRING_ENV})",
            "'Storage Blob Data Contributor' on the results container",
        )
        check_credential(credential, STORAGE_SCOPE, account, WORKER_LOGIN)
    client = blob_service_client(
        account_url=settings.account_url,
        connection_string=settings.blob_connection_string,
        credential=credential,
        connections=max(MAX_BATCH, concurrency),
    )
    check_container(client, settings.container, settings.where)
    return BlobResultStore(settings.container, settings.prefix, client=client)


def open_worker(
    config: WorkerConfig,
    concurrency: int,
    *,
    credential: TokenCredential | None = None,
) -> tuple[ServiceBusQueueReceiver, BlobResultStore]:
    """The Azure worker's receiver and store for ``config`` (clients made once here)."""
    settings = worker_settings(config)
    try:
        import azure.servicebus
        import azure.storage.blob  # noqa: F401
    except ImportError:
        raise ProviderUnavailableError(INSTALL_HINT) from None
    quiet_sdk_logs()
    if credential is None and settings.needs_credential:
        credential = default_credential()
    receiver = open_receiver(settings, credential)
    try:
        store = open_store(settings, concurrency, credential)
    except BaseException:
        receiver.close()
        raise
    return receiver, store


def _service_bus_client(
    host: str, connection_string: str | None, credential: TokenCredential | None
) -> ServiceBusClient:
    from azure.servicebus import ServiceBusClient

    try:
        if connection_string:
            return ServiceBusClient.from_connection_string(
                connection_string,
                retry_total=SERVICE_BUS_RETRIES,
                retry_backoff_factor=SERVICE_BUS_BACKOFF_SECONDS,
            )
        assert credential is not None
        return ServiceBusClient(
            host,
            credential,
            retry_total=SERVICE_BUS_RETRIES,
            retry_backoff_factor=SERVICE_BUS_BACKOFF_SECONDS,
        )
    except ValueError:  # never echo the string: it holds a key
        raise ConfigError(
            f"${CONNECTION_STRING_ENV} is malformed: expected"
            " Endpoint=sb://NAMESPACE/;SharedAccessKeyName=NAME;SharedAccessKey=KEY"
        ) from None
