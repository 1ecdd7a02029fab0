"""The Pub/Sub receiver of the GCP worker (gcp_function/pubsub_receiver.py) over a fake
``SubscriberClient`` (no network): the streaming pull's buffer, acknowledge/release, close,
the translation of every Google error to one line, and the binding's settings.

The fake's ``subscribe`` returns a real ``concurrent.futures.Future`` standing for the
``StreamingPullFuture`` (cancel ends it, an error ends it with that exception) and keeps the
callback, which a test calls from another thread as the client's scheduler would. Every wait
is on an event, bounded only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import concurrent.futures
import io
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud.pubsub_v1.subscriber.exceptions import (  # type: ignore[import-untyped]
    AcknowledgeError,
    AcknowledgeStatus,
)

from core.errors import CloudUnavailableError, ConfigError
from core.worker.command import WorkerConfig
from core.worker.logs import JsonLines
from core.worker.loop import StopReason, Worker, WorkerOptions
from gcp_function import pubsub_receiver
from gcp_function.jobs import Clients
from gcp_function.pubsub_receiver import (
    DEFAULT_LEASE_SECONDS,
    MAX_BATCH,
    PubsubReceiver,
    WorkerTarget,
    check_bucket,
    check_subscription,
    open_worker,
    worker_target,
)
from tests.unit.fakes import InMemoryResultStore

if TYPE_CHECKING:
    from collections.abc import Callable

# The SDK's exception classes are untyped: made through Any, as the SDK makes them.
exceptions: Any = api_exceptions

WAIT = 30.0
SUBSCRIPTION = "projects/p1/subscriptions/tasks-worker"
TOPIC = "projects/p1/topics/tasks"


class FakeStream(concurrent.futures.Future[Any]):
    """Stands for a ``StreamingPullFuture``: ``cancel`` shuts it down (its result is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled_by_us = False

    def cancel(self) -> bool:
        self.cancelled_by_us = True
        if not self.done():
            self.set_result(True)
        return True


class FakeMessage:
    """A delivered message: what the receiver reads and the settlement calls it makes."""

    def __init__(
        self,
        data: bytes,
        message_id: str = "m1",
        delivery_attempt: int | None = None,
        ack_error: BaseException | None = None,
    ) -> None:
        self.data = data
        self.message_id = message_id
        self.delivery_attempt = delivery_attempt
        self.ack_id = f"ack-{message_id}"
        self.ack_error = ack_error
        self.acked = 0
        self.nacked = 0

    def ack_with_response(self) -> concurrent.futures.Future[Any]:
        self.acked += 1
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.ack_error is None:
            future.set_result(AcknowledgeStatus.SUCCESS)
        else:
            future.set_exception(self.ack_error)
        return future

    def nack(self) -> None:
        self.nacked += 1


class FakeSubscriber:
    """``subscribe`` (a :class:`FakeStream` per call), the unary calls, ``get_subscription``."""

    def __init__(self, subscription: Any = None, get_error: BaseException | None = None) -> None:
        self.streams: list[FakeStream] = []
        self.callbacks: list[Callable[[Any], None]] = []
        self.subscribe_kwargs: list[dict[str, Any]] = []
        self.unary: list[tuple[str, dict[str, Any]]] = []
        self.unary_error: BaseException | None = None
        self.subscription = subscription or SimpleNamespace(
            topic=TOPIC, push_config=SimpleNamespace(push_endpoint=""), ack_deadline_seconds=30
        )
        self.get_error = get_error
        self.closed = False
        self.subscribed = threading.Event()

    def subscribe(self, subscription: str, callback: Callable[[Any], None], **kwargs: Any) -> Any:
        assert subscription == SUBSCRIPTION
        stream = FakeStream()
        self.streams.append(stream)
        self.callbacks.append(callback)
        self.subscribe_kwargs.append(kwargs)
        self.subscribed.set()
        return stream

    def deliver(self, *messages: FakeMessage, stream: int = -1) -> None:
        """Hand ``messages`` to the callback, from another thread (the client's scheduler)."""
        callback = self.callbacks[stream]
        thread = threading.Thread(target=lambda: [callback(m) for m in messages])
        thread.start()
        thread.join(WAIT)

    def acknowledge(self, request: dict[str, Any], timeout: float) -> None:
        self._unary("acknowledge", request)

    def modify_ack_deadline(self, request: dict[str, Any], timeout: float) -> None:
        self._unary("modify_ack_deadline", request)

    def _unary(self, call: str, request: dict[str, Any]) -> None:
        self.unary.append((call, request))
        if self.unary_error is not None:
            raise self.unary_error

    def get_subscription(self, subscription: str, timeout: float, retry: Any) -> Any:
        if self.get_error is not None:
            raise self.get_error
        return self.subscription

    def close(self) -> None:
        self.closed = True


RESOURCE = pubsub_receiver.subscription_resource(SUBSCRIPTION, "cloud-config.json", None)


def receiver_on(subscriber: FakeSubscriber, *, owns_client: bool = True) -> PubsubReceiver:
    return PubsubReceiver(
        subscriber,
        SUBSCRIPTION,
        flow_control=pubsub_receiver.flow_control(8, 30),
        resource=RESOURCE,
        owns_client=owns_client,
    )


def started(subscriber: FakeSubscriber, receiver: PubsubReceiver) -> None:
    """Start the streaming pull (a receive that finds nothing)."""
    assert receiver.receive(10, 0) == []
    assert subscriber.subscribed.is_set()


def test_the_streaming_pull_starts_once_with_the_flow_control_and_buffers_in_order() -> None:
    # GIVEN a receiver, no streaming pull until the first receive
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    assert subscriber.streams == []
    started(subscriber, receiver)
    # WHEN the client delivers 12 messages
    messages = [FakeMessage(b"body-%d" % i, f"m{i}") for i in range(12)]
    subscriber.deliver(*messages)
    # THEN receives hand them out in order, at most max_messages each, from one stream
    first = receiver.receive(10, 0)
    second = receiver.receive(10, 0)
    assert [m.body for m in first + second] == [m.data for m in messages]
    assert (len(first), len(second)) == (10, 2)
    assert len(subscriber.streams) == 1
    kwargs = subscriber.subscribe_kwargs[0]
    assert kwargs["await_callbacks_on_shutdown"] is True
    control = kwargs["flow_control"]
    assert (control.max_messages, control.max_duration_per_lease_extension) == (8 + MAX_BATCH, 30)


def test_a_receive_waits_for_a_message_delivered_meanwhile() -> None:
    # GIVEN a started receiver, and a message delivered once a receive is waiting
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    message = FakeMessage(b"late")
    timer = threading.Timer(0.2, subscriber.deliver, args=(message,))
    timer.start()
    # WHEN a receive waits / THEN it returns that message
    got = receiver.receive(10, WAIT)
    timer.join(WAIT)
    assert [m.body for m in got] == [b"late"]


@pytest.mark.parametrize(("attempt", "count"), [(None, None), (0, None), (3, 3)])
def test_a_received_message_carries_its_id_attempt_and_subscription(
    attempt: int | None, count: int | None
) -> None:
    # GIVEN a message with or without a delivery attempt (set only with a dead-letter policy)
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    subscriber.deliver(FakeMessage(b'{"id": "t1"}', "42", attempt))
    # WHEN it is received
    [got] = receiver.receive(1, 0)
    # THEN the body is the bytes sent; id, attempt and subscription are there for the log line
    assert (got.body, got.message_id, got.delivery_count) == (b'{"id": "t1"}', "42", count)
    assert got.platform == {"subscription": SUBSCRIPTION}


def test_acknowledge_returns_what_exactly_once_delivery_refused_and_release_nacks() -> None:
    # GIVEN three received messages, the second's acknowledgement refused (an expired ack id)
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    expired = AcknowledgeError(AcknowledgeStatus.INVALID_ACK_ID, "expired")
    messages = [
        FakeMessage(b"a", "1"),
        FakeMessage(b"b", "2", ack_error=expired),
        FakeMessage(b"c", "3"),
    ]
    subscriber.deliver(*messages)
    got = receiver.receive(10, 0)
    # WHEN two are acknowledged and one released
    refused = receiver.acknowledge(got[:2])
    receiver.release(got[2:], delay_seconds=30)
    # THEN each was acknowledged on the stream, the refused one is returned, the third nacked
    assert [m.message_id for m in refused] == ["2"]
    assert [(m.acked, m.nacked) for m in messages] == [(1, 0), (1, 0), (0, 1)]
    assert subscriber.unary == []


def test_close_nacks_what_was_not_handed_out_and_stops_the_pull() -> None:
    # GIVEN five delivered messages, two of them received by the worker
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    messages = [FakeMessage(b"%d" % i, str(i)) for i in range(5)]
    subscriber.deliver(*messages)
    taken = receiver.receive(2, 0)
    # WHEN the receiver is closed, and the client delivers one more as it shuts down
    receiver.close()
    late = FakeMessage(b"late", "late")
    subscriber.deliver(late)
    # THEN the three buffered and the late one are nacked, the two in hand left to the worker
    assert [m.nacked for m in messages] == [0, 0, 1, 1, 1]
    assert late.nacked == 1
    assert [m.message_id for m in taken] == ["0", "1"]
    # AND the streaming pull is cancelled, the client it made closed, nothing more received
    assert subscriber.streams[0].cancelled_by_us
    assert subscriber.closed
    assert receiver.receive(10, 0) == []
    receiver.close()  # a second close does nothing
    assert [m.nacked for m in messages] == [0, 0, 1, 1, 1]


def test_close_leaves_a_client_it_was_given_open() -> None:
    # GIVEN a receiver on a client it did not make / WHEN it is closed
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber, owns_client=False)
    started(subscriber, receiver)
    receiver.close()
    # THEN its streaming pull stops, and the client stays open for its owner
    assert subscriber.streams[0].cancelled_by_us
    assert not subscriber.closed


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (
            exceptions.NotFound("Subscription does not exist"),
            f"Pub/Sub subscription {SUBSCRIPTION} does not exist (NotFound: 404 Subscription"
            " does not exist): check config.subscription",
        ),
        (
            exceptions.PermissionDenied("denied"),
            f"access denied to Pub/Sub subscription {SUBSCRIPTION} (PermissionDenied: 403"
            " denied): the caller needs roles/pubsub.subscriber on it",
        ),
        (
            exceptions.Unauthenticated("token expired"),
            f"no usable credentials for Pub/Sub subscription {SUBSCRIPTION}: run gcloud auth"
            " application-default login",
        ),
    ],
    ids=["not-found", "permission-denied", "no-credentials"],
)
def test_a_streaming_pull_ended_by_a_permanent_error_is_a_one_line_config_error(
    error: Exception, says: str
) -> None:
    # GIVEN a streaming pull that the service ends with a permanent error
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    subscriber.streams[0].set_exception(error)
    # WHEN the worker receives / THEN one line says what is wrong and how to fix it
    with pytest.raises(ConfigError) as raised:
        receiver.receive(10, WAIT)
    assert str(raised.value).startswith(says), str(raised.value)
    assert "\n" not in str(raised.value)
    assert "token expired" not in str(raised.value)
    # AND it says so again on the next receive (no new stream is started)
    with pytest.raises(ConfigError):
        receiver.receive(10, 0)
    assert len(subscriber.streams) == 1


