"""A Service Bus queue in memory, reached through the real ``ServiceBusReceiver`` down to its
AMQP receive client: the receive-side double of the worker's Azure tests.

No Service Bus emulator runs here, so, as tests/unit/test_azure_submit.py does for the sender,
the seam is the lowest the SDK has: pyamqp's ``ReceiveClient`` (the AMQP connection and
receiver link), which ``ServiceBusReceiver`` creates through
``PyamqpTransport.create_receive_client``. :func:`install` replaces that one factory, so
everything above it is the SDK's own code: ``ServiceBusClient.from_connection_string`` and
``get_queue_receiver``, the receiver's ``_open``, its batch ``_receive`` loop (link credit,
``max_wait_time``, the early return after a gap), the callback that releases messages arriving
outside a receive call, ``ServiceBusReceivedMessage`` built from each transfer (decoded from
the AMQP encoding of the message as the broker would send it: header, properties, the
``x-opt-locked-until``/``x-opt-sequence-number``/``x-opt-enqueued-time`` annotations, the data
body; the delivery tag is the lock token), the client-side lock-expiry check before settling,
settlement over the receiver link with the outcome awaited (the SDK's own
``check_disposition_outcome`` reads the broker's answer), ``renew_message_lock`` over the
management link (the SDK's own response handler reads the answer), and the SDK's mapping of
AMQP conditions to ``MessageLockLostError``, ``MessagingEntityNotFoundError``,
``ServiceBusAuthorizationError``, ``ServiceBusConnectionError``, with its retries, and its
fallback to settling by lock token over the management link when the receiver link that
delivered a message is gone.

:class:`FakeQueue` models what the broker does with peek-lock: a lock of ``lock_seconds`` per
delivery (it expires by the wall clock, checked on every call), renewal, complete, abandon
(back at once, the delivery counted), release (back, not counted), the delivery count
(Service Bus's count: 1 on the first delivery; on the wire the AMQP header carries one less,
the number of earlier attempts) and dead-lettering once a message's lock is abandoned or lost
on its ``max_delivery_count``-th delivery. Settling a message whose lock is gone is refused
with ``com.microsoft:message-lock-lost``, as is settling through another link than the one
that delivered it.

What it cannot prove (only a real namespace can): the broker's actual lock timing and clock
skew against the client, what the AMQP link does on the wire (flow control, transfer
framing, detach and reattach after an error, keep-alives, CBS token renewal and Entra ID or
SAS authorization), whether Service Bus counts a *released* delivery (modelled as not
counted), settlement through the management link after a link was lost, and throughput.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.error import (
    AMQPConnectionError,
    AMQPException,
    AMQPLinkError,
    ErrorCondition,
)
from azure.servicebus._pyamqp.message import Header, Message, Properties
from azure.servicebus._pyamqp.performatives import TransferFrame
from azure.servicebus._pyamqp.receiver import check_disposition_outcome, outcome_name
from azure.servicebus._pyamqp.types import TYPE, VALUE, AMQPTypes
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pytest

NAMESPACE = "sb-worker-test.servicebus.windows.net"
CONNECTION_STRING = (
    f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=listen;SharedAccessKey=bm90LWEtcmVhbC1rZXk="
)
LOCK_LOST = b"com.microsoft:message-lock-lost"
LOCK_LOST_TEXT = (
    "The lock supplied is invalid. Either the lock expired, or the message has already been"
    " removed from the queue."
)
RENEW_LOCK = b"com.microsoft:renew-lock"
UPDATE_DISPOSITION = b"com.microsoft:update-disposition"
_MGMT_OUTCOMES = {"completed": "accepted", "abandoned": "modified"}
WORK_WAIT_SECONDS = 0.02
"""How long one ``do_work`` waits for a message (the real one waits on the socket)."""


@dataclass
class Stored:
    """One message on the queue, as the broker keeps it."""

    sequence_number: int
    message_id: str
    body: bytes
    enqueued_ms: int
    delivery_count: int = 0
    """Service Bus's DeliveryCount: deliveries so far (1 while the first one is locked)."""
    lock_token: uuid.UUID | None = None
    locked_until: float = 0.0
    """``time.time()`` at which the current lock ends."""
    holder: FakeReceiveClient | None = None
    dead_letter_reason: str | None = None


