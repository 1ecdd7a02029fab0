"""The Azure job backend for ``adder submit|watch|fetch|redrive|status azure``: Service Bus
and Blob Storage.

Tasks go to the Service Bus queue in ``ServiceBusMessageBatch`` objects; dead letters are
read from the queue's dead-letter sub-queue (peek-lock: completed once re-sent, abandoned to
give them back); counts come from the administration client's runtime properties (which
need Manage rights); results are listed and read from the results container.

Credentials: a connection string for each service, or ``DefaultAzureCredential`` built to
fail within seconds (no interactive, PowerShell, VS Code or broker credentials; the managed
identity probe waits 1 s and does not retry; developer CLIs get a few seconds) and asked
for a token before anything else, so "no credentials" is one line at once rather than a
credential dump after the clients' retries.

Importing this module imports no SDK; the Azure clients are imported by :func:`open_backend`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import AdderError, CloudUnavailableError, ConfigError, ProviderUnavailableError
from core.ops.backend import DeadLetter, JobBackend, QueueDepth, Refused, record_from_key
from core.ops.target import Setting

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from azure.core.credentials import TokenCredential
    from azure.identity import DefaultAzureCredential
    from azure.servicebus import ServiceBusMessageBatch, ServiceBusReceivedMessage
    from azure.storage.blob import ContainerClient

    from core.ops.backend import RecordInfo
    from core.ops.target import Target

SETTINGS = (
    Setting(
        "namespace",
        "the Service Bus namespace: a name (sb-adder-1a2b3c) or host name",
        output="servicebus_namespace",
        config="config.namespace",
        env=("SERVICEBUS_CONNECTION__fullyQualifiedNamespace",),
    ),
    Setting(
        "queue",
        "the task queue's name",
        output="queue_name",
        config="queue_name",
        env=("TASK_QUEUE_NAME",),
    ),
    Setting(
        "connection_string",
        "a Service Bus connection string instead of Entra ID ($SERVICEBUS_CONNECTION_STRING)",
        env=("SERVICEBUS_CONNECTION_STRING",),
        secret=True,
    ),
    Setting(
        "account_url",
        "the results storage account URL",
        output="results_blob_account_url",
        config="config.account_url",
        env=("RESULTS_BLOB_ACCOUNT_URL",),
    ),
    Setting(
        "blob_connection_string",
        "a storage connection string instead, e.g. for Azurite ($RESULTS_BLOB_CONNECTION_STRING)",
        env=("RESULTS_BLOB_CONNECTION_STRING",),
        secret=True,
    ),
    Setting(
        "container",
        "the results container",
        output="results_container",
        config="result_bucket",
        env=("RESULTS_CONTAINER",),
    ),
    Setting(
        "prefix",
        "the results prefix",
        output="results_prefix",
        config="result_prefix",
        env=("RESULTS_PREFIX",),
    ),
)

INSTALL_HINT = "the Azure commands need the Azure SDKs: pip install 'adder-tasks[azure]'"
NO_CREDENTIALS = (
    "no Azure credentials: run az login, or set --connection-string (and "
    "--blob-connection-string for the results), or AZURE_TENANT_ID, AZURE_CLIENT_ID and "
    "AZURE_CLIENT_SECRET"
)
PUBLIC_CLOUD_SUFFIX = ".servicebus.windows.net"
SERVICE_BUS_SCOPE = "https://servicebus.azure.net/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"

BATCH_HEADROOM_BYTES = 1024
"""Room left in each batch: the SDK's size count leaves out the batch envelope's own properties
(the first message's id) and the growth of the list header, which together put a full batch a
few dozen bytes over the queue's limit on the wire."""
STANDARD_MAX_MESSAGE_BYTES = 256 * 1024
"""A Standard-tier queue's message (and batch) limit; the link announces the real one."""
MAX_BATCH_MESSAGES = 500
MAX_BATCH_BYTES = 200 * 1024
"""Task bytes per driver batch: with each message's AMQP overhead (about 60 bytes with its
id) a full batch of small tasks still fits one Standard-tier batch; a larger one is split."""
RECEIVE_WAIT_SECONDS = 1.0
CREDENTIAL_PROCESS_TIMEOUT_SECONDS = 5
"""How long ``az``/``azd`` may take to hand out a token."""
SERVICE_BUS_RETRIES = 2
SERVICE_BUS_BACKOFF_SECONDS = 0.5
BLOB_RETRIES = 2
BLOB_CONNECTION_TIMEOUT_SECONDS = 3
BLOB_READ_TIMEOUT_SECONDS = 20
BLOB_CONNECTIONS = 32
"""HTTP connections kept per host: ``adder fetch`` downloads 16 at once by default."""

MANAGE_NOTE = (
    "note: Service Bus queue counts need Manage rights ('Azure Service Bus Data Owner', or a "
    "connection string with Manage); shown as unknown"
)


def fully_qualified_namespace(namespace: str) -> str:
    """``sb-x`` -> ``sb-x.servicebus.windows.net``; a name with a dot is kept as it is."""
    namespace = namespace.strip().removeprefix("sb://").rstrip("/")
    return namespace if "." in namespace else namespace + PUBLIC_CLOUD_SUFFIX


def namespace_of_connection_string(connection_string: str) -> str:
    """The namespace host a Service Bus connection string names (its ``Endpoint``)."""
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "endpoint":
            return value.strip().removeprefix("sb://").rstrip("/")
    return "the namespace of the connection string"


@dataclass(frozen=True)
class Place:
    """What an error message names, and how each kind of failure is fixed."""

    name: str
    """E.g. ``Service Bus queue 'tasks' on sb-x.servicebus.windows.net``."""
    missing: str
    """How to fix "does not exist"."""
    denied: str
    """How to fix "access denied"."""


MISSING, DENIED, UNREACHABLE, DISABLED, RETRY, REFUSED, INVALID = (
    "missing",
    "denied",
    "unreachable",
    "disabled",
    "retry",
    "refused",
    "invalid",
)


def translate_error(exc: BaseException, place: Place) -> AdderError:
    """The one line a Service Bus, Storage or credential error becomes.

    ConfigError when no retry can fix it: no credentials, no such namespace, queue, account
    or container, access denied, an unreachable endpoint, a malformed setting.
    CloudUnavailableError when another try may work: timeouts, a dropped connection, a busy
    or full queue, throttling and server errors. Anything else (a bug) is raised again.
    """
    from azure.servicebus.exceptions import ServiceBusError

    if isinstance(exc, AdderError):
        return exc
    if _is_credential_failure(exc):
        return ConfigError(NO_CREDENTIALS)
    kind = _service_bus_kind(exc) if isinstance(exc, ServiceBusError) else _http_kind(exc)
    if kind is None:
        raise exc
    detail = _detail(exc)
    if kind == RETRY:
        return CloudUnavailableError(f"{place.name}: {detail}")
    text = {
        MISSING: f"{place.name} does not exist ({detail}): {place.missing}",
        DENIED: f"access to {place.name} denied ({detail}): {place.denied}",
        UNREACHABLE: f"cannot reach {place.name} ({detail}): {place.missing}",
        DISABLED: f"{place.name} is disabled ({detail}): enable it",
        REFUSED: f"{place.name} refused the request ({detail})",
        INVALID: f"invalid settings for {place.name} ({detail})",
    }[kind]
    return ConfigError(text)


def _service_bus_kind(exc: BaseException) -> str:
    from azure.servicebus.exceptions import (
        MessagingEntityDisabledError,
        MessagingEntityNotFoundError,
        OperationTimeoutError,
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
        ServiceBusCommunicationError,
        ServiceBusConnectionError,
        ServiceBusQuotaExceededError,
        ServiceBusServerBusyError,
    )

    rules: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
        (MessagingEntityNotFoundError, MISSING),
        (ServiceBusCommunicationError, UNREACHABLE),  # the namespace itself is unknown
        ((ServiceBusAuthenticationError, ServiceBusAuthorizationError), DENIED),
        (MessagingEntityDisabledError, DISABLED),
        ((OperationTimeoutError, ServiceBusServerBusyError, ServiceBusQuotaExceededError), RETRY),
    )
    if getattr(exc, "_condition", None) == UNAUTHORIZED_ACCESS:  # a link or connection refused
        return DENIED
    for classes, kind in rules:
        if isinstance(exc, classes):
            return kind
    if isinstance(exc, ServiceBusConnectionError):  # never connected, or dropped
        return UNREACHABLE if "initiate the connection" in str(exc) else RETRY
    return RETRY if getattr(exc, "_retryable", False) else REFUSED