def test_a_streaming_pull_ended_by_a_transient_error_is_retried_on_a_new_stream() -> None:
    # GIVEN a streaming pull with a buffered message, then ended by a transient error
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    subscriber.streams[0].set_exception(exceptions.ServiceUnavailable("backend restarting"))
    # WHEN the worker receives
    with pytest.raises(CloudUnavailableError) as raised:
        receiver.receive(10, WAIT)
    # THEN it is told to try again later, and a new streaming pull is already running
    assert "try again later" in str(raised.value)
    assert len(subscriber.streams) == 2
    fresh = FakeMessage(b"fresh", "fresh")
    subscriber.deliver(fresh)
    assert [m.body for m in receiver.receive(10, 0)] == [b"fresh"]


def test_messages_of_an_ended_stream_are_settled_by_unary_calls() -> None:
    # GIVEN two messages received on a stream that then ended
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    messages = [FakeMessage(b"a", "1"), FakeMessage(b"b", "2")]
    subscriber.deliver(*messages)
    got = receiver.receive(10, 0)
    subscriber.streams[0].set_exception(exceptions.PermissionDenied("revoked"))
    # WHEN one is acknowledged and the other released
    assert receiver.acknowledge(got[:1]) == []
    receiver.release(got[1:])
    # THEN each went by a unary call with its ack id (the stream's dispatcher is gone)
    assert subscriber.unary == [
        ("acknowledge", {"subscription": SUBSCRIPTION, "ack_ids": ["ack-1"]}),
        (
            "modify_ack_deadline",
            {"subscription": SUBSCRIPTION, "ack_ids": ["ack-2"], "ack_deadline_seconds": 0},
        ),
    ]
    assert [(m.acked, m.nacked) for m in messages] == [(0, 0), (0, 0)]


