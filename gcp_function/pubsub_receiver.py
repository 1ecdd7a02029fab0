"""The Pub/Sub adapter of the worker's receiver port (:class:`core.worker.port.Receiver`), and the
GCP worker's binding: a :class:`PubsubReceiver` on a pull subscription of the config's topic and
the function's own :class:`~gcp_function.gcs_store.GcsResultStore` on its bucket (``adder work``
on ``provider: gcp``).

- receive: the client library's *streaming pull* (``SubscriberClient.subscribe``) runs in the
  background with flow control (at most ``concurrency`` + one batch messages outstanding, and
  ``MAX_OUTSTANDING_BYTES``); each delivered message is put in a buffer, which ``receive``
  drains (waiting up to ``wait_seconds`` for the first one);
- extend: nothing to do. The client's lease manager extends the ack deadline of every message
  it delivered until it is acknowledged or nacked (up to ``MAX_LEASE_SECONDS``), each time by
  at most the subscription's ack deadline, so the messages of a worker killed with ``kill -9``
  come back after one ack deadline (60 s when the subscription cannot be read);
- acknowledge: ``message.ack_with_response()``: at once without exactly-once delivery; with it,
  the acknowledgements Pub/Sub refuses (an expired ack id) are returned;
- release: ``message.nack()`` (the subscription's retry policy sets when it comes back: a
  nack cannot be delayed); after ``max_delivery_attempts`` the dead-letter policy moves it to
  the dead-letter topic;
- ``delivery_count``: ``message.delivery_attempt``, which Pub/Sub sets only on a subscription
  with a dead-letter policy (None otherwise);
- close: stops taking messages, nacks those buffered and not handed out, cancels the streaming
  pull and waits until the client has sent the last acknowledgements.

The subscription: ``config.subscription`` (``projects/P/subscriptions/S``, or ``S`` with the
project), else ``<topic name>-worker`` where the topic is the config's ``queue_name`` (the
stack's ``create_worker_subscription`` creates ``<name>-tasks-worker``, its output
``worker_subscription``). The project: ``config.project``, else ``$GOOGLE_CLOUD_PROJECT``, else
the project of a full ``queue_name``. ``PUBSUB_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST``
point the clients at local emulators (anonymous credentials), as for ``adder submit gcp``.

IAM the worker needs: ``roles/pubsub.subscriber`` on the subscription and create + delete of
objects in the results bucket (the stack's results writer role: see infra/gcp/README.md).
Every Google error is sorted by :func:`gcp_function.job_errors.translate_error`: a ConfigError
(no credentials, no such subscription or bucket, access denied, an address that never
answered) stops the worker with one line; what another try may fix is CloudUnavailableError.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import CloudUnavailableError, ConfigError
from core.ops.problems import Problem, Resource, problem_error
from core.worker.port import ReceivedMessage, Receiver
from gcp_function.gcs_store import GcsResultStore
from gcp_function.job_errors import problem_of, translate_error
from gcp_function.jobs import BARE_NAME, FULL_NAME, Clients

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from core.worker.command import WorkerConfig

MAX_BATCH = 10
"""Messages one receive hands out at most (the worker's batch; the client batches the acks)."""
SUBSCRIPTION_SUFFIX = "-worker"
"""The default subscription is ``<topic name>-worker`` (the stack's worker subscription)."""
DEFAULT_LEASE_SECONDS = 10.0
"""Pub/Sub's default ack deadline, used when the subscription cannot be read."""
MAX_OUTSTANDING_BYTES = 100 * 1024 * 1024
"""Flow control's byte limit (the library default): tasks are small, the count limit rules."""
MAX_LEASE_SECONDS = 3600.0
"""How long the client keeps extending one message's lease (the library default): a task
running longer is delivered again."""
CALL_TIMEOUT = 10.0
"""Seconds one unary call (the start-up checks, an acknowledgement after a stream died) may
take."""
ACK_WAIT_SECONDS = 60.0
"""How long to wait for Pub/Sub to confirm an acknowledgement with exactly-once delivery."""
CLOSE_SECONDS = 30.0
"""How long close() waits for the streaming pull to shut down (and send its last acks)."""


@dataclass(eq=False)
class _Lease:
    """The receiver's handle of one delivered message: the message and the stream it came on."""

    message: Any
    """The client's ``Message``."""
    stream: Any
    """The ``StreamingPullFuture`` that delivered it (done: its acks go by unary calls)."""


class PubsubReceiver(Receiver):
    """One pull subscription, seen by one worker process, through a streaming pull.

    ``subscriber`` is a ``SubscriberClient``; ``flow_control`` the ``FlowControl`` of the
    streaming pull, which starts on the first :meth:`receive`. Thread-safe.
    """

    max_batch = MAX_BATCH

    def __init__(
        self,
        subscriber: Any,
        subscription: str,
        *,
        flow_control: Any,
        resource: Resource,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        owns_client: bool = False,
    ) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.flow_control = flow_control
        self.resource = resource
        self.lease_seconds = lease_seconds
        self.describe = resource.what
        self._owns_client = owns_client
        self._cond = threading.Condition()
        self._buffer: collections.deque[_Lease] = collections.deque()
        self._stream: Any = None
        self._closed = False

    # --- the streaming pull -------------------------------------------------------------

    def _start(self) -> Any:
        """A new streaming pull; the client's threads deliver into the buffer. Called with the
        lock held: a callback waits for it, so it always sees the stream it came on."""
        holder: list[Any] = []
        stream = self.subscriber.subscribe(
            self.subscription,
            functools.partial(self._on_message, holder),
            flow_control=self.flow_control,
            await_callbacks_on_shutdown=True,
        )
        holder.append(stream)
        stream.add_done_callback(self._on_stream_done)
        self._stream = stream
        return stream

    def _on_message(self, holder: list[Any], message: Any) -> None:
        """The client's callback (its threads): buffer the message, or nack it once closed."""
        with self._cond:
            keep = not self._closed and bool(holder) and holder[0] is self._stream
            if keep:
                self._buffer.append(_Lease(message, holder[0]))
                self._cond.notify()
        if not keep:
            message.nack()

    def _on_stream_done(self, _: Any) -> None:
        with self._cond:
            self._cond.notify_all()

    def _stream_failure(self, stream: Any) -> ConfigError | CloudUnavailableError:
        """What a streaming pull that ended on its own says (the lock held). One another try
        may fix starts a new stream (the worker waits, then receives again); the messages
        buffered from the old one are dropped from the buffer: their lease is no longer
        extended, so they come back after their ack deadline."""
        exc = stream.exception(timeout=0)
        if exc is None:  # ended without an error (cancelled by someone else): start again
            error: ConfigError | CloudUnavailableError = problem_error(
                Problem.RETRY, self.resource, "the streaming pull ended"
            )
        else:
            error = translate_error(exc, self.resource)
        if isinstance(error, CloudUnavailableError):
            self._buffer.clear()
            self._start()
        return error

    # --- the port -----------------------------------------------------------------------

    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` buffered messages, waiting up to ``wait_seconds`` for the
        first one; a ConfigError or CloudUnavailableError when the streaming pull ended."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        with self._cond:
            if self._closed:
                return []
            stream = self._stream if self._stream is not None else self._start()
            while not self._buffer and not self._closed:
                if stream.done():
                    raise self._stream_failure(stream)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(len(self._buffer), max(1, max_messages))
            taken = [self._buffer.popleft() for _ in range(count)]
        return [self._received(lease) for lease in taken]

    def _received(self, lease: _Lease) -> ReceivedMessage:
        message = lease.message
        attempt = message.delivery_attempt
        return ReceivedMessage(
            body=bytes(message.data),
            message_id=message.message_id or None,
            delivery_count=attempt if isinstance(attempt, int) and attempt > 0 else None,
            handle=lease,
            platform={"subscription": self.subscription},
        )

    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        """Nothing: the client's lease manager extends the ack deadline of every message it
        delivered, until it is acknowledged or nacked (hand-written extensions would race it)."""

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        """Acknowledge on the stream (confirmed at once without exactly-once delivery; with
        it, the refused ones are returned); on a stream that ended, by a unary call."""
        live, dead = _split(messages)
        waiting = [(m, _lease(m).message.ack_with_response()) for m in live]
        refused: list[ReceivedMessage] = []
        if dead:
            refused += self._unary(dead, "acknowledge", {})
        give_up = time.monotonic() + ACK_WAIT_SECONDS
        for message, future in waiting:
            try:
                future.result(timeout=max(0.0, give_up - time.monotonic()))
            except Exception:  # AcknowledgeError (an expired ack id), or no answer in time
                refused.append(message)
        return refused

    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        """Nack: Pub/Sub delivers them again after the subscription's retry backoff (a nack
        cannot carry a delay; ``delay_seconds`` is not used)."""
        live, dead = _split(messages)
        for message in live:
            _lease(message).message.nack()
        if dead:
            self._unary(dead, "modify_ack_deadline", {"ack_deadline_seconds": 0})

    def _unary(
        self, messages: Sequence[ReceivedMessage], call: str, extra: dict[str, Any]
    ) -> list[ReceivedMessage]:
        """``acknowledge`` or ``modify_ack_deadline`` by ack id, for messages whose stream
        ended; those Pub/Sub refuses as given (expired ack ids) are returned."""
        request = {
            "subscription": self.subscription,
            "ack_ids": [_lease(m).message.ack_id for m in messages],
            **extra,
        }
        try:
            getattr(self.subscriber, call)(request=request, timeout=CALL_TIMEOUT)
        except Exception as exc:
            if problem_of(exc) is Problem.REFUSED:
                return list(messages)
            raise translate_error(exc, self.resource) from None
        return []

    def close(self) -> None:
        """Take no more messages, nack the buffered ones, stop the streaming pull (the client
        sends the acks and nacks still queued), and close the client when we made it."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            buffered = list(self._buffer)
            self._buffer.clear()
            stream = self._stream
            self._cond.notify_all()
        for lease in buffered:
            lease.message.nack()
        if stream is not None:
            stream.cancel()
            with contextlib.suppress(Exception):  # the error it ended with, reported already
                stream.result(timeout=CLOSE_SECONDS)
        if self._owns_client:
            with contextlib.suppress(Exception):  # best effort: all is settled or leased
                self.subscriber.close()


def _lease(message: ReceivedMessage) -> _Lease:
    handle = message.handle
    assert isinstance(handle, _Lease), "not a message of this receiver"
    return handle


def _split(
    messages: Sequence[ReceivedMessage],
) -> tuple[list[ReceivedMessage], list[ReceivedMessage]]:
    """(messages whose stream still runs, those whose stream ended)."""
    live = [m for m in messages if not _lease(m).stream.done()]
    return live, [m for m in messages if _lease(m).stream.done()]


# --- the binding ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerTarget:
    """Where the GCP worker pulls from and writes to, from a config file."""

    project: str | None
    topic: str
    """The config's ``queue_name``: a full topic path when the project is known."""
    subscription: str
    """Full ``projects/P/subscriptions/S``."""


def worker_target(config: WorkerConfig, environ: dict[str, str] | None = None) -> WorkerTarget:
    """The project, topic and subscription of ``config`` (a one-line ConfigError if unusable)."""
    env = os.environ if environ is None else environ
    where = config.path
    topic_match = FULL_NAME.match(config.queue_name)
    if topic_match is not None and topic_match["kind"] != "topics":
        raise ConfigError(
            f"config file {where}: queue_name {config.queue_name!r} is not a topic: give"
            " projects/PROJECT/topics/NAME or a topic name"
        )
    project = (
        str(config.settings.get("project") or "").strip()
        or env.get("GOOGLE_CLOUD_PROJECT", "").strip()
        or (topic_match["project"] if topic_match else "")
    ) or None
    topic_name = topic_match["name"] if topic_match else config.queue_name
    if topic_match is None and not BARE_NAME.match(topic_name):
        raise ConfigError(
            f"config file {where}: queue_name {topic_name!r} is not a topic name (3-255"
            " letters, digits and -._~%+, starting with a letter)"
        )
    topic = config.queue_name if topic_match else _full("topics", topic_name, project)
    given = str(config.settings.get("subscription") or "").strip()
    name = given or f"{topic_name}{SUBSCRIPTION_SUFFIX}"
    match = FULL_NAME.match(name)
    if match is not None and match["kind"] != "subscriptions":
        raise ConfigError(
            f"config file {where}: config.subscription {name!r} is not a subscription path"
        )
    if match is None and ("/" in name or not BARE_NAME.match(name)):
        raise ConfigError(
            f"config file {where}: config.subscription {name!r}: give"
            " projects/PROJECT/subscriptions/NAME, or a subscription name (3-255 letters,"
            " digits and -._~%+, starting with a letter)"
        )
    if match is None and project is None:
        raise ConfigError(
            f"the subscription {name!r} needs the project: set config.project in {where} (or"
            " $GOOGLE_CLOUD_PROJECT), or give config.subscription as"
            f" projects/PROJECT/subscriptions/{name}"
        )
    subscription = name if match else f"projects/{project}/subscriptions/{name}"
    return WorkerTarget(project, topic, subscription)


def _full(kind: str, name: str, project: str | None) -> str:
    return f"projects/{project}/{kind}/{name}" if project else name


def subscription_resource(subscription: str, where: object, emulator: str | None) -> Resource:
    """The worker's subscription, as error lines name it."""
    what = f"Pub/Sub subscription {subscription}" + (f" at {emulator}" if emulator else "")
    check = (
        f"check config.subscription (default: <queue_name>-worker), queue_name and"
        f" config.project in {where}" + (" (and $PUBSUB_EMULATOR_HOST)" if emulator else "")
    )
    return Resource(what, check, "roles/pubsub.subscriber on it")


def bucket_resource(bucket: str, where: object, emulator: str | None) -> Resource:
    """The results bucket, as error lines name it."""
    what = f"bucket gs://{bucket}" + (f" at {emulator}" if emulator else "")
    check = f"check result_bucket in {where}" + (
        " (and $STORAGE_EMULATOR_HOST)" if emulator else ""
    )
    return Resource(what, check, "storage.objects.create and storage.objects.delete on it")


def check_subscription(
    subscriber: Any, target: WorkerTarget, resource: Resource, where: object
) -> float | None:
    """Read the subscription once, within seconds: a wrong name, a wrong address or missing
    credentials stop the worker with one line instead of a streaming pull that retries for
    ever; so do a subscription of another topic and a push subscription. Returns its ack
    deadline. ``roles/pubsub.subscriber`` alone may not read a subscription: a
    PermissionDenied proves that the endpoint and the credentials work (the streaming pull
    tells the rest), and the ack deadline is then unknown (None)."""
    from google.api_core import exceptions

    try:
        found = subscriber.get_subscription(
            subscription=target.subscription, timeout=CALL_TIMEOUT, retry=None
        )
    except exceptions.PermissionDenied:
        return None
    except Exception as exc:
        raise translate_error(exc, resource, reached=False) from None
    topic = str(getattr(found, "topic", "") or "")
    if target.project and topic and topic != target.topic:
        raise ConfigError(
            f"{resource.what} is attached to {topic}, not to the config's queue_name"
            f" {target.topic}: check config.subscription and queue_name in {where}"
        )
    push = getattr(getattr(found, "push_config", None), "push_endpoint", "")
    if push:
        raise ConfigError(
            f"{resource.what} is a push subscription (to {push}): the worker needs a pull"
            " subscription (infra/gcp: create_worker_subscription = true, output"
            " worker_subscription)"
        )
    deadline = getattr(found, "ack_deadline_seconds", 0)
    return float(deadline) if isinstance(deadline, int) and deadline > 0 else None


def check_bucket(storage: Any, bucket: str, resource: Resource) -> None:
    """Read the bucket once, so that a wrong name stops the worker with one line instead of
    sending every task to the dead-letter topic. A 403 is not an error here: reading a
    bucket needs ``storage.buckets.get``, which the worker does not otherwise need."""
    from google.api_core import exceptions

    try:
        storage.get_bucket(bucket, timeout=CALL_TIMEOUT, retry=None)
    except exceptions.Forbidden:
        return
    except Exception as exc:
        raise translate_error(exc, resource, reached=False) from None


def pooled_storage(clients: Clients, connections: int) -> Any:
    """A ``storage.Client`` whose HTTP pool holds ``connections`` (one per task thread;
    requests' default of 10 would open and drop a connection per write above that)."""
    import requests

    client = clients.storage()
    session = client._http  # built here, with the client's credentials
    if isinstance(session, requests.Session):
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=max(10, connections)
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return client


def flow_control(concurrency: int, ack_deadline: float | None = None) -> Any:
    """At most what the worker can hold (``concurrency`` running + one batch waiting).

    With the subscription's ``ack_deadline`` known, each lease extension, and the deadline of
    messages still in transit on the stream, is capped at it (instead of the library's 60 s):
    the messages of a worker killed with ``kill -9`` come back after at most one ack deadline
    of the subscription (the stack's ``worker_ack_deadline_seconds``)."""
    from google.cloud import pubsub_v1  # type: ignore[import-untyped]

    return pubsub_v1.types.FlowControl(
        max_messages=concurrency + MAX_BATCH,
        max_bytes=MAX_OUTSTANDING_BYTES,
        max_lease_duration=MAX_LEASE_SECONDS,
        max_duration_per_lease_extension=int(ack_deadline or 0),
    )


def open_worker(
    config: WorkerConfig,
    concurrency: int,
    *,
    subscriber: Any = None,
    storage: Any = None,
) -> tuple[PubsubReceiver, GcsResultStore]:
    """The GCP worker's receiver and store for ``config`` (clients made once here, or given)."""
    where = config.path
    target = worker_target(config)
    pubsub_emulator = os.environ.get("PUBSUB_EMULATOR_HOST") or None
    storage_emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
    clients = Clients(target.project, pubsub_emulator, storage_emulator)
    owns = subscriber is None
    resource = subscription_resource(target.subscription, where, pubsub_emulator)
    results = bucket_resource(config.result_bucket, where, storage_emulator)
    closers: list[Callable[[], None]] = []
    try:
        if subscriber is None:
            subscriber = clients.subscriber()
            closers.append(subscriber.close)
        if storage is None:
            storage = pooled_storage(clients, concurrency)
            closers.append(storage.close)
        deadline = check_subscription(subscriber, target, resource, where)
        check_bucket(storage, config.result_bucket, results)
    except BaseException:
        for close in closers:
            try:
                close()
            except Exception:  # already failing: the first error is the one to report
                continue
        raise
    receiver = PubsubReceiver(
        subscriber,
        target.subscription,
        flow_control=flow_control(concurrency, deadline),
        resource=resource,
        lease_seconds=deadline or DEFAULT_LEASE_SECONDS,
        owns_client=owns,
    )
    return receiver, GcsResultStore(config.result_bucket, config.result_prefix, client=storage)
