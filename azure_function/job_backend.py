"""The Azure job backend: Service Bus queue and dead-letter sub-queue, Blob Storage results.

Tasks go to the Service Bus queue in ``ServiceBusMessageBatch`` objects; dead letters are
read from the queue's dead-letter sub-queue (peek-lock: completed once re-sent, abandoned to
give them back); counts come from the administration client's runtime properties (which
need Manage rights); results are listed and read from the results container. Every SDK
error goes through :func:`azure_function.job_errors.translate_error`.
"""

from __future__ import annotations

import sys
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from azure_function.job_errors import (
    container_resource,
    dead_letter_resource,
    problem_of,
    queue_resource,
    translate_error,
)
from core.errors import CloudUnavailableError, ConfigError
from core.ops.backend import DeadLetter, JobBackend, QueueDepth, Refused, record_from_key
from core.ops.problems import Problem

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from azure.core.credentials import TokenCredential
    from azure.servicebus import ServiceBusMessageBatch, ServiceBusReceivedMessage
    from azure.storage.blob import ContainerClient

    from core.ops.backend import RecordInfo

BLOB_CONNECTIONS = 32
"""HTTP connections the results container's client pools: downloads in flight at most."""

BATCH_HEADROOM_BYTES = 1024
"""Room left in each batch: the SDK's size count leaves out the batch envelope's own properties
(the first message's id) and the growth of the list header, which together put a full batch a
few dozen bytes over the queue's limit on the wire."""
MAX_BATCH_MESSAGES = 500
MAX_BATCH_BYTES = 200 * 1024
"""Task bytes per driver batch: with each message's AMQP overhead (about 60 bytes with its
id) a full batch of small tasks still fits one Standard-tier batch; a larger one is split."""
RECEIVE_WAIT_SECONDS = 1.0
MANAGE_NOTE = (
    "note: Service Bus queue counts need Manage rights ('Azure Service Bus Data Owner', or a "
    "connection string with Manage); shown as unknown"
)


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
    max_fetch_concurrency = BLOB_CONNECTIONS

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
            self._queue = queue_resource(bus.queue, bus.namespace)
            self._dead_letters = dead_letter_resource(bus.queue, bus.namespace)
        else:
            self.queue_label = "no Service Bus queue (give --queue and --namespace)"
        if container is not None:
            where = f"{container.url.rstrip('/')}/{self.prefix + '/' if self.prefix else ''}"
            self.results_label = where
            self._results = container_resource(container.container_name, _account_of(container))

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
                raise translate_error(exc, self._queue) from None
            for number, (batch, _) in enumerate(batches):
                try:
                    bus.sender.send_messages(batch)
                except Exception as exc:
                    error = translate_error(exc, self._queue)
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
            if problem_of(exc) is not Problem.DENIED:
                raise translate_error(exc, self._queue) from None
            self._manage_allowed = False
            print(MANAGE_NOTE, file=self.notes or sys.stderr)
            return None

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
                raise translate_error(exc, self._dead_letters) from None
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
                    raise translate_error(exc, self._dead_letters) from None

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
                    raise translate_error(exc, self._dead_letters) from None

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
            raise translate_error(exc, self._results) from None

    def read_record(self, record: RecordInfo) -> bytes:
        """The blob's bytes."""
        container = self._container()
        try:
            return container.download_blob(record.key).readall()
        except Exception as exc:
            raise translate_error(exc, self._results) from None

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