def test_a_unary_acknowledgement_refused_as_given_is_returned_and_a_denied_one_raises() -> None:
    # GIVEN a message received on a stream that ended
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    subscriber.deliver(FakeMessage(b"a", "1"))
    got = receiver.receive(10, 0)
    subscriber.streams[0].set_exception(exceptions.NotFound("gone"))
    # WHEN its unary acknowledgement is refused as given (an expired ack id) / THEN it is
    # returned (delivered again: a duplicate, not a loss); WHEN it is denied / THEN one line
    subscriber.unary_error = exceptions.InvalidArgument("expired ack id")
    assert receiver.acknowledge(got) == got
    subscriber.unary_error = exceptions.PermissionDenied("denied")
    with pytest.raises(ConfigError, match=r"roles/pubsub\.subscriber"):
        receiver.acknowledge(got)


def test_the_worker_loop_drains_the_buffer_and_settles_every_message() -> None:
    # GIVEN 25 messages buffered (one not JSON) and a store that refuses one task's write
    subscriber = FakeSubscriber()
    receiver = receiver_on(subscriber)
    started(subscriber, receiver)
    bodies = [b'{"id": "t%d", "data": {"num1": %d, "num2": 1}}' % (i, i) for i in range(24)]
    messages = [FakeMessage(body, str(i), 1) for i, body in enumerate([*bodies, b"not json"])]
    subscriber.deliver(*messages)
    store = InMemoryResultStore(fail_names={"t7.out"})
    out = io.StringIO()
    # WHEN the worker runs until it is idle
    options = WorkerOptions(concurrency=4, wait_seconds=0.2, idle_exit_seconds=0.5)
    summary = Worker(receiver, store, JsonLines("job", out), options=options).run()
    # THEN every record but the refused one is written; those are acknowledged, it is nacked
    assert summary.reason is StopReason.IDLE
    assert store.objects["t3.out"] == b"4"
    assert len(store.objects) == 24
    assert [m.acked for m in messages] == [0 if i == 7 else 1 for i in range(25)]
    assert [m.nacked for m in messages] == [1 if i == 7 else 0 for i in range(25)]
    assert (summary.acknowledged, summary.released) == (24, 1)
    assert subscriber.streams[0].cancelled_by_us


