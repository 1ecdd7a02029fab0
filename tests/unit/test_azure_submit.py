"""``adder submit azure`` and ``AzureJobBackend.send_batch`` through the Service Bus SDK,
down to its AMQP send client.

No Service Bus emulator can run here, so the seam is the lowest the SDK has: the pyamqp
``SendClient`` (the AMQP connection and link) that ``ServiceBusSender`` opens. Everything above
it is the real SDK: ``ServiceBusClient.from_connection_string``, the sender, its link-size
negotiation, ``ServiceBusMessageBatch`` and its size accounting, the AMQP encoding of each
batch, the mapping of AMQP errors to ``ServiceBusError`` and the SDK's own retries. The fake
link records each transfer as it would go on the wire (encoded by the SDK's encoder) and can
fail transfers with the AMQP errors a broker or a dropped connection produce. Not exercised:
a real broker's answers (their AMQP error conditions are the documented ones used here),
authentication (CBS), and the receive side (see tests/support/azure_service_bus.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.servicebus._pyamqp._decode import decode_payload
from azure.servicebus._pyamqp._encode import encode_payload
from azure.servicebus._pyamqp.error import AMQPConnectionError, AMQPLinkError, ErrorCondition
from azure.servicebus._transport._pyamqp_transport import PyamqpTransport

from azure_function import jobs
from azure_function.job_backend import BATCH_HEADROOM_BYTES, AzureJobBackend, ServiceBusParts
from core.cli import main
from core.errors import CloudUnavailableError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NAMESPACE = "adder-test.servicebus.windows.net"
CONNECTION_STRING = (
    f"Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName=send;SharedAccessKey=bm90LWEtcmVhbC1rZXk="
)
STANDARD_LIMIT = 256 * 1024  # what a Standard-tier queue announces as its max message size


@dataclass
class Transfer:
    """One batch as it went on the wire."""

    wire_bytes: int
    bodies: list[bytes]
    message_ids: list[str]


@dataclass
class FakeBroker:
    """The far end of the fake link: what arrived, and the failures to answer with."""

    max_message_size: int = STANDARD_LIMIT
    failures: list[Exception] = field(default_factory=list)
    fail_from_transfer: int | None = None
    """Refuse every transfer from this (0-based) one on, with ``failures[0]``'s kind."""
    refuse_links: bool = False
    transfers: list[Transfer] = field(default_factory=list)
    attempts: int = 0
    links_opened: int = 0

    def receive(self, message: Any) -> None:
        self.attempts += 1
        if self.fail_from_transfer is not None and len(self.transfers) >= self.fail_from_transfer:
            raise AMQPConnectionError(ErrorCondition.ConnectionCloseForced, description="reset")
        if self.failures:
            raise self.failures.pop(0)
        inner: list[Any] = [decode_payload(memoryview(data)) for data in message.data]
        self.transfers.append(
            Transfer(
                wire_bytes=len(encode_payload(bytearray(), message)),
                bodies=[b"".join(m.data) for m in inner],
                message_ids=[m.properties.message_id.decode() for m in inner],
            )
        )

    @property
    def bodies(self) -> list[bytes]:
        return [body for transfer in self.transfers for body in transfer.bodies]


class _Link:
    def __init__(self, broker: FakeBroker) -> None:
        self.remote_max_message_size = broker.max_message_size
        self.remote_properties: dict[bytes, Any] = {}
        self.name = "fake-sender-link"


class FakeSendClient:
    """Stands in for pyamqp's SendClient: the AMQP connection and sender link."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self._link = _Link(broker)

    def open(self, connection: object = None) -> None:
        self.broker.links_opened += 1
        if self.broker.refuse_links:
            raise AMQPConnectionError(ErrorCondition.UnauthorizedAccess, description="refused")

    def client_ready(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def send_message(self, message: Any, timeout: float | None = None) -> None:
        self.broker.receive(message)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBroker]:
    """Every ServiceBusSender opened during the test talks to this fake broker."""
    fake = FakeBroker()

    def create_send_client(config: object, **kwargs: object) -> FakeSendClient:
        return FakeSendClient(fake)

    monkeypatch.setattr(PyamqpTransport, "create_send_client", staticmethod(create_send_client))
    yield fake


def fast_client() -> ServiceBusClient:
    """A real client with the SDK's retries kept (1 retry) but its waits shortened."""
    return ServiceBusClient.from_connection_string(
        CONNECTION_STRING, retry_total=1, retry_backoff_factor=0.001
    )


