"""One Pub/Sub delivery end to end: decode, hand it to core's delivery pipeline, or raise.

Returning means "acknowledge" (the task succeeded or was rejected with its error record
written); raising means "redeliver" (the function answers 500, Pub/Sub retries with backoff
and finally dead-letters the message). Either way core logs exactly one JSON line, and a
failure's line carries its stack trace: callers must not log it again.

Two layouts (``RESULTS_LAYOUT``, :mod:`core.packing`): one object per task (the default), or
packed, where the requests an instance serves at once are gathered by a
:class:`~core.group_commit.GroupCommit` and written as one pack per batch (Pub/Sub push
delivers one message per request, so the batch is made here, of concurrent requests).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.delivery import Delivery, deliver
from core.group_commit import GroupCommit, pack_settings_from_environment
from core.packing import ResultsLayout, results_layout_from_environment
from gcp_function.envelope import UndecodableMessageError, decode_pubsub_event, decode_request
from gcp_function.logs import LOGGER_NAME

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cloudevents.sdk.types import SupportsDuplicateItems

    from core.outcome import Outcome
    from core.ports import ResultStore
    from gcp_function.envelope import CloudEventLike, PubsubMessage

LOGGER = logging.getLogger(LOGGER_NAME)


def group_commit_from_environment(
    store: ResultStore, environ: Mapping[str, str] | None = None
) -> GroupCommit | None:
    """The instance's group commit when ``RESULTS_LAYOUT`` is ``packed`` (``PACK_MAX_BATCH``,
    ``PACK_MAX_WAIT_MS``), None for one object per task; a ConfigError for a bad setting."""
    if results_layout_from_environment(environ) is not ResultsLayout.PACKED:
        return None
    settings = pack_settings_from_environment(environ)
    return GroupCommit(store, _emit, settings.max_batch, settings.max_wait_seconds)


def handle_request(
    headers: Mapping[str, str] | SupportsDuplicateItems[str, str],
    body: bytes,
    store: ResultStore,
    commit: GroupCommit | None = None,
) -> Outcome:
    """Handle one HTTP delivery (a raw push or a CloudEvent), as it arrived: into ``store``,
    or, in packed mode, into the next batch of ``commit`` (which writes to its own store)."""
    return _handle(lambda: decode_request(headers, body), store, commit)


def handle_event(
    event: CloudEventLike,
    store: ResultStore,
    push_body: Mapping[str, object] | None = None,
    commit: GroupCommit | None = None,
) -> Outcome:
    """Handle one parsed CloudEvent; raise (after logging) when it must be redelivered."""
    return _handle(lambda: decode_pubsub_event(event, push_body), store, commit)


def _handle(
    decode: Callable[[], PubsubMessage], store: ResultStore, commit: GroupCommit | None
) -> Outcome:
    try:
        delivery = _delivery(decode())
    except UndecodableMessageError as rejection:
        delivery = _delivery(rejection.delivery)._replace(body=rejection.raw, undecodable=rejection)
    handled = deliver(delivery, store, _emit) if commit is None else commit.submit(delivery)
    return handled.outcome_or_raise()


def _delivery(message: PubsubMessage) -> Delivery:
    return Delivery(
        message.raw,
        message.message_id,
        message.delivery_attempt,
        {"subscription": message.subscription},
    )


def _emit(level: int, text: str, fields: dict[str, object]) -> None:
    """Cloud Logging's format: see :class:`gcp_function.logs.CloudLoggingFormatter`."""
    LOGGER.log(level, text, extra={"fields": fields})