# --- the binding ----------------------------------------------------------------------------


def config(queue_name: str = "tasks", **settings: Any) -> WorkerConfig:
    return WorkerConfig(
        path=Path("cloud-config.json"),
        provider="gcp",
        job_id="job",
        queue_name=queue_name,
        result_bucket="results-bucket",
        result_prefix="out",
        settings=settings,
    )


@pytest.mark.parametrize(
    ("queue_name", "settings", "environ", "expected"),
    [
        ("tasks", {"project": "p1"}, {}, ("p1", TOPIC, SUBSCRIPTION)),
        ("tasks", {}, {"GOOGLE_CLOUD_PROJECT": "p1"}, ("p1", TOPIC, SUBSCRIPTION)),
        (TOPIC, {}, {}, ("p1", TOPIC, SUBSCRIPTION)),
        (
            "tasks",
            {"project": "p1", "subscription": "mine"},
            {},
            ("p1", TOPIC, "projects/p1/subscriptions/mine"),
        ),
        (
            "tasks",
            {"subscription": "projects/p2/subscriptions/other"},
            {},
            (None, "tasks", "projects/p2/subscriptions/other"),
        ),
    ],
    ids=["config-project", "env-project", "full-topic", "named", "full-subscription"],
)
def test_the_subscription_is_the_configs_or_the_topics_worker_subscription(
    queue_name: str,
    settings: dict[str, str],
    environ: dict[str, str],
    expected: tuple[str | None, str, str],
) -> None:
    # GIVEN the config's queue_name (the topic), config.project/subscription and the env
    # WHEN the worker's target is read / THEN project, topic and subscription are these
    target = worker_target(config(queue_name, **settings), environ)
    assert (target.project, target.topic, target.subscription) == expected