@pytest.fixture
def backend(broker: FakeBroker) -> Iterator[AzureJobBackend]:
    """The backend on a real ServiceBusClient and sender, whose link is the fake broker."""
    client = fast_client()
    sender = client.get_queue_sender("tasks")
    receiver = client.get_queue_receiver("tasks", sub_queue="deadletter")
    backend = AzureJobBackend(
        ServiceBusParts("tasks", NAMESPACE, sender, receiver, None, (client,))
    )
    yield backend
    backend.close()


def tasks(count: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"id": f"task-{i}", "data": {"num1": i, "num2": 0.5}}).encode()
        for i in range(start, start + count)
    ]


def test_a_large_call_is_split_into_batches_within_the_limit_on_the_wire(
    broker: FakeBroker, backend: AzureJobBackend
) -> None:
    # GIVEN more tasks than one batch holds / WHEN they are sent in one call
    bodies = tasks(6000)
    refused = backend.send_batch(bodies)
    # THEN every task arrived once, in order, byte for byte, with its own message id
    assert refused == []
    assert broker.bodies == bodies
    ids = [i for transfer in broker.transfers for i in transfer.message_ids]
    assert len(set(ids)) == len(bodies)
    # AND they went in several batches, each within the queue's limit on the wire, full ones
    # within twice the headroom of it
    assert len(broker.transfers) >= 2
    assert all(t.wire_bytes <= STANDARD_LIMIT for t in broker.transfers)
    assert all(
        t.wire_bytes > STANDARD_LIMIT - 2 * BATCH_HEADROOM_BYTES for t in broker.transfers[:-1]
    )


def test_the_sdk_batch_alone_would_overflow_the_limit_on_the_wire(broker: FakeBroker) -> None:
    # GIVEN a batch created at the link's full limit, filled until the SDK says it is full
    with fast_client() as client, client.get_queue_sender("tasks") as sender:
        batch = sender.create_message_batch()
        for index, body in enumerate(tasks(10_000)):
            try:
                batch.add_message(ServiceBusMessage(body, message_id=f"{index:032x}"))
            except ValueError:
                break
        # WHEN it is sent
        sender.send_messages(batch)
    # THEN its encoding exceeds the limit the SDK counted against: why batches keep headroom
    (transfer,) = broker.transfers
    assert batch.size_in_bytes <= STANDARD_LIMIT < transfer.wire_bytes
    assert transfer.wire_bytes - STANDARD_LIMIT < BATCH_HEADROOM_BYTES


def test_a_dropped_connection_is_retried_by_the_sdk(
    broker: FakeBroker, backend: AzureJobBackend
) -> None:
    # GIVEN a connection that drops on the first transfer
    broker.failures = [AMQPConnectionError(ErrorCondition.ConnectionCloseForced, description="x")]
    # WHEN a batch is sent / THEN the SDK's own retry delivered it, over a reopened link
    assert backend.send_batch(tasks(100)) == []
    assert broker.bodies == tasks(100)
    assert broker.attempts == 2
    assert broker.links_opened >= 2


def test_a_batch_that_keeps_failing_is_transient_and_nothing_is_sent(
    broker: FakeBroker, backend: AzureJobBackend
) -> None:
    # GIVEN a connection that drops on every transfer
    broker.fail_from_transfer = 0
    # WHEN a batch is sent / THEN it raises "try again" after the SDK's tries, nothing arrived
    with pytest.raises(CloudUnavailableError) as raised:
        backend.send_batch(tasks(10))
    assert broker.transfers == []
    assert broker.attempts == 2
    assert str(raised.value).startswith(f"Service Bus queue 'tasks' on {NAMESPACE}: try again")
    assert "\n" not in str(raised.value)


