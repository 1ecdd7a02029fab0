"""The receiver port: what the worker needs from a cloud's queue, and nothing more.

Each cloud implements :class:`Receiver` once over its SDK (AWS: ``aws_lambda/sqs_receiver.py``
over SQS). The worker loop (:mod:`core.worker.loop`) is written once over it:

========================  =====================  =========================  ======================
port                      SQS                    Pub/Sub (pull)             Service Bus (peek-lock)
========================  =====================  =========================  ======================
``receive``               ReceiveMessage          streaming pull buffer      ``receive_messages``
``extend``                ChangeMessageVisibility (the subscriber client)   renew the lock
``acknowledge``           DeleteMessage(Batch)    ack                        complete
``release``               visibility -> 0 (or N)  nack                       abandon
``delivery_count``        ApproximateReceiveCount ``delivery_attempt``       ``delivery_count`` + 1
========================  =====================  =========================  ======================

Errors: an adapter raises :class:`~core.errors.ConfigError` for what no retry fixes (no such
queue, access denied, no credentials: the worker stops, exit 2) and
:class:`~core.errors.CloudUnavailableError` for what another try may fix (throttled, 5xx, a
dropped connection: the worker logs it and tries again). Anything else is a bug (exit 1).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True, eq=False)
class ReceivedMessage:
    """One message as the queue delivered it; compared by identity (one receipt each)."""

    body: bytes
    """The task message, exactly as sent."""
    message_id: str | None
    """The queue's id of the message (the same on every delivery of it)."""
    delivery_count: int | None
    """Which delivery of the message this is, 1 for the first (None when unknown)."""
    handle: object
    """The adapter's own token for settling this delivery: SQS's receipt handle, Pub/Sub's
    message, Service Bus's received message. The worker never looks inside."""
    platform: Mapping[str, object] = field(default_factory=dict)
    """More fields for the task's log line (never secrets)."""


class Receiver(abc.ABC):
    """A cloud queue seen from one worker process: receive, extend, acknowledge, release.

    Every method may be called from several threads at once. ``acknowledge``, ``extend`` and
    ``release`` are given at most :attr:`max_batch` messages per call.
    """

    max_batch: int = 10
    """The most messages one receive, acknowledge, extend or release call takes."""
    lease_seconds: float = 30.0
    """How long a received message stays hidden from other consumers (SQS's visibility
    timeout, Pub/Sub's ack deadline, Service Bus's lock duration); the worker extends the
    lease of messages in hand well before it runs out."""
    describe: str = "the queue"
    """The queue as log and error lines name it."""

    @abc.abstractmethod
    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages, waiting up to ``wait_seconds`` for the first one
        (a long poll); an empty list when none came."""

    @abc.abstractmethod
    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        """Keep ``messages`` hidden for ``seconds`` more from now. A message whose lease has
        already passed to another consumer is skipped: it will be processed twice, which is
        harmless (results are written whole and are the same each time)."""

    @abc.abstractmethod
    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """Remove ``messages`` from the queue for good (their record is written); return
        those the queue did not take (they will be delivered again: a duplicate, not a loss)."""

    @abc.abstractmethod
    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        """Give ``messages`` back to the queue, to be delivered again after ``delay_seconds``
        (0: now). A queue that cannot delay a release (Pub/Sub's nack, Service Bus's abandon)
        releases at once."""

    def close(self) -> None:  # noqa: B027 - optional: most adapters hold nothing to close
        """Free what the receiver holds (connections, a streaming pull)."""