@pytest.mark.parametrize(
    ("queue_name", "settings", "says"),
    [
        (
            "tasks",
            {},
            "the subscription 'tasks-worker' needs the project: set config.project in"
            " cloud-config.json (or $GOOGLE_CLOUD_PROJECT), or give config.subscription as"
            " projects/PROJECT/subscriptions/tasks-worker",
        ),
        (
            "projects/p1/subscriptions/x",
            {},
            "config file cloud-config.json: queue_name 'projects/p1/subscriptions/x' is not a"
            " topic",
        ),
        (
            "tasks",
            {"project": "p1", "subscription": "projects/p1/topics/t"},
            "config file cloud-config.json: config.subscription 'projects/p1/topics/t' is not a"
            " subscription path",
        ),
        ("9tasks", {"project": "p1"}, "config file cloud-config.json: queue_name '9tasks' is not"),
    ],
    ids=["no-project", "queue-is-a-subscription", "subscription-is-a-topic", "bad-topic-name"],
)
def test_an_unusable_target_is_one_line(
    queue_name: str, settings: dict[str, str], says: str
) -> None:
    # GIVEN a config the subscription cannot be found from / THEN one line says what to set
    with pytest.raises(ConfigError) as raised:
        worker_target(config(queue_name, **settings), {})
    assert str(raised.value).startswith(says), str(raised.value)
    assert "\n" not in str(raised.value)


TARGET = WorkerTarget("p1", TOPIC, SUBSCRIPTION)


def test_check_subscription_returns_its_ack_deadline() -> None:
    # GIVEN a readable pull subscription of the topic / THEN its ack deadline is the lease
    assert check_subscription(FakeSubscriber(), TARGET, RESOURCE, "f.json") == 30


def test_a_subscriber_who_may_not_read_the_subscription_goes_on_without_its_deadline() -> None:
    # GIVEN roles/pubsub.subscriber only (no subscriptions.get) / THEN no error, no deadline
    denied = FakeSubscriber(get_error=exceptions.PermissionDenied("no get"))
    assert check_subscription(denied, TARGET, RESOURCE, "f.json") is None


@pytest.mark.parametrize(
    ("subscriber", "says"),
    [
        (
            FakeSubscriber(get_error=exceptions.NotFound("Subscription does not exist")),
            f"Pub/Sub subscription {SUBSCRIPTION} does not exist",
        ),
        (
            FakeSubscriber(get_error=exceptions.ServiceUnavailable("connection refused")),
            f"cannot reach Pub/Sub subscription {SUBSCRIPTION} (ServiceUnavailable",
        ),
        (
            FakeSubscriber(
                SimpleNamespace(
                    topic="projects/p1/topics/other",
                    push_config=SimpleNamespace(push_endpoint=""),
                    ack_deadline_seconds=10,
                )
            ),
            f"Pub/Sub subscription {SUBSCRIPTION} is attached to projects/p1/topics/other, not"
            f" to the config's queue_name {TOPIC}",
        ),
        (
            FakeSubscriber(
                SimpleNamespace(
                    topic=TOPIC,
                    push_config=SimpleNamespace(push_endpoint="https://f.run.app"),
                    ack_deadline_seconds=90,
                )
            ),
            f"Pub/Sub subscription {SUBSCRIPTION} is a push subscription (to"
            " https://f.run.app): the worker needs a pull subscription",
        ),
    ],
    ids=["missing", "unreachable", "other-topic", "push"],
)
def test_a_wrong_subscription_is_one_line(subscriber: FakeSubscriber, says: str) -> None:
    # GIVEN a missing, unreachable, other topic's or push subscription / THEN one line
    with pytest.raises(ConfigError) as raised:
        check_subscription(subscriber, TARGET, RESOURCE, "f.json")
    assert str(raised.value).startswith(says), str(raised.value)
    assert "\n" not in str(raised.value)