def _http_kind(exc: BaseException) -> str | None:
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            return MISSING
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            return DENIED
        return RETRY if status in (408, 429) or status >= 500 else REFUSED
    rules: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
        (ServiceRequestError, UNREACHABLE),  # the request never left: DNS, refused, TLS
        ((AzureError, OSError), RETRY),
        (ValueError, INVALID),
    )
    for classes, kind in rules:
        if isinstance(exc, classes):
            return kind
    return None


def _is_credential_failure(exc: BaseException) -> bool:
    """A credential that could not produce a token, anywhere in the exception's chain (an
    HTTP 401 from a service carries a response; a failed credential does not)."""
    from azure.core.exceptions import ClientAuthenticationError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ClientAuthenticationError) and current.response is None:
            return True
        current = current.__cause__ or current.__context__
    return False


UNAUTHORIZED_ACCESS = "amqp:unauthorized-access"
_CONDITION = re.compile(r"\s*Error condition: .*$|\s*Status Code: .*$")
_ADDRESS = re.compile(r"<[^>]*>:\s*")
_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^\"()]*?(?=\s+Error condition|[\"()]|$)")


def _detail(exc: BaseException) -> str:
    """The exception's first line; for a socket failure only its ``[Errno N] reason``."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    os_error = _OS_ERROR.search(text)
    if os_error:
        return os_error.group(0)
    text = _CONDITION.sub("", text)  # Service Bus: " Error condition: amqp:not-found."
    text = _ADDRESS.sub("", text)  # "<urllib3.connection.HTTPConnection object at 0x..>: "
    return text[:300]


def default_credential() -> DefaultAzureCredential:
    """``DefaultAzureCredential`` that answers within seconds and prints nothing.

    Kept: environment (service principal), workload identity, managed identity (its IMDS
    probe connects for at most 1 s and does not retry), Azure CLI and Azure Developer CLI
    (each at most :data:`CREDENTIAL_PROCESS_TIMEOUT_SECONDS`). Left out: interactive browser,
    PowerShell (slow to start), VS Code, the shared token cache and the broker (Windows).
    """
    from azure.identity import DefaultAzureCredential

    quiet_sdk_logs()
    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_powershell_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_broker_credential=True,
        process_timeout=CREDENTIAL_PROCESS_TIMEOUT_SECONDS,
    )


def check_credential(credential: TokenCredential, scope: str) -> None:
    """Get one token now: no credentials is one ConfigError before any client retries."""
    try:
        credential.get_token(scope)
    except Exception as exc:
        # from None: the user gets one line, not the credential chain's report
        place = Place("Microsoft Entra ID", NO_CREDENTIALS, NO_CREDENTIALS)
        raise translate_error(exc, place) from None


def quiet_sdk_logs() -> None:
    """Keep the SDKs' warnings (the credential chain's report, pool notices) off stderr
    unless the user configured logging: Python prints unhandled warnings otherwise."""
    for name in ("azure", "urllib3"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


class _Sender(Protocol):
    def create_message_batch(self, max_size_in_bytes: int | None = None) -> ServiceBusMessageBatch:
        """A batch of at most ``max_size_in_bytes`` (the link's limit by default)."""

    def send_messages(self, message: ServiceBusMessageBatch) -> None:
        """Send one batch, whole or not at all."""

    def close(self) -> None:
        """Close the link."""


class _Receiver(Protocol):
    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ServiceBusReceivedMessage]:
        """Up to ``max_message_count`` messages, locked."""

    def complete_message(self, message: ServiceBusReceivedMessage) -> None:
        """Remove a locked message."""

    def abandon_message(self, message: ServiceBusReceivedMessage) -> None:
        """Give a locked message back."""

    def close(self) -> None:
        """Close the link."""