def test_a_later_batch_that_fails_is_refused_for_another_try(
    broker: FakeBroker, backend: AzureJobBackend
) -> None:
    # GIVEN a broker that takes the first transfer and then drops every one
    broker.fail_from_transfer = 1
    bodies = tasks(6000)
    # WHEN more than one batch's worth is sent in one call
    refused = backend.send_batch(bodies)
    # THEN the first batch is sent, and every later message is refused with "retry"
    first = len(broker.transfers[0].bodies)
    assert broker.bodies == bodies[:first]
    assert [r.index for r in refused] == list(range(first, len(bodies)))
    assert all(r.retry for r in refused)


def test_a_missing_queue_is_a_one_line_config_error(
    broker: FakeBroker, backend: AzureJobBackend
) -> None:
    # GIVEN a queue the broker does not know
    broker.failures = [AMQPLinkError(ErrorCondition.NotFound, description="no such queue")]
    # WHEN a batch is sent / THEN one transfer was tried, and the error names the queue
    with pytest.raises(ConfigError) as raised:
        backend.send_batch(tasks(10))
    assert broker.attempts == 1
    assert str(raised.value).startswith(
        f"Service Bus queue 'tasks' on {NAMESPACE} does not exist (no such queue): check --queue"
    )


def test_a_link_refused_is_access_denied(broker: FakeBroker, backend: AzureJobBackend) -> None:
    # GIVEN a broker that refuses the sender link (no Send right)
    broker.refuse_links = True
    # WHEN a batch is sent / THEN nothing went, and the error names the role to grant
    with pytest.raises(ConfigError) as raised:
        backend.send_batch(tasks(25))
    assert broker.transfers == []
    assert str(raised.value).startswith(
        f"access denied to Service Bus queue 'tasks' on {NAMESPACE}"
    )
    assert "the caller needs 'Azure Service Bus Data Sender'" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_task_too_large_for_a_message_is_refused_and_the_rest_sent(
    broker: FakeBroker, backend: AzureJobBackend
) -> None:
    # GIVEN tasks with one body larger than a whole batch may be
    huge = b'{"id": "huge", "pad": "' + b"x" * STANDARD_LIMIT + b'"}'
    bodies = [*tasks(3), huge, *tasks(3, start=3)]
    # WHEN they are sent
    refused = backend.send_batch(bodies)
    # THEN the others went, the large one is refused for good, by position
    assert broker.bodies == [*tasks(3), *tasks(3, start=3)]
    assert [(r.index, r.retry) for r in refused] == [(3, False)]
    assert "does not fit one Service Bus message" in refused[0].reason


def test_submit_command_sends_every_task_and_records_the_job(
    broker: FakeBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 3,000 tasks in a JSON Lines file (the last one not even JSON)
    bodies = [*tasks(2999), b"not json at all"]
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(b"\n".join(bodies) + b"\n")
    # WHEN they are submitted with the command
    code = main(["submit", "azure", "--connection-string", CONNECTION_STRING, "--queue", "tasks",
                 "--jobs-dir", str(tmp_path / "jobs"), "--no-progress", str(source)])  # fmt: skip
    # THEN every task arrived once, in order, byte for byte, each batch within the limit
    assert code == 0
    assert broker.bodies == bodies
    assert all(t.wire_bytes <= STANDARD_LIMIT for t in broker.transfers)
    # AND the summary counts them, and the manifest records every task's record name
    assert f"sent 3,000 tasks to Service Bus queue tasks on {NAMESPACE}" in capsys.readouterr().out
    sent = (tmp_path / "jobs" / "tasks.sent").read_text().split()
    assert len(sent) == 3000
    assert sent[0] == "task-0"
    # AND the connection string (a secret) is not in the manifest
    assert "SharedAccessKey" not in (tmp_path / "jobs" / "tasks.json").read_text()


def test_missing_sdk_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an environment without azure-servicebus
    monkeypatch.setitem(sys.modules, "azure.servicebus", None)
    source = tmp_path / "t.jsonl"
    source.write_text("{}\n")
    # WHEN submit runs / THEN it says what to install and exits 2
    code = main(["submit", "azure", "--connection-string", CONNECTION_STRING, "--queue", "q",
                 "--jobs-dir", str(tmp_path / "jobs"), str(source)])  # fmt: skip
    assert code == 2
    assert "pip install 'adder-tasks[azure]'" in capsys.readouterr().err
    assert jobs.INSTALL_HINT.endswith("pip install 'adder-tasks[azure]'")