class FakeStorage:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.closed = False

    def get_bucket(self, bucket: str, timeout: float, retry: Any) -> Any:
        if self.error is not None:
            raise self.error
        return SimpleNamespace(name=bucket)

    def close(self) -> None:
        self.closed = True


BUCKET = pubsub_receiver.bucket_resource("results-bucket", "f.json", None)


def test_a_missing_bucket_is_one_line_and_a_forbidden_read_is_not_an_error() -> None:
    # GIVEN a worker that may not read buckets / THEN the check lets it go on
    check_bucket(FakeStorage(exceptions.Forbidden("no buckets.get")), "results-bucket", BUCKET)
    # GIVEN a bucket that does not exist / THEN one line names it and the setting to fix
    with pytest.raises(ConfigError) as raised:
        check_bucket(FakeStorage(exceptions.NotFound("no bucket")), "results-bucket", BUCKET)
    assert str(raised.value) == (
        "bucket gs://results-bucket does not exist (NotFound: 404 no bucket): check"
        " result_bucket in f.json"
    )


def test_open_worker_builds_the_receiver_and_the_store_from_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN fake clients and a config naming the topic and the project
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    subscriber, storage = FakeSubscriber(), FakeStorage()
    # WHEN the worker's adapters are opened
    receiver, store = open_worker(config(project="p1"), 16, subscriber=subscriber, storage=storage)
    # THEN the receiver is on <topic>-worker with the subscription's ack deadline, sized for
    # 16 threads and a batch, and the store writes under the config's bucket and prefix
    assert receiver.subscription == SUBSCRIPTION
    assert receiver.lease_seconds == 30
    assert receiver.describe == f"Pub/Sub subscription {SUBSCRIPTION}"
    assert receiver.flow_control.max_messages == 16 + MAX_BATCH
    assert (store.bucket_name, store.prefix) == ("results-bucket", "out")
    receiver.close()
    assert not subscriber.closed  # given, not made here


def test_open_worker_without_a_readable_subscription_uses_the_default_lease() -> None:
    # GIVEN a subscription the worker may not read / WHEN the adapters are opened
    subscriber = FakeSubscriber(get_error=exceptions.PermissionDenied("no get"))
    receiver, _ = open_worker(config(project="p1"), 4, subscriber=subscriber, storage=FakeStorage())
    # THEN Pub/Sub's default lease is assumed and the library's lease extension kept
    assert receiver.lease_seconds == DEFAULT_LEASE_SECONDS
    assert receiver.flow_control.max_duration_per_lease_extension == 0


def test_open_worker_without_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no emulator and no application-default credentials
    import google.auth
    from google.auth import exceptions as auth_exceptions

    auth: Any = auth_exceptions

    for name in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)

    def no_credentials(**_: Any) -> Any:
        raise auth.DefaultCredentialsError("Your default credentials were not found secret-ish")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    # WHEN the worker's adapters are opened / THEN one line says how to get credentials
    with pytest.raises(ConfigError) as raised:
        open_worker(config(project="p1"), 4)
    assert str(raised.value) == (
        "no usable credentials for Google Cloud: run gcloud auth application-default login"
    )


def test_a_failed_check_closes_the_clients_made_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN clients built by open_worker, and a bucket that does not exist
    subscriber, storage = FakeSubscriber(), FakeStorage(exceptions.NotFound("no bucket"))
    monkeypatch.setattr(Clients, "subscriber", lambda self: subscriber)
    monkeypatch.setattr(pubsub_receiver, "pooled_storage", lambda clients, size: storage)
    # WHEN the worker's adapters are opened / THEN the error is raised and both are closed
    with pytest.raises(ConfigError, match="does not exist"):
        open_worker(config(project="p1"), 4)
    assert (subscriber.closed, storage.closed) == (True, True)
