"""The delivery contract: what every cloud edge hands to core, and what it gets back.

An edge decodes one platform message into a :class:`Delivery` (the task bytes and what
identifies the delivery) and calls :func:`deliver`. Core owns the rest: the pipeline, the
timing, the outcome, the log line (level, text and fields, the same on every cloud) and the
verdict. The edge keeps only the platform's answer: a ``batchItemFailures`` entry, an HTTP
status, or an exception for the host.

Verdicts: a success or a rejected task (its error record written) is acknowledged; anything
else (the store failed, or a bug) is retried, so the queue delivers the message again and
finally dead-letters it. Nothing is dropped.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import TYPE_CHECKING, NamedTuple, Protocol

from core.errors import StoreWriteError
from core.jsontext import encodable
from core.observe import outcome_fields
from core.outcome import OutcomeKind
from core.packing import PACK_CONTENT_TYPE, PACK_SUFFIX, PackBuffer, pack_name
from core.pipeline import process_message, reject

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from core.errors import InvalidTaskError
    from core.outcome import Outcome
    from core.ports import ResultStore
    from core.task import RawTask


class Delivery(NamedTuple):
    """One message as an edge decoded it."""

    body: RawTask | object
    """The task message (bytes or text); for an undecodable envelope, whatever arrived."""
    message_id: str | None = None
    attempt: int | None = None
    """Which delivery of the message this is, 1 for the first (as the platform counts it)."""
    platform: Mapping[str, object] | None = None
    """More fields for the log line (e.g. the Pub/Sub subscription)."""
    undecodable: InvalidTaskError | None = None
    """Set when the envelope held no task: ``body`` is then recorded with this error."""


def platform_text(value: object) -> str | None:
    """A platform field as text (a message id), or None when absent or empty."""
    return None if value is None or value == "" else str(value)


def platform_count(value: object) -> int | None:
    """A platform's delivery count as an int (platforms send ints or digit strings), or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


class Handled(NamedTuple):
    """How a delivery ended: an outcome to acknowledge, or the error that asks for a retry."""

    outcome: Outcome | None
    error: Exception | None = None

    @property
    def retry(self) -> bool:
        """True when the message must go back to the queue."""
        return self.outcome is None

    def outcome_or_raise(self) -> Outcome:
        """The outcome to acknowledge; the error itself when the message must be retried
        (for platforms that answer a retry with an exception: GCP's 500, Azure's abandon)."""
        if self.outcome is None:
            raise self.error or RuntimeError("a retry without its error")
        return self.outcome


class LogEmitter(Protocol):
    """Writes one log line in the platform's format (``fields`` are the structured part)."""

    def __call__(self, level: int, text: str, fields: dict[str, object]) -> None: ...


LEVELS = {OutcomeKind.SUCCEEDED: logging.INFO, OutcomeKind.REJECTED: logging.WARNING}
"""The level of each acknowledged outcome; a retry (the store failed, or anything
unexpected) logs ERROR with the stack in ``stack_trace``."""


def deliver(delivery: Delivery, store: ResultStore, emit: LogEmitter) -> Handled:
    """Run one delivery through the pipeline, log one line, and say whether to retry."""
    started = time.perf_counter()
    handled = _run(delivery, store)
    _log(delivery, handled, started, emit)
    return handled


def deliver_packed(
    deliveries: Sequence[Delivery], store: ResultStore, emit: LogEmitter
) -> list[Handled]:
    """Run a batch of deliveries into one pack, write it with one ``put``, then log each.

    Every delivery ends as it would alone, except that its record goes into the batch's pack
    (:mod:`core.packing`). When writing the pack fails, every delivery that would have been
    acknowledged is retried instead: the batch goes back to the queue whole, nothing is lost.
    """
    started = time.perf_counter()
    pack = PackBuffer()
    handled = [_run(delivery, pack) for delivery in deliveries]
    if len(pack):
        body = pack.body()
        try:
            store.put(store.key(pack_name(body), PACK_SUFFIX), body, PACK_CONTENT_TYPE)
        except Exception as error:
            handled = [item if item.retry else Handled(None, error) for item in handled]
    for delivery, item in zip(deliveries, handled, strict=True):
        _log(delivery, item, started, emit)
    return handled


def _run(delivery: Delivery, store: ResultStore) -> Handled:
    try:
        if delivery.undecodable is not None:
            return Handled(reject(delivery.undecodable, delivery.body, store))
        return Handled(process_message(delivery.body, store))  # type: ignore[arg-type]
    except Exception as error:
        return Handled(None, error)


def _log(delivery: Delivery, handled: Handled, started: float, emit: LogEmitter) -> None:
    outcome, error = handled.outcome, handled.error
    if outcome is None:
        error = error or RuntimeError("a retry without its error")
        fields = _fields(delivery, None, started, error)
        fields["stack_trace"] = "".join(traceback.format_exception(error))
        what = "failed" if isinstance(error, StoreWriteError) else "failed unexpectedly"
        text = f"{_name(delivery)} {what}; it will be retried: {error}"
        emit(logging.ERROR, encodable(text), fields)
        return
    fields = _fields(delivery, outcome, started, None)
    if outcome.kind is OutcomeKind.REJECTED:
        text = (
            f"{_name(delivery)} rejected ({outcome.code}): {outcome.reason};"
            f" wrote {outcome.name}.err"
        )
    else:
        text = f"task {outcome.task_id} {outcome.kind.value}"
    emit(LEVELS.get(outcome.kind, logging.INFO), encodable(text), fields)


def _name(delivery: Delivery) -> str:
    return f"message {delivery.message_id}" if delivery.message_id else "a message without id"


def _fields(
    delivery: Delivery, outcome: Outcome | None, started: float, error: Exception | None
) -> dict[str, object]:
    return outcome_fields(
        outcome,
        message_id=delivery.message_id,
        seconds=time.perf_counter() - started,
        error=error,
        delivery_attempt=delivery.attempt,
        **(delivery.platform or {}),
    )