@dataclass
class FakeQueue:
    """One peek-lock queue and its dead-letter sub-queue; thread-safe."""

    name: str = "tasks"
    lock_seconds: float = 30.0
    max_delivery_count: int = 10
    exists: bool = True
    listen_allowed: bool = True
    down: bool = False
    """While set, every call of every link fails as a dropped connection does."""
    skew_seconds: float = 0.0
    """How much later than the broker's the lock end each message tells the client (a client
    clock behind the broker's): the SDK's own expiry check then lets settlements through that
    the broker refuses."""
    completed: dict[str, bytes] = field(default_factory=dict)
    """message id -> body of every completed message."""
    completions: int = 0
    """Complete calls the broker accepted (duplicates of one message id included)."""
    dead: list[Stored] = field(default_factory=list)
    deliveries: int = 0
    abandoned: int = 0
    released: int = 0
    expired: int = 0
    """Locks that ran out before their message was settled."""
    renewals: int = 0
    refused_settlements: int = 0
    settled_by_lock_token: int = 0
    """Settlements that came over the management link (by lock token, no delivery)."""
    links: list[FakeReceiveClient] = field(default_factory=list)
    failures: dict[str, list[BaseException | None]] = field(default_factory=dict)
    """Raised by the next calls of one kind (``open``, ``receive``, ``settle`` on the
    receiver link, ``mgmt`` on the management link), one each, before the broker acts (None:
    that call goes through)."""
    _available: list[tuple[int, int]] = field(default_factory=list)
    _messages: dict[int, Stored] = field(default_factory=dict)
    _locked: dict[uuid.UUID, Stored] = field(default_factory=dict)
    _sequence: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _cond: threading.Condition = field(default_factory=threading.Condition)

    # --- what tests do -------------------------------------------------------------------

    def send(self, bodies: Iterable[bytes]) -> list[str]:
        """Enqueue each body as one message; their message ids."""
        ids = []
        now_ms = int(time.time() * 1000)
        with self._cond:
            for body in bodies:
                number = next(self._sequence)
                stored = Stored(number, uuid.uuid4().hex, bytes(body), now_ms)
                self._messages[number] = stored
                heapq.heappush(self._available, (number, number))
                ids.append(stored.message_id)
            self._cond.notify_all()
        return ids

    def fail_next(self, kind: str, *errors: BaseException | None) -> None:
        """Raise ``errors`` from the next calls of ``kind``, one each (None: let one pass)."""
        with self._cond:
            self.failures.setdefault(kind, []).extend(errors)

    def counts(self) -> dict[str, int]:
        """Active (available), locked, dead-lettered and completed messages, locks expired
        first."""
        with self._cond:
            self._expire(time.time())
            return {
                "active": len(self._available),
                "locked": len(self._locked),
                "dead": len(self.dead),
                "completed": len(self.completed),
            }

    def wait_until_locks_expire(self, timeout: float) -> bool:
        """Wait (up to ``timeout``) until no message is locked; True when none is."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._expire(time.time())
                if not self._locked:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    # --- the broker ----------------------------------------------------------------------

    def inject(self, kind: str) -> None:
        """Raise the next failure queued for ``kind`` (:meth:`fail_next`), if any."""
        with self._cond:
            pending = self.failures.get(kind)
            error = pending.pop(0) if pending else None
        if error is not None:
            raise error

    def _expire(self, now: float) -> None:
        """Locks that ran out: their messages come back (or go to the dead-letter queue)."""
        for token in [t for t, s in self._locked.items() if s.locked_until <= now]:
            self.expired += 1
            self._unlock(self._locked.pop(token), counted=True)

    def _unlock(self, stored: Stored, *, counted: bool) -> None:
        stored.lock_token = None
        stored.holder = None
        if not counted:
            stored.delivery_count -= 1
        elif stored.delivery_count >= self.max_delivery_count:
            stored.dead_letter_reason = "MaxDeliveryCountExceeded"
            self.dead.append(stored)
            del self._messages[stored.sequence_number]
            return
        heapq.heappush(self._available, (stored.sequence_number, stored.sequence_number))
        self._cond.notify_all()

    def attach(self, link: FakeReceiveClient, entity: str) -> None:
        self.inject("open")
        if entity.rstrip("/").rsplit("/", 1)[-1] != self.name or not self.exists:
            raise AMQPLinkError(
                ErrorCondition.NotFound,
                description=f"The messaging entity '{entity}' could not be found.",
            )
        if not self.listen_allowed:
            raise AMQPLinkError(
                ErrorCondition.UnauthorizedAccess,
                description="Unauthorized access. 'Listen' claim(s) are required.",
            )
        with self._cond:
            self.links.append(link)

    def take(self, link: FakeReceiveClient, count: int, wait: float) -> list[Stored]:
        """Lock up to ``count`` messages for ``link``, waiting up to ``wait`` for the first."""
        self.inject("receive")
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                now = time.time()
                self._expire(now)
                if self._available or time.monotonic() >= deadline:
                    break
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            taken: list[Stored] = []
            while self._available and len(taken) < count:
                _, number = heapq.heappop(self._available)
                stored = self._messages[number]
                stored.delivery_count += 1
                stored.lock_token = uuid.uuid4()
                stored.locked_until = now + self.lock_seconds
                stored.holder = link
                self._locked[stored.lock_token] = stored
                taken.append(stored)
            self.deliveries += len(taken)
            return taken

    def settle(
        self, link: FakeReceiveClient | None, token: uuid.UUID, outcome: str
    ) -> dict[str, Any]:
        """Apply ``outcome`` (accepted, modified, released) to the delivery with lock
        ``token`` on ``link`` (None: by lock token, through the management link); the outcome
        the broker answers with, as pyamqp decodes it."""
        if link is not None:
            self.inject("settle")
        with self._cond:
            self._expire(time.time())
            stored = self._locked.get(token)
            if stored is None or (link is not None and stored.holder is not link):
                self.refused_settlements += 1
                return {"rejected": [[LOCK_LOST, LOCK_LOST_TEXT, None]]}
            del self._locked[token]
            self.settled_by_lock_token += link is None
            if outcome == "accepted":
                del self._messages[stored.sequence_number]
                self.completed[stored.message_id] = stored.body
                self.completions += 1
            elif outcome == "modified":
                self.abandoned += 1
                self._unlock(stored, counted=True)
            elif outcome == "released":
                self.released += 1
                self._unlock(stored, counted=False)
            else:
                raise AssertionError(f"the worker never settles with {outcome!r}")
            return {outcome: []}

    def renew(self, tokens: Iterable[uuid.UUID]) -> list[int] | None:
        """New lock ends (epoch ms, as the client is told) for ``tokens``; None when one of
        them is lost."""
        with self._cond:
            now = time.time()
            self._expire(now)
            found = [self._locked.get(token) for token in tokens]
            if any(stored is None for stored in found):
                return None
            ends = []
            for stored in found:
                assert stored is not None
                stored.locked_until = now + self.lock_seconds
                ends.append(int((stored.locked_until + self.skew_seconds) * 1000))
            self.renewals += len(ends)
            return ends

    def detach(self, link: FakeReceiveClient) -> None:
        """A link closed: its locks stay until they expire, as on Service Bus."""
        with self._cond:
            self._cond.notify_all()


class _Link:
    """The receiver link's state the SDK reads and sets."""

    def __init__(self) -> None:
        self.name = f"receiver-link-{uuid.uuid4()}"
        self.current_link_credit = 0
        self._is_closed = False

    def flow(self, *, link_credit: int | None = None, drain: bool = False, **_: Any) -> None:
        self.current_link_credit = 0 if drain else (link_credit or 0)


