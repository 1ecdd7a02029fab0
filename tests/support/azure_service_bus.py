"""A Service Bus double for the Azure job backend's tests: no Service Bus emulator exists here.

What is real: ``ServiceBusMessage`` and ``ServiceBusMessageBatch`` (the SDK's own size
accounting decides what fits a batch), ``ServiceBusReceivedMessage`` (built from a pyamqp
message, as the receiver builds it), the SDK's exception classes, and the real
``ServiceBusAdministrationClient`` whose HTTP requests a transport answers with the Atom
entry Service Bus returns (the SDK parses the counts from it).

What is not exercised against a broker: the AMQP links of the sender and the dead-letter
receiver (``FakeSender`` and ``FakeReceiver`` stand in for ``ServiceBusSender`` and
``ServiceBusReceiver``: they keep messages in memory, lock received ones and settle them the
way peek-lock does), lock expiry, the broker's own batch size check beyond the link's
announced limit, and Entra ID or SAS authorization. ``tests/unit/test_azure_submit.py``
covers the sender's AMQP encoding below ``ServiceBusSender`` with a fake link.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.servicebus import ServiceBusMessageBatch, ServiceBusReceivedMessage
from azure.servicebus._pyamqp.message import Message, Properties
from azure.servicebus.exceptions import MessageLockLostError, MessagingEntityNotFoundError
from azure.servicebus.management import ServiceBusAdministrationClient

from azure_function.job_backend import ServiceBusParts, message_body

if TYPE_CHECKING:
    from azure.core.pipeline.transport import HttpRequest

NAMESPACE = "sb-test.servicebus.windows.net"
CONNECTION_STRING = (
    f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=manage;SharedAccessKey=bm90LWEtcmVhbC1rZXk="
)
STANDARD_LIMIT = 256 * 1024

QUEUE_ENTRY = """<entry xmlns="http://www.w3.org/2005/Atom">
<id>https://{namespace}/{queue}</id><title type="text">{queue}</title>
<content type="application/xml"><QueueDescription
 xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
 xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus">
<d2p1:ActiveMessageCount>{active}</d2p1:ActiveMessageCount>
<d2p1:DeadLetterMessageCount>{dead}</d2p1:DeadLetterMessageCount>
<d2p1:ScheduledMessageCount>0</d2p1:ScheduledMessageCount>
<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>
<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount>
</CountDetails></QueueDescription></content></entry>"""
UNAUTHORIZED = "<Error><Code>401</Code><Detail>Manage claims required.</Detail></Error>"
NOT_FOUND = "<Error><Code>404</Code><Detail>The messaging entity was not found.</Detail></Error>"


@dataclass
class FakeServiceBus:
    """One queue and its dead-letter sub-queue, in memory."""

    queue_name: str = "tasks"
    exists: bool = True
    manage_allowed: bool = True
    max_message_size: int = STANDARD_LIMIT
    queued: list[tuple[str, bytes]] = field(default_factory=list)
    """(message id, body) of every message sent, in order."""
    batches: list[int] = field(default_factory=list)
    """The size of each batch sent."""
    dead: list[tuple[str, bytes]] = field(default_factory=list)
    locked: dict[str, bytes] = field(default_factory=dict)
    send_failures: list[Exception] = field(default_factory=list)
    """Raised by the next sends, one each."""
    admin_requests: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def dead_letter(self, body: bytes) -> None:
        """Put ``body`` on the dead-letter sub-queue."""
        self.dead.append((f"dl-{next(self._ids)}", body))

    def take_queued(self) -> list[bytes]:
        """The bodies on the task queue, removed."""
        bodies = [body for _, body in self.queued]
        self.queued.clear()
        return bodies

    def check_exists(self) -> None:
        if not self.exists:
            raise MessagingEntityNotFoundError(
                message=f"The messaging entity '{NAMESPACE}/{self.queue_name}' could not be found."
            )

    def parts(self, *, admin: bool = True) -> ServiceBusParts:
        """The backend's Service Bus parts, talking to this double."""
        return ServiceBusParts(
            self.queue_name,
            NAMESPACE,
            FakeSender(self),
            FakeReceiver(self),
            self.admin_client() if admin else None,
        )

    def admin_client(self) -> ServiceBusAdministrationClient:
        """The real administration client, its HTTP answered from this double's state."""
        return ServiceBusAdministrationClient.from_connection_string(
            CONNECTION_STRING, transport=AdminTransport(self), retry_total=0
        )