class _Admin(Protocol):
    def get_queue_runtime_properties(self, queue_name: str) -> Any:
        """The queue's message counts."""

    def close(self) -> None:
        """Close the HTTP pipeline."""


@dataclass
class ServiceBusParts:
    """The Service Bus clients of one job's queue (each may be a test double)."""

    queue: str
    namespace: str
    """The namespace's host name, for messages."""
    sender: _Sender
    dead_letters: _Receiver
    admin: _Admin | None = None
    closeables: tuple[Any, ...] = ()
    """The client(s) the parts came from, closed last."""


class AzureJobBackend(JobBackend):
    """Service Bus queue + dead-letter sub-queue, and the results container.

    The Service Bus sender and receiver are not thread-safe: ``max_concurrency`` is 1 and
    each link is used under a lock. A missing part (no queue given to ``adder fetch``, no
    container given to ``adder redrive``) raises ConfigError when used.
    """

    max_batch_messages = MAX_BATCH_MESSAGES
    max_batch_bytes = MAX_BATCH_BYTES
    max_concurrency = 1

    def __init__(
        self,
        bus: ServiceBusParts | None = None,
        container: ContainerClient | None = None,
        prefix: str = "",
        *,
        credential: TokenCredential | None = None,
        notes: Any = None,
    ) -> None:
        self.bus = bus
        self.container = container
        self.prefix = prefix.strip("/")
        self.credential = credential
        self.notes = notes
        """Where one-time notes go (stderr by default)."""
        self._send_lock = threading.Lock()
        self._receive_lock = threading.Lock()
        self._batch_limit: int | None = None
        self._manage_allowed = True
        if bus is not None:
            self.queue_label = f"Service Bus queue {bus.queue} on {bus.namespace}"
            self._queue_place = Place(
                f"Service Bus queue {bus.queue!r} on {bus.namespace}",
                "check --queue and --namespace (or --connection-string)",
                "give your identity 'Azure Service Bus Data Sender' and 'Data Receiver' on the"
                " queue (or use a connection string with Send and Listen)",
            )
        else:
            self.queue_label = "no Service Bus queue (give --queue and --namespace)"
        if container is not None:
            where = f"{container.url.rstrip('/')}/{self.prefix + '/' if self.prefix else ''}"
            self.results_label = where
            self._results_place = Place(
                f"container {container.container_name!r} at {_account_of(container)}",
                "check --container and --account-url (or --blob-connection-string)",
                "give your identity 'Storage Blob Data Reader' on the container (or use a "
                "connection string)",
            )

    # --- the task queue -------------------------------------------------------------------

    def _bus(self) -> ServiceBusParts:
        if self.bus is None:
            raise ConfigError("no Service Bus queue given: give --queue and --namespace")
        return self.bus

    def send_batch(self, bodies: Sequence[bytes]) -> list[Refused]:
        """Send ``bodies`` in as few SDK batches as fit the queue's limit (less headroom).

        Refused for good: a body larger than one message may be. If a later SDK batch of the
        call fails transiently after an earlier one went, its messages are refused with
        ``retry=True``; a failure of the first raises (nothing was sent).
        """
        from azure.servicebus import ServiceBusMessage
        from azure.servicebus.exceptions import MessageSizeExceededError

        bus = self._bus()
        refused: list[Refused] = []
        with self._send_lock:
            try:
                limit = self._limit(bus.sender)
                batches: list[tuple[ServiceBusMessageBatch, list[int]]] = []
                batch, indexes = bus.sender.create_message_batch(limit), []
                for index, body in enumerate(bodies):
                    message = ServiceBusMessage(body, message_id=uuid.uuid4().hex)
                    try:
                        batch.add_message(message)
                        indexes.append(index)
                        continue
                    except MessageSizeExceededError:
                        pass
                    if indexes:  # this batch is full: start the next with this message
                        batches.append((batch, indexes))
                        batch, indexes = bus.sender.create_message_batch(limit), []
                        try:
                            batch.add_message(message)
                            indexes.append(index)
                            continue
                        except MessageSizeExceededError:
                            pass
                    refused.append(Refused(index, _too_large(len(body), limit), retry=False))
                if indexes:
                    batches.append((batch, indexes))
            except Exception as exc:
                raise translate_error(exc, self._queue_place) from None
            for number, (batch, _) in enumerate(batches):
                try:
                    bus.sender.send_messages(batch)
                except Exception as exc:
                    error = translate_error(exc, self._queue_place)
                    if number == 0 or not isinstance(error, CloudUnavailableError):
                        raise error from None
                    rest = [i for _, later in batches[number:] for i in later]
                    refused += [Refused(i, str(error), retry=True) for i in rest]
                    break
        return sorted(refused, key=lambda refusal: refusal.index)

    def _limit(self, sender: _Sender) -> int:
        """The batch size used: the queue's limit (known once the link is open) less
        :data:`BATCH_HEADROOM_BYTES`."""
        if self._batch_limit is None:
            limit = sender.create_message_batch().max_size_in_bytes
            self._batch_limit = max(limit - BATCH_HEADROOM_BYTES, limit // 2)
        return self._batch_limit

    def _runtime_properties(self) -> Any:
        """The queue's runtime properties, or None without Manage rights or without a queue."""
        bus = self.bus
        if bus is None or bus.admin is None or not self._manage_allowed:
            return None
        try:
            return bus.admin.get_queue_runtime_properties(bus.queue)
        except Exception as exc:
            error = translate_error(exc, self._queue_place)
            if isinstance(error, ConfigError) and str(error).startswith("access to"):
                self._manage_allowed = False
                print(MANAGE_NOTE, file=self.notes or sys.stderr)
                return None
            raise error from None

    def dead_letter_count(self) -> int | None:
        """Messages in the dead-letter sub-queue (None without Manage rights)."""
        props = self._runtime_properties()
        return None if props is None else int(props.dead_letter_message_count or 0)

    def queue_depth(self) -> QueueDepth:
        """Active messages (waiting or locked by the function: Service Bus counts both as
        active, so in flight is unknown), plus scheduled ones."""
        props = self._runtime_properties()
        if props is None:
            return QueueDepth(None, None)
        waiting = int(props.active_message_count or 0) + int(props.scheduled_message_count or 0)
        return QueueDepth(waiting, None)

    # --- dead letters -----------------------------------------------------------------------

    def receive_dead_letters(self, max_messages: int) -> list[DeadLetter]:
        """Up to ``max_messages`` dead letters, peek-locked, waiting at most about 1 s."""
        bus = self._bus()
        with self._receive_lock:
            try:
                messages = bus.dead_letters.receive_messages(
                    max_message_count=max_messages, max_wait_time=RECEIVE_WAIT_SECONDS
                )
            except Exception as exc:
                raise translate_error(exc, self._dead_letter_place()) from None
        return [DeadLetter(message_body(message), message) for message in messages]

    def delete_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Complete each letter; one whose lock was lost stays and is moved again later (a
        duplicate, never a loss)."""
        from azure.servicebus.exceptions import MessageLockLostError

        bus = self._bus()
        with self._receive_lock:
            for letter in letters:
                try:
                    bus.dead_letters.complete_message(letter.handle)  # type: ignore[arg-type]
                except MessageLockLostError:
                    continue
                except Exception as exc:
                    raise translate_error(exc, self._dead_letter_place()) from None

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Abandon each letter: it is back on the dead-letter sub-queue at once."""
        from azure.servicebus.exceptions import MessageLockLostError

        bus = self._bus()
        with self._receive_lock:
            for letter in letters:
                try:
                    bus.dead_letters.abandon_message(letter.handle)  # type: ignore[arg-type]
                except MessageLockLostError:
                    continue  # its lock expired: it is back already
                except Exception as exc:
                    raise translate_error(exc, self._dead_letter_place()) from None

    def _dead_letter_place(self) -> Place:
        return Place(
            f"the dead-letter queue of {self._queue_place.name}",
            self._queue_place.missing,
            "give your identity 'Azure Service Bus Data Receiver' on the queue (or use a "
            "connection string with Listen)",
        )

    # --- results ----------------------------------------------------------------------------

    def _container(self) -> ContainerClient:
        if self.container is None:
            raise ConfigError("no results container given: give --container and --account-url")
        return self.container

    def list_records(self) -> Iterator[RecordInfo]:
        """Every ``{prefix}/{name}.out|.err`` blob, with its size and Content-MD5."""
        container = self._container()
        start = f"{self.prefix}/" if self.prefix else None
        try:
            for blob in container.list_blobs(name_starts_with=start):
                md5 = blob.content_settings.content_md5 if blob.content_settings else None
                record = record_from_key(
                    blob.name, self.prefix, int(blob.size or 0), bytes(md5).hex() if md5 else None
                )
                if record is not None:
                    yield record
        except Exception as exc:
            raise translate_error(exc, self._results_place) from None

    def read_record(self, record: RecordInfo) -> bytes:
        """The blob's bytes."""
        container = self._container()
        try:
            return container.download_blob(record.key).readall()
        except Exception as exc:
            raise translate_error(exc, self._results_place) from None

    def close(self) -> None:
        """Close the links, the clients and the credential; errors on the way are ignored."""
        parts: list[Any] = []
        if self.bus is not None:
            parts += [self.bus.sender, self.bus.dead_letters, self.bus.admin, *self.bus.closeables]
        parts += [self.container, self.credential]
        for part in parts:
            close = getattr(part, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:  # closing is best effort
                continue


def message_body(message: ServiceBusReceivedMessage) -> bytes:
    """A received message's body as bytes (a data body joined; any other kind as text)."""
    from azure.servicebus.amqp import AmqpMessageBodyType

    if message.body_type == AmqpMessageBodyType.DATA:
        return b"".join(bytes(part) for part in message.body)
    return str(message).encode("utf-8", "surrogatepass")


def _too_large(size: int, limit: int) -> str:
    return f"a task of {size:,} bytes does not fit one Service Bus message ({limit:,} bytes)"


def _account_of(container: ContainerClient) -> str:
    return str(container.url).rsplit("/", 1)[0]


# --- building the clients -------------------------------------------------------------------


def open_backend(target: Target, command: str) -> JobBackend:
    """The Service Bus + Blob backend of ``target`` (Azure clients imported here).

    submit and redrive need the queue; fetch needs the results; status and watch need the
    results and use the queue for counts when it is given.
    """
    what = f"adder {command} azure"
    queue_needed = command in ("submit", "redrive")
    results_needed = command in ("watch", "fetch", "status")
    queue_wanted = queue_needed or (command in ("watch", "status") and bool(target.get("queue")))
    queue = namespace = connection_string = None
    if queue_wanted:
        queue = target.require("queue", SETTINGS, what)
        connection_string = target.get("connection_string")
        if not connection_string:
            namespace = _require_either(target, "namespace", "--connection-string", what)
    container_name = account_url = blob_connection_string = None
    if results_needed:
        container_name = target.require("container", SETTINGS, what)
        blob_connection_string = target.get("blob_connection_string")
        if not blob_connection_string:
            account_url = _require_either(target, "account_url", "--blob-connection-string", what)
    try:
        import azure.servicebus
        import azure.storage.blob  # noqa: F401
    except ImportError:
        raise ProviderUnavailableError(INSTALL_HINT) from None
    quiet_sdk_logs()
    credential: TokenCredential | None = None
    if namespace or account_url:
        credential = default_credential()
        check_credential(credential, SERVICE_BUS_SCOPE if namespace else STORAGE_SCOPE)
    bus = None
    if queue:
        bus = service_bus_parts(
            queue,
            namespace=namespace,
            connection_string=connection_string,
            credential=credential,
            admin=command in ("watch", "status"),
        )
    container = None
    if container_name:
        container = container_client(
            container_name,
            account_url=account_url,
            connection_string=blob_connection_string,
            credential=credential,
        )
    return AzureJobBackend(bus, container, target.get("prefix") or "", credential=credential)


def _require_either(target: Target, name: str, alternative: str, what: str) -> str:
    try:
        return target.require(name, SETTINGS, what)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; or {alternative}") from None


def service_bus_parts(
    queue: str,
    *,
    namespace: str | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | None = None,
    admin: bool = False,
) -> ServiceBusParts:
    """One ServiceBusClient, its queue sender and dead-letter receiver (and the
    administration client for counts); nothing connects until used."""
    from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode, ServiceBusSubQueue
    from azure.servicebus.management import ServiceBusAdministrationClient

    host = (
        namespace_of_connection_string(connection_string)
        if connection_string
        else fully_qualified_namespace(str(namespace))
    )
    place = Place(
        f"Service Bus namespace {host}",
        "check --namespace (or --connection-string)",
        "check the connection string's key",
    )
    try:
        if connection_string:
            client = ServiceBusClient.from_connection_string(
                connection_string,
                retry_total=SERVICE_BUS_RETRIES,
                retry_backoff_factor=SERVICE_BUS_BACKOFF_SECONDS,
            )
            manager = (
                ServiceBusAdministrationClient.from_connection_string(
                    connection_string, retry_total=SERVICE_BUS_RETRIES
                )
                if admin
                else None
            )
        else:
            assert credential is not None
            client = ServiceBusClient(
                host,
                credential,
                retry_total=SERVICE_BUS_RETRIES,
                retry_backoff_factor=SERVICE_BUS_BACKOFF_SECONDS,
            )
            manager = (
                ServiceBusAdministrationClient(host, credential, retry_total=SERVICE_BUS_RETRIES)
                if admin
                else None
            )
        sender = client.get_queue_sender(queue)
        receiver = client.get_queue_receiver(
            queue,
            sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
        )
    except ValueError:  # never echo the string: it holds a key
        raise ConfigError(
            "the Service Bus connection string is malformed: expected "
            "Endpoint=sb://NAMESPACE/;SharedAccessKeyName=NAME;SharedAccessKey=KEY"
        ) from None
    except Exception as exc:
        raise translate_error(exc, place) from None
    return ServiceBusParts(queue, host, sender, receiver, manager, (client,))


def container_client(
    container: str,
    *,
    account_url: str | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | None = None,
) -> ContainerClient:
    """The results container's client: bounded retries and timeouts, a pool big enough for
    ``adder fetch``'s downloads."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import ContainerClient, ExponentialRetry

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=BLOB_CONNECTIONS, pool_maxsize=BLOB_CONNECTIONS
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    options: dict[str, Any] = {
        "retry_policy": ExponentialRetry(
            initial_backoff=0,
            increment_base=2,
            retry_total=BLOB_RETRIES,
            retry_connect=1,  # a refused connection or unknown host: one more try, 1-3 s on
            random_jitter_range=1,
            retry_to_secondary=False,
        ),
        "transport": RequestsTransport(session=session, session_owner=True),
        "connection_timeout": BLOB_CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": BLOB_READ_TIMEOUT_SECONDS,
    }
    try:
        if connection_string:
            return ContainerClient.from_connection_string(connection_string, container, **options)
        return ContainerClient(str(account_url), container, credential=credential, **options)
    except ValueError:  # never echo the string: it holds a key
        what = "storage connection string" if connection_string else "--account-url"
        raise ConfigError(
            f"the {what} is malformed: expected "
            + (
                "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=..."
                if connection_string
                else "https://ACCOUNT.blob.core.windows.net/"
            )
        ) from None