class _Connection:
    def listen(self, wait: float = 0, batch: int = 1, **_: Any) -> None:
        """Nothing is in flight outside ``do_work`` (the drain on close finds nothing)."""


class FakeReceiveClient:
    """Stands in for pyamqp's ``ReceiveClient``: the AMQP connection and receiver link of
    one ``ServiceBusReceiver``, talking to a :class:`FakeQueue`."""

    def __init__(self, broker: FakeQueue, source: object, auth: Any = None, **_: Any) -> None:
        self.broker = broker
        self.source = str(source)
        self.auth = auth
        self._link = _Link()
        self._connection = _Connection()
        self._received_messages: queue.Queue[tuple[TransferFrame, Message]] = queue.Queue()
        self._shutdown = False
        self._socket_timeout = 0.2
        self._last_activity_timestamp: float | None = None
        self._message_received = self._buffer
        self._delivery_ids = itertools.count()
        self._tokens: dict[int, uuid.UUID] = {}
        self.frozen = threading.Event()
        """Set by :meth:`freeze`: every call waits (a worker that was killed says nothing)."""
        self.cut = threading.Event()
        """Set by :meth:`sever`: every call fails as a dropped connection does."""
        self._thawed = threading.Event()

    def freeze(self) -> None:
        """Make this link hang, as a SIGKILLed or frozen worker's would: no call returns."""
        self.frozen.set()

    def sever(self) -> None:
        """End :meth:`freeze`: every call now fails as on a dropped connection."""
        self.cut.set()
        self._thawed.set()

    def _alive(self) -> None:
        if self.frozen.is_set():
            self._thawed.wait()
        if self.cut.is_set() or self.broker.down:
            raise AMQPConnectionError(ErrorCondition.ConnectionCloseForced, description="cut")

    def _buffer(self, frame: TransferFrame, message: Message) -> None:
        self._received_messages.put((frame, message))

    # --- what ServiceBusReceiver calls ----------------------------------------------------

    def open(self, connection: object = None) -> None:
        self._alive()
        if self.auth is not None:  # CBS: the link asks for a token before it attaches
            self.auth.get_token()
        self.broker.attach(self, self.source)

    def client_ready(self) -> bool:
        self._alive()
        return True

    def do_work(self) -> bool:
        self._alive()
        if self._shutdown:
            return False
        credit = self._link.current_link_credit
        if credit <= 0:
            time.sleep(WORK_WAIT_SECONDS)
            return True
        for stored in self.broker.take(self, credit, WORK_WAIT_SECONDS):
            self._link.current_link_credit -= 1
            frame, message = self._transfer(stored)
            self._message_received(frame, message)
        return True

    def _transfer(self, stored: Stored) -> tuple[TransferFrame, Message]:
        """The message as the broker sends it, encoded and decoded as on the wire."""
        assert stored.lock_token is not None
        sent = Message(
            header=Header(durable=True, delivery_count=stored.delivery_count - 1),
            properties=Properties(message_id=stored.message_id),
            message_annotations={
                b"x-opt-locked-until": {
                    TYPE: AMQPTypes.timestamp,
                    VALUE: int((stored.locked_until + self.broker.skew_seconds) * 1000),
                },
                b"x-opt-sequence-number": {TYPE: AMQPTypes.long, VALUE: stored.sequence_number},
                b"x-opt-enqueued-time": {TYPE: AMQPTypes.timestamp, VALUE: stored.enqueued_ms},
            },
            data=[stored.body],
        )
        received = decode_payload(memoryview(encode_payload(bytearray(), sent)))
        delivery_id = next(self._delivery_ids)
        self._tokens[delivery_id] = stored.lock_token
        frame = TransferFrame(
            handle=0,
            delivery_id=delivery_id,
            delivery_tag=stored.lock_token.bytes_le,
            message_format=0,
            settled=False,
        )
        return frame, received

    def settle_messages(
        self, delivery_id: int, delivery_tag: bytes, outcome: str, **kwargs: Any
    ) -> None:
        self._alive()
        token = uuid.UUID(bytes_le=delivery_tag)
        if self._tokens.get(delivery_id) != token:  # delivered on another (an earlier) link
            raise AMQPException(ErrorCondition.IllegalState, description="Delivery tag not found.")
        if outcome == "modified":  # abandon; defer would be undeliverable_here=True
            assert kwargs.get("delivery_failed") and not kwargs.get("undeliverable_here")
        answer = self.broker.settle(self, token, outcome)
        if kwargs.get("await_outcome"):
            expected = outcome_name(_OUTCOMES[outcome]())
            check_disposition_outcome(delivery_id, answer, expected)

    def mgmt_request(
        self, message: Message, *, operation: Any, operation_type: Any, node: Any, timeout: Any
    ) -> tuple[int, str, Message]:
        """The management link: renew-lock, and update-disposition (the SDK's fallback when
        settling over the receiver link failed)."""
        self._alive()
        self.broker.inject("mgmt")
        name = operation[VALUE] if isinstance(operation, dict) else operation
        name = name.encode() if isinstance(name, str) else name
        decoded = decode_payload(memoryview(encode_payload(bytearray(), message)))
        request: dict[bytes, Any] = decoded.value or {}
        tokens = [uuid.UUID(str(t)) for t in request[b"lock-tokens"]]
        if name == UPDATE_DISPOSITION:
            status = request[b"disposition-status"]
            outcome = _MGMT_OUTCOMES[status.decode() if isinstance(status, bytes) else status]
            answers = [self.broker.settle(None, token, outcome) for token in tokens]
            if any("rejected" in answer for answer in answers):
                return _lock_lost_answer()
            return 200, "OK", Message(application_properties={b"statusCode": 200})
        assert name == RENEW_LOCK, name
        ends = self.broker.renew(tokens)
        if ends is None:
            return _lock_lost_answer()
        answer = Message(
            value={b"expirations": ends},
            application_properties={b"statusCode": 200, b"statusDescription": "OK"},
        )
        return 200, "OK", answer

    def close(self) -> None:
        self._shutdown = True
        self._link._is_closed = True
        self.broker.detach(self)


def _lock_lost_answer() -> tuple[int, str, Message]:
    """The management link's answer for a lock token it does not hold."""
    properties: dict[str | bytes, Any] = {
        b"statusCode": 410,
        b"statusDescription": LOCK_LOST_TEXT,
        b"errorCondition": LOCK_LOST,
    }
    return 410, LOCK_LOST_TEXT, Message(application_properties=properties)


def _outcome_classes() -> dict[str, type]:
    from azure.servicebus._pyamqp.outcomes import Accepted, Modified, Released

    return {"accepted": Accepted, "modified": Modified, "released": Released}


_OUTCOMES = _outcome_classes()


def install(monkeypatch: pytest.MonkeyPatch, broker: FakeQueue) -> FakeQueue:
    """Make every ServiceBusReceiver opened from now on talk to ``broker``."""

    def create_receive_client(receiver: object, **kwargs: Any) -> FakeReceiveClient:
        return FakeReceiveClient(broker, **kwargs)

    monkeypatch.setattr(
        PyamqpTransport, "create_receive_client", staticmethod(create_receive_client)
    )
    return broker
