"""The Azure worker's receiver (azure_function/servicebus_receiver.py) through the real
``ServiceBusReceiver``, down to its AMQP receive client, on the in-memory queue of
tests/support/azure_service_bus_receiver.py (what that double cannot prove is listed there:
real lock timing, the AMQP link on the wire, authorization).

Checked: what a received message carries (body byte for byte, message id, Service Bus's
delivery count); that a long poll is cut into slices so settlements are never held behind it;
that the SDK receiver is never called from two threads at once under a running worker; lock
renewal; complete (a lost lock, from the SDK's own expiry check or from the broker, is "not
taken"); abandon now, or a lock left to lapse for a delayed release, both counted and
dead-lettered at the max delivery count; the settings and their one-line errors. Every wait is
on an event or a condition, bounded only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage
from azure.servicebus._pyamqp.error import AMQPConnectionError, ErrorCondition

from azure_function import servicebus_receiver
from azure_function.servicebus_receiver import (
    DEFAULT_LOCK_SECONDS,
    WORKER_LOGIN,
    ServiceBusQueueReceiver,
    lock_seconds,
    open_receiver,
    results_account_url,
    worker_settings,
)
from core.errors import CloudUnavailableError, ConfigError, StoreWriteError
from core.ports import ResultStore
from core.worker.command import WorkerConfig
from core.worker.logs import JsonLines
from core.worker.loop import Worker, WorkerOptions
from tests.support.azure_service_bus_receiver import (
    CONNECTION_STRING,
    NAMESPACE,
    FakeQueue,
    install,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from core.worker.port import ReceivedMessage

WAIT = 30.0
"""The longest any wait may take before the test fails (never reached when it works)."""
CONFIG_PATH = Path("/etc/adder/cloud-config.json")


def task(i: int) -> bytes:
    return json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 1}}).encode()


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeQueue:
    """The queue every ServiceBusReceiver of the test talks to (5 deliveries at most)."""
    return install(monkeypatch, FakeQueue(lock_seconds=30, max_delivery_count=5))


def new_receiver(lease_seconds: float = 30.0) -> ServiceBusQueueReceiver:
    """The adapter over a real ServiceBusClient and receiver (SDK retries kept, waits short)."""
    client = ServiceBusClient.from_connection_string(
        CONNECTION_STRING, retry_total=1, retry_backoff_factor=0.001
    )
    receiver = ServiceBusQueueReceiver(
        client.get_queue_receiver("tasks", prefetch_count=0),
        queue="tasks",
        host=NAMESPACE,
        lease_seconds=lease_seconds,
        owned=(client,),
    )
    receiver.open()
    return receiver


@pytest.fixture
def receiver(broker: FakeQueue) -> Iterator[ServiceBusQueueReceiver]:
    adapter = new_receiver()
    yield adapter
    adapter.close()


def receive_all(receiver: ServiceBusQueueReceiver, count: int) -> list[ReceivedMessage]:
    """Receive until ``count`` messages are in hand."""
    got: list[ReceivedMessage] = []
    deadline = time.monotonic() + WAIT
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} messages came"
        got += receiver.receive(count - len(got), 1)
    return got


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# --- receive --------------------------------------------------------------------------------


def test_a_received_message_carries_its_body_id_and_service_bus_delivery_count(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN a task and a body that is not UTF-8 on the queue
    bodies = [task(1), b"\xff\xfe not utf-8"]
    ids = broker.send(bodies)
    # WHEN received
    first = receive_all(receiver, 2)
    # THEN each has its exact body, its message id, delivery 1 (the AMQP header says 0
    # earlier attempts), its sequence number for the log line, and the SDK's message
    assert [m.body for m in first] == bodies
    assert [m.message_id for m in first] == ids
    assert [m.delivery_count for m in first] == [1, 1]
    assert [m.platform["sequence_number"] for m in first] == [1, 2]
    assert all(isinstance(m.handle, ServiceBusReceivedMessage) for m in first)
    assert [m.handle.delivery_count for m in first] == [0, 0]  # type: ignore[attr-defined]
    # WHEN both are abandoned and received again / THEN it is their second delivery
    receiver.release(first, 0)
    again = receive_all(receiver, 2)
    assert [m.message_id for m in again] == ids
    assert [m.delivery_count for m in again] == [2, 2]


def test_a_receive_asks_for_at_most_a_batch_of_ten(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    broker.send([task(i) for i in range(25)])
    # WHEN the worker asks for 50 / THEN one receive gives 10 at most
    assert len(receiver.receive(50, 5)) == 10
    assert broker.counts()["locked"] == 10


def test_a_long_poll_on_an_empty_queue_is_cut_into_short_sdk_receives(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN slices of 0.05 s and a spy on the SDK receiver's receive_messages
    monkeypatch.setattr(servicebus_receiver, "RECEIVE_SLICE_SECONDS", 0.05)
    waits: list[float] = []
    sdk = receiver.receiver
    real = sdk.receive_messages

    def spy(max_message_count: int | None = 1, max_wait_time: float | None = None) -> Any:
        waits.append(float(max_wait_time or 0))
        return real(max_message_count=max_message_count, max_wait_time=max_wait_time)

    monkeypatch.setattr(sdk, "receive_messages", spy)
    # WHEN the worker long-polls an empty queue for a second
    got = receiver.receive(10, 1.0)
    # THEN nothing came, through several SDK calls none of which waited more than a slice
    assert got == []
    assert len(waits) >= 2
    assert max(waits) <= 0.05


def test_an_acknowledgement_is_not_held_behind_a_long_poll(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN a message in hand, and another thread long-polling the now empty queue
    broker.send([task(1)])
    (held,) = receive_all(receiver, 1)
    polled: list[list[ReceivedMessage]] = []
    poller = threading.Thread(target=lambda: polled.append(receiver.receive(10, WAIT)))
    poller.start()
    wait_for(lambda: broker.deliveries == 1 and poller.is_alive())
    # WHEN the message is acknowledged meanwhile
    refused = receiver.acknowledge([held])
    # THEN it was completed while the poll still waits
    assert refused == []
    assert broker.counts()["completed"] == 1
    assert poller.is_alive()
    # AND the poll gets the next message sent
    broker.send([task(2)])
    poller.join(WAIT)
    assert [m.body for m in polled[0]] == [task(2)]


# --- extend ---------------------------------------------------------------------------------


def test_extend_renews_the_lock_so_the_message_outlives_its_first_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a 2 s lock and a message in hand
    broker = install(monkeypatch, FakeQueue(lock_seconds=2))
    receiver = new_receiver(lease_seconds=2)
    broker.send([task(1)])
    (held,) = receive_all(receiver, 1)
    first_end = held.handle.locked_until_utc  # type: ignore[attr-defined]
    # WHEN its lock is renewed after 1.2 s, and it is completed 1.2 s later (past its first
    # lock's end)
    time.sleep(1.2)
    receiver.extend([held], 2)
    renewed_end = held.handle.locked_until_utc  # type: ignore[attr-defined]
    time.sleep(1.2)
    refused = receiver.acknowledge([held])
    receiver.close()
    # THEN the renewal went to the broker and the SDK's message holds the new end, and the
    # completion was taken: the lock was never lost
    assert broker.renewals == 1
    assert renewed_end > first_end
    assert refused == []
    assert (broker.expired, broker.counts()["completed"]) == (0, 1)


def test_extend_skips_a_lock_already_lost(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN two messages in hand, one of which was abandoned meanwhile (its lock is gone)
    broker.send([task(1), task(2)])
    gone, kept = receive_all(receiver, 2)
    receiver.release([gone], 0)
    # WHEN both leases are extended / THEN no error: the live one is renewed, the lost skipped
    receiver.extend([gone, kept], 30)
    assert broker.renewals == 1


# --- acknowledge ----------------------------------------------------------------------------


def test_acknowledge_completes_and_returns_those_whose_lock_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a 1 s lock whose end the client sees 5 s late (its clock behind the broker's),
    # and three messages in hand
    broker = install(monkeypatch, FakeQueue(lock_seconds=1, skew_seconds=5))
    receiver = new_receiver(lease_seconds=1)
    broker.send([task(1), task(2), task(3)])
    in_hand = receive_all(receiver, 3)
    # WHEN the first is completed in time, and the others after the broker's lock ended (the
    # SDK's own expiry check lets them through; the broker answers message-lock-lost)
    assert receiver.acknowledge(in_hand[:1]) == []
    assert broker.wait_until_locks_expire(WAIT)
    refused = receiver.acknowledge(in_hand[1:])
    # THEN those two are returned as not taken, and they are back on the queue
    assert refused == in_hand[1:]
    assert broker.refused_settlements == 2
    assert broker.counts() == {"active": 2, "locked": 0, "dead": 0, "completed": 1}
    # WHEN the client also sees the lock end (no skew) / THEN the SDK refuses before the
    # broker is asked, with the same result
    broker.skew_seconds = 0
    again = receive_all(receiver, 2)
    assert [m.delivery_count for m in again] == [2, 2]
    assert broker.wait_until_locks_expire(WAIT)
    assert receiver.acknowledge(again) == again
    assert broker.refused_settlements == 2
    receiver.close()


def test_acknowledge_during_an_outage_raises_when_nothing_was_completed(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN two messages in hand and a broker no connection reaches
    broker.send([task(1), task(2)])
    in_hand = receive_all(receiver, 2)
    broker.down = True
    # WHEN they are acknowledged / THEN a retryable error (the worker logs it; they come
    # back after their locks: a duplicate, not a loss)
    with pytest.raises(CloudUnavailableError, match="Service Bus queue 'tasks'"):
        receiver.acknowledge(in_hand)
    broker.down = False
    assert broker.counts()["completed"] == 0


def test_acknowledge_returns_the_rest_when_a_failure_comes_after_a_completion(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN three messages in hand; the second one's settlement fails on the receiver link
    # and on the management link (twice: the SDK retries once)
    broker.send([task(1), task(2), task(3)])
    in_hand = receive_all(receiver, 3)
    dropped = AMQPConnectionError(ErrorCondition.ConnectionCloseForced, description="dropped")
    broker.fail_next("settle", None, dropped)
    broker.fail_next("mgmt", dropped, dropped)
    # WHEN the three are acknowledged
    refused = receiver.acknowledge(in_hand)
    # THEN the first was completed, and the others are returned as not taken (the third
    # cannot be settled: the SDK shut the failed link down, taking its delivery with it)
    assert refused == in_hand[1:]
    assert broker.counts() == {"active": 0, "locked": 2, "dead": 0, "completed": 1}


def test_messages_received_before_a_dropped_connection_are_still_completed(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN two messages in hand, then the receiver's connection drops
    broker.send([task(1), task(2), task(3)])
    first, second = receive_all(receiver, 2)
    (link,) = broker.links
    link.sever()
    # WHEN the first is acknowledged at once (the SDK's retry reopens a link), then the
    # worker receives again and acknowledges the second with the third
    assert receiver.acknowledge([first]) == []
    (third,) = receive_all(receiver, 1)
    refused = receiver.acknowledge([second, third])
    # THEN all three are completed: the two from the lost link by lock token over the
    # management link (the SDK's fallback), the third over the new link
    assert refused == []
    assert len(broker.links) >= 2
    assert broker.settled_by_lock_token == 2
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 0, "completed": 3}


def test_a_receive_after_close_returns_nothing(
    broker: FakeQueue, receiver: ServiceBusQueueReceiver
) -> None:
    # GIVEN a message on the queue and a closed receiver (the worker has stopped) / WHEN a
    # poll still looping asks for more / THEN it gets nothing, and nothing is locked
    broker.send([task(1)])
    receiver.close()
    assert receiver.receive(10, 0.1) == []
    assert broker.counts()["locked"] == 0


# --- release --------------------------------------------------------------------------------


def test_release_now_abandons_and_the_max_delivery_count_dead_letters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a queue that dead-letters on the third delivery's failure
    broker = install(monkeypatch, FakeQueue(max_delivery_count=3))
    receiver = new_receiver()
    broker.send([task(1)])
    # WHEN the message is received and released at once three times
    counts = []
    for _ in range(3):
        (message,) = receive_all(receiver, 1)
        counts.append(message.delivery_count)
        receiver.release([message], 0)
    receiver.close()
    # THEN each release was an abandon, counted, and the third moved it to the dead letters
    assert counts == [1, 2, 3]
    assert broker.abandoned == 3
    assert [(d.body, d.delivery_count, d.dead_letter_reason) for d in broker.dead] == [
        (task(1), 3, "MaxDeliveryCountExceeded")
    ]
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 1, "completed": 0}


def test_a_delayed_release_leaves_the_lock_to_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a 1 s lock and a message in hand
    broker = install(monkeypatch, FakeQueue(lock_seconds=1))
    receiver = new_receiver(lease_seconds=1)
    broker.send([task(1)])
    (message,) = receive_all(receiver, 1)
    # WHEN it is released with a delay
    receiver.release([message], 30)
    # THEN nothing was abandoned: it stays locked until its lock ends, then comes back as its
    # second delivery
    assert broker.abandoned == 0
    assert broker.counts()["locked"] == 1
    (again,) = receive_all(receiver, 1)
    assert (again.message_id, again.delivery_count) == (message.message_id, 2)
    assert broker.expired == 1
    receiver.close()


# --- the worker over it ---------------------------------------------------------------------


class MemoryStore(ResultStore):
    """Records in memory; ``fail`` holds keys whose every write fails."""

    def __init__(self) -> None:
        self.prefix = "out"
        self.objects: dict[str, bytes] = {}
        self.fail: set[str] = set()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key in self.fail:
            raise StoreWriteError(f"injected failure writing {key}")
        with self._lock:
            self.objects[key] = data


class OneCallAtATime:
    """Wraps the SDK receiver's calls: counts how many run at once."""

    def __init__(self, sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()
        for name in ("receive_messages", "complete_message", "abandon_message"):
            monkeypatch.setattr(sdk, name, self._wrap(getattr(sdk, name)))
        monkeypatch.setattr(sdk, "renew_message_lock", self._wrap(sdk.renew_message_lock))

    def _wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.running += 1
                self.calls += 1
                self.most = max(self.most, self.running)
            try:
                time.sleep(0.001)  # widen any overlap
                return call(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1

        return wrapped


def test_a_worker_with_32_threads_never_calls_the_sdk_receiver_concurrently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN 500 tasks, 10 of whose writes always fail, on a queue that dead-letters on the
    # third delivery, and a lease far shorter than the lock, so that the heartbeat renews
    # locks while tasks wait in hand
    broker = install(monkeypatch, FakeQueue(lock_seconds=30, max_delivery_count=3))
    receiver = new_receiver(lease_seconds=0.4)
    calls = OneCallAtATime(receiver.receiver, monkeypatch)
    broker.send([task(i) for i in range(500)])
    store = MemoryStore()
    store.fail = {store.key(f"t{i}", ".out") for i in range(0, 500, 50)}
    out = io.StringIO()
    # WHEN a worker with 32 task threads (4 pollers, 4 settlers, a heartbeat) drains it,
    # releasing failed tasks at once
    options = WorkerOptions(
        concurrency=32,
        wait_seconds=1,
        idle_exit_seconds=1,
        retry_delay_seconds=0,
        heartbeat_seconds=0.05,
    )
    summary = Worker(receiver, store, JsonLines("az", out), options=options).run()
    # THEN the SDK receiver was never in two calls at once
    assert calls.calls > 0
    assert calls.most == 1
    # AND every good task is written and completed, the failing ones were delivered three
    # times and dead-lettered
    assert len(store.objects) == 490
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 10, "completed": 490}
    assert (summary.acknowledged, summary.retried, summary.released) == (490, 30, 30)
    attempts = sorted(
        line["delivery_attempt"]
        for line in map(json.loads, out.getvalue().splitlines())
        if line.get("outcome") == "retry"
    )
    assert attempts == [1] * 10 + [2] * 10 + [3] * 10


# --- opening, settings ----------------------------------------------------------------------


def config(**settings: object) -> WorkerConfig:
    return WorkerConfig(
        path=CONFIG_PATH,
        provider="azure",
        job_id="job",
        queue_name="tasks",
        result_bucket="results",
        result_prefix="out",
        settings=settings,
    )


def test_a_missing_queue_is_one_line_when_the_worker_opens(broker: FakeQueue) -> None:
    broker.exists = False
    settings = worker_settings(
        config(namespace="sb-x"),
        {"SERVICEBUS_CONNECTION_STRING": CONNECTION_STRING, "RESULTS_BLOB_CONNECTION_STRING": "x"},
    )
    with pytest.raises(ConfigError) as raised:
        open_receiver(settings)
    message = str(raised.value)
    assert message.startswith(f"Service Bus queue 'tasks' on {NAMESPACE} does not exist")
    assert f"check queue_name and config.namespace in {CONFIG_PATH}" in message
    assert "\n" not in message


def test_a_credential_without_listen_is_one_line_naming_the_role(broker: FakeQueue) -> None:
    broker.listen_allowed = False
    settings = worker_settings(
        config(),
        {"SERVICEBUS_CONNECTION_STRING": CONNECTION_STRING, "RESULTS_BLOB_CONNECTION_STRING": "x"},
    )
    with pytest.raises(ConfigError, match="access denied to Service Bus queue 'tasks'") as raised:
        open_receiver(settings)
    assert "'Azure Service Bus Data Receiver' on the queue" in str(raised.value)


class NoCredential:
    """A credential that has no token to give (as DefaultAzureCredential off Azure)."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.scopes += scopes
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token")


def test_no_credentials_is_one_line_before_any_connection(broker: FakeQueue) -> None:
    # GIVEN a short namespace name and no connection strings
    settings = worker_settings(config(namespace="sb-adder-1a2b3c", storage_account="st1"), {})
    assert settings.host == "sb-adder-1a2b3c.servicebus.windows.net"
    credential = NoCredential()
    # WHEN the receiver opens / THEN one line telling how to get credentials, no link opened
    with pytest.raises(ConfigError) as raised:
        open_receiver(settings, credential)
    assert str(raised.value) == (
        "no usable credentials for Service Bus queue 'tasks' on"
        f" sb-adder-1a2b3c.servicebus.windows.net: {WORKER_LOGIN}"
    )
    assert credential.scopes == ["https://servicebus.azure.net/.default"]
    assert broker.links == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, DEFAULT_LOCK_SECONDS), (45, 45.0), ("60", 60.0), ("PT1M30S", 90.0), ("PT5M", 300.0)],
)
def test_lock_duration_takes_seconds_or_the_stack_output(value: object, seconds: float) -> None:
    assert lock_seconds(value, "cfg.json") == seconds


@pytest.mark.parametrize("value", ["PT4S", 301, "P1D", "PT", "soon", True, -5])
def test_an_impossible_lock_duration_is_one_line(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^config.lock_duration in cfg.json must be"):
        lock_seconds(value, "cfg.json")


def test_the_results_account_from_a_url_or_a_name() -> None:
    assert results_account_url({"account_url": "http://127.0.0.1:10000/dev"}, "c") == (
        "http://127.0.0.1:10000/dev"
    )
    assert results_account_url({"storage_account": "stadderres1a2b3c"}, "c") == (
        "https://stadderres1a2b3c.blob.core.windows.net/"
    )
    assert results_account_url({}, "c") is None
    with pytest.raises(ConfigError, match="must be the account's blob endpoint"):
        results_account_url({"account_url": "stadderres1a2b3c"}, "c")


@pytest.mark.parametrize(
    ("settings", "environ", "says"),
    [
        ({}, {}, "has no config.namespace: adder work on azure needs the Service Bus namespace"),
        (
            {"namespace": "sb-x"},
            {},
            "has no config.account_url (or config.storage_account)",
        ),
    ],
)
def test_missing_settings_are_one_line(
    settings: dict[str, object], environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        worker_settings(config(**settings), environ)
    assert says in str(raised.value)
    assert str(CONFIG_PATH) in str(raised.value)


def test_connection_strings_come_from_the_environment_and_are_never_echoed() -> None:
    # GIVEN connection strings in the environment only / THEN they are used
    settings = worker_settings(
        config(),
        {
            "SERVICEBUS_CONNECTION_STRING": CONNECTION_STRING,
            "RESULTS_BLOB_CONNECTION_STRING": "UseDevelopmentStorage=true",
        },
    )
    assert (settings.host, settings.needs_credential) == (NAMESPACE, False)
    # GIVEN a malformed one / THEN one line that does not quote it
    secret = "Endpoint=nonsense;SharedAccessKey=c2VjcmV0"
    with pytest.raises(ConfigError) as raised:
        servicebus_receiver._service_bus_client("nonsense", secret, None)
    assert "SERVICEBUS_CONNECTION_STRING is malformed" in str(raised.value)
    assert "c2VjcmV0" not in str(raised.value)
