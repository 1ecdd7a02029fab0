"""``adder submit azure`` through the Service Bus SDK, down to its AMQP send client.

No Service Bus emulator can run here, so the seam is the lowest the SDK has: the pyamqp
``SendClient`` (the AMQP connection and link) that ``ServiceBusSender`` opens. Everything above
it is the real SDK: ``ServiceBusClient.from_connection_string``, the sender, its link-size
negotiation, ``ServiceBusMessageBatch`` and its size accounting, the AMQP encoding of each
batch, the mapping of AMQP errors to ``ServiceBusError`` and the SDK's own retries. The fake
link records each transfer as it would go on the wire (encoded by the SDK's encoder) and can
fail transfers with the AMQP errors a broker or a dropped connection produce.
"""

from __future__ import annotations

import io
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

from azure_function.submit import (
    BATCH_HEADROOM_BYTES,
    fully_qualified_namespace,
    is_transient,
    make_client,
    submit_bodies,
)
from core.cli import main
from core.errors import ProviderUnavailableError

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


def tasks(count: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"id": f"task-{i}", "data": {"num1": i, "num2": 0.5}}).encode()
        for i in range(start, start + count)
    ]


def no_sleep(seconds: float) -> None:
    pass


def test_submit_command_sends_every_task_in_batches_within_the_size_limit(
    broker: FakeBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 6,000 tasks in a JSON Lines file (the last one not even JSON)
    bodies = [*tasks(5999), b"not json at all"]
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(b"\n".join(bodies) + b"\n")
    # WHEN they are submitted with the command
    code = main(["submit", "azure", "--connection-string", CONNECTION_STRING, "--queue", "tasks",
                 "--no-progress", str(source)])  # fmt: skip
    # THEN every task arrived once, in order, byte for byte, with its own message id
    assert code == 0
    assert broker.bodies == bodies
    ids = [i for transfer in broker.transfers for i in transfer.message_ids]
    assert len(set(ids)) == len(bodies)
    # AND they went in several batches, each within the queue's limit on the wire
    assert len(broker.transfers) >= 2
    assert all(t.wire_bytes <= STANDARD_LIMIT for t in broker.transfers)
    assert all(
        t.wire_bytes > STANDARD_LIMIT - 2 * BATCH_HEADROOM_BYTES for t in broker.transfers[:-1]
    )
    # AND the summary counts them
    out = capsys.readouterr().out
    assert f"sent 6000 messages to queue tasks on {NAMESPACE}" in out


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


def test_a_transient_failure_is_retried_by_the_sdk_then_resent(broker: FakeBroker) -> None:
    # GIVEN a connection that drops on the first three transfers
    broker.failures = [
        AMQPConnectionError(ErrorCondition.ConnectionCloseForced, description="reset")
        for _ in range(3)
    ]
    waits: list[float] = []
    # WHEN 100 tasks are submitted (the SDK tries twice per send, the submit up to 3 times)
    with fast_client() as client, client.get_queue_sender("tasks") as sender:
        summary = submit_bodies(sender, tasks(100), sleep=waits.append, errors=io.StringIO())
    # THEN the batch went through on the 4th transfer: 2 SDK tries, then a re-send that did
    assert (summary.sent, summary.failed, summary.exit_code) == (100, 0, 0)
    assert broker.attempts == 4
    assert broker.bodies == tasks(100)
    assert waits == [1.0]
    # AND the SDK reopened the link after each dropped connection
    assert broker.links_opened >= 3


def test_a_batch_that_keeps_failing_stops_the_submit(broker: FakeBroker) -> None:
    # GIVEN a broker that accepts the first batch and then drops every transfer
    broker.fail_from_transfer = 1
    errors = io.StringIO()
    waits: list[float] = []
    bodies = tasks(6000)
    # WHEN the tasks are submitted with 3 attempts per batch
    with fast_client() as client, client.get_queue_sender("tasks") as sender:
        summary = submit_bodies(sender, bodies, sleep=waits.append, errors=errors, max_attempts=3)
    # THEN the first batch counts as sent, everything else as not sent, and the exit code says so
    first = len(broker.transfers[0].bodies)
    assert broker.bodies == bodies[:first]
    assert (summary.sent, summary.failed, summary.exit_code) == (first, len(bodies) - first, 1)
    # AND the failing batch was tried 3 times by the submit, each time twice by the SDK
    assert broker.attempts == 1 + 3 * 2
    assert waits == [1.0, 2.0]
    assert "was not sent (attempt 3 of 3)" in errors.getvalue()
    assert f"{len(bodies) - first} could not be sent" in summary.line("q")


def test_a_permanent_failure_is_not_resent(broker: FakeBroker) -> None:
    # GIVEN a queue the broker does not know
    broker.failures = [AMQPLinkError(ErrorCondition.NotFound, description="no such queue")]
    errors = io.StringIO()
    # WHEN tasks are submitted
    with fast_client() as client, client.get_queue_sender("tasks") as sender:
        summary = submit_bodies(sender, tasks(10), sleep=no_sleep, errors=errors)
    # THEN one transfer was tried, nothing was sent, and the error is shown
    assert broker.attempts == 1
    assert (summary.sent, summary.failed) == (0, 10)
    assert "no such queue" in errors.getvalue()


def test_a_queue_that_cannot_be_opened_sends_nothing(broker: FakeBroker) -> None:
    # GIVEN a broker that refuses the sender link
    broker.refuse_links = True
    errors = io.StringIO()
    # WHEN tasks are submitted
    with fast_client() as client:
        sender = client.get_queue_sender("tasks")
        summary = submit_bodies(sender, tasks(25), sleep=no_sleep, errors=errors)
    # THEN nothing went, every task counts as not sent, and the reason is shown
    assert broker.transfers == []
    assert (summary.sent, summary.failed, summary.exit_code) == (0, 25, 1)
    assert "cannot open the queue" in errors.getvalue()


def test_a_task_too_large_for_a_message_is_counted_and_the_rest_sent(broker: FakeBroker) -> None:
    # GIVEN tasks with one body larger than a whole batch may be
    huge = b'{"id": "huge", "pad": "' + b"x" * STANDARD_LIMIT + b'"}'
    bodies = [*tasks(3), huge, *tasks(3, start=3)]
    errors = io.StringIO()
    # WHEN they are submitted
    with fast_client() as client, client.get_queue_sender("tasks") as sender:
        summary = submit_bodies(sender, bodies, sleep=no_sleep, errors=errors)
    # THEN the others went, the large one is reported by position
    assert broker.bodies == [*tasks(3), *tasks(3, start=3)]
    assert (summary.sent, summary.failed) == (6, 1)
    assert "task 4 " in errors.getvalue()


def test_progress_is_drawn_on_request(
    broker: FakeBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a tasks file / WHEN it is submitted with --progress
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(b"\n".join(tasks(3000)) + b"\n")
    code = main(["submit", "azure", "--connection-string", CONNECTION_STRING, "--queue", "tasks",
                 "--progress", str(source)])  # fmt: skip
    # THEN the bar ends at the total
    assert code == 0
    assert "3,000/3,000 100%" in capsys.readouterr().err


def test_stdin_and_empty_input(
    broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no tasks on standard input / WHEN they are submitted
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code = main(
        ["submit", "azure", "--connection-string", CONNECTION_STRING, "--queue", "tasks", "-"]
    )
    # THEN nothing is sent and that is a success
    assert code == 0
    assert broker.transfers == []
    assert "sent 0 messages" in capsys.readouterr().out


def test_namespace_names_and_transient_classes() -> None:
    # GIVEN short and full names / THEN both become the namespace's host name
    assert fully_qualified_namespace("sb-adder-1a2b3c") == "sb-adder-1a2b3c.servicebus.windows.net"
    assert fully_qualified_namespace("sb://ns.servicebus.chinacloudapi.cn/") == (
        "ns.servicebus.chinacloudapi.cn"
    )
    # AND a client for a namespace uses Entra ID (no network until it sends)
    client = make_client("sb-adder-1a2b3c", None)
    assert client.fully_qualified_namespace == "sb-adder-1a2b3c.servicebus.windows.net"
    # AND only timeouts, connection and busy errors are worth a re-send
    from azure.servicebus.exceptions import (
        MessagingEntityNotFoundError,
        OperationTimeoutError,
        ServiceBusServerBusyError,
    )

    assert is_transient(OperationTimeoutError(message="t"))
    assert is_transient(ServiceBusServerBusyError(message="b"))
    assert not is_transient(MessagingEntityNotFoundError(message="n"))


def test_missing_sdk_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an environment without azure-servicebus
    monkeypatch.setitem(sys.modules, "azure.servicebus", None)
    source = tmp_path / "t.jsonl"
    source.write_text("{}\n")
    # WHEN submit runs / THEN it says what to install and exits 2
    with pytest.raises(ProviderUnavailableError):
        make_client(None, CONNECTION_STRING)
    assert main(["submit", "azure", "--namespace", "ns", "--queue", "q", str(source)]) == 2
    assert "pip install 'adder-tasks[azure]'" in capsys.readouterr().err