class FakeSender:
    """Stands in for ``ServiceBusSender``: batches are the SDK's own."""

    def __init__(self, bus: FakeServiceBus) -> None:
        self.bus = bus
        self.closed = False

    def create_message_batch(self, max_size_in_bytes: int | None = None) -> ServiceBusMessageBatch:
        self.bus.check_exists()
        if max_size_in_bytes and max_size_in_bytes > self.bus.max_message_size:
            raise ValueError("max_size_in_bytes is larger than the link's limit")
        return ServiceBusMessageBatch(max_size_in_bytes or self.bus.max_message_size)

    def send_messages(self, message: ServiceBusMessageBatch) -> None:
        self.bus.check_exists()
        if self.bus.send_failures:
            raise self.bus.send_failures.pop(0)
        assert message.size_in_bytes <= self.bus.max_message_size
        self.bus.batches.append(len(message))
        for sent in message._messages:
            self.bus.queued.append((str(sent.message_id), b"".join(sent.body)))

    def close(self) -> None:
        self.closed = True


class FakeReceiver:
    """Stands in for the dead-letter ``ServiceBusReceiver`` in peek-lock mode."""

    def __init__(self, bus: FakeServiceBus) -> None:
        self.bus = bus
        self.closed = False

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[ServiceBusReceivedMessage]:
        self.bus.check_exists()
        if not self.bus.dead:  # as the SDK does: wait for messages, then give up
            time.sleep(min(max_wait_time or 1.0, 1.0))
        taken = self.bus.dead[: max_message_count or 1]
        del self.bus.dead[: len(taken)]
        received = []
        for message_id, body in taken:
            self.bus.locked[message_id] = body
            amqp = Message(data=[body], properties=Properties(message_id=message_id.encode()))
            received.append(ServiceBusReceivedMessage(amqp, receiver=None))
        return received

    def _unlock(self, message: ServiceBusReceivedMessage) -> bytes:
        body = self.bus.locked.pop(str(message.message_id), None)
        if body is None:
            raise MessageLockLostError(message="The lock supplied is invalid.")
        assert message_body(message) == body
        return body

    def complete_message(self, message: ServiceBusReceivedMessage) -> None:
        self._unlock(message)

    def abandon_message(self, message: ServiceBusReceivedMessage) -> None:
        body = self._unlock(message)
        self.bus.dead.insert(0, (str(message.message_id), body))

    def close(self) -> None:
        self.closed = True


class AdminTransport(HttpTransport[Any, Any]):
    """Answers the administration client as Service Bus would, from the double's state."""

    def __init__(self, bus: FakeServiceBus) -> None:
        self.bus = bus

    def __enter__(self) -> AdminTransport:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: HttpRequest, **kwargs: Any) -> RequestsTransportResponse:
        self.bus.admin_requests.append(request.url)
        bus = self.bus
        if not bus.manage_allowed:
            status, body = 401, UNAUTHORIZED
        elif not bus.exists:
            status, body = 404, NOT_FOUND
        else:
            status = 200
            body = QUEUE_ENTRY.format(
                namespace=NAMESPACE,
                queue=bus.queue_name,
                active=len(bus.queued),
                dead=len(bus.dead) + len(bus.locked),
            )
        response = requests.Response()
        response.status_code = status
        response.reason = "fake"
        response._content = body.encode()
        response.headers["Content-Type"] = "application/atom+xml;type=entry;charset=utf-8"
        return RequestsTransportResponse(request, response)
