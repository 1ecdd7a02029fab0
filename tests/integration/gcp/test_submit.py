"""``adder submit gcp`` where the Pub/Sub emulator cannot help: request sizes and faults.

The emulator shows neither how the client split messages into publish requests nor can it
fail a request on demand (no fault injection, no IAM). For that the real PublisherClient is
pointed, by its own ``PUBSUB_EMULATOR_HOST`` seam, at a small gRPC server on loopback that
implements the two RPCs it calls, ``google.pubsub.v1.Publisher/GetTopic`` and ``/Publish``,
with the library's own request/response types: it records every request and fails the ones
a test chooses. Batching, the client's retry, serialization and gRPC transport are the
library's real code; everything else about submit runs on the emulator
(``test_pubsub_flow.py``, ``test_jobs.py``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.api_core import retry as retries
from google.pubsub_v1.types import GetTopicRequest, PublishRequest, PublishResponse, Topic

from core.cli import main
from core.ops.manifest import Manifest
from core.ops.submit import submit
from gcp_function.job_backend import GcpJobBackend
from gcp_function.jobs import PUBLISH_MAX_MESSAGES, Clients

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

TOPIC = "projects/test-project/topics/adder-tasks"
Failure = Callable[[int, list[bytes]], Any]
"""Given the request index and its bodies: a ``grpc.StatusCode`` to fail with, or None."""


@dataclass
class PublishServer:
    """What the loopback Publisher service received, and its failure rules."""

    address: str
    requests: list[tuple[str, list[bytes], str]] = field(default_factory=list)
    """Every Publish request: topic, message bodies, and the status answered."""
    fail: Failure = lambda index, bodies: None
    get_topic_status: Any = None
    """A ``grpc.StatusCode`` GetTopic answers with, or None for the topic."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get_topic(self, request: GetTopicRequest, context: Any) -> Topic:
        if self.get_topic_status is not None:
            context.abort(self.get_topic_status, "injected GetTopic failure")
        return Topic(name=request.topic)

    def publish(self, request: PublishRequest, context: Any) -> PublishResponse:
        bodies = [bytes(message.data) for message in request.messages]
        with self.lock:
            index = len(self.requests)
            status = self.fail(index, bodies)
            self.requests.append((request.topic, bodies, status.name if status else "OK"))
        if status is not None:
            context.abort(status, f"injected failure of request {index}")
        first = index * 10_000
        return PublishResponse(message_ids=[str(first + n) for n in range(len(bodies))])

    def accepted(self) -> list[bytes]:
        """Bodies of the requests that were answered OK, in arrival order."""
        return [body for _, bodies, status in self.requests if status == "OK" for body in bodies]


@pytest.fixture
def pubsub(monkeypatch: pytest.MonkeyPatch) -> Iterator[PublishServer]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port("127.0.0.1:0")
    state = PublishServer(f"127.0.0.1:{port}")
    handler = grpc.method_handlers_generic_handler(
        "google.pubsub.v1.Publisher",
        {
            "Publish": grpc.unary_unary_rpc_method_handler(
                state.publish,
                request_deserializer=PublishRequest.deserialize,
                response_serializer=PublishResponse.serialize,
            ),
            "GetTopic": grpc.unary_unary_rpc_method_handler(
                state.get_topic,
                request_deserializer=GetTopicRequest.deserialize,
                response_serializer=Topic.serialize,
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", state.address)
    try:
        yield state
    finally:
        server.stop(grace=None)


def write_tasks(path: Path, count: int) -> list[bytes]:
    lines = [
        json.dumps({"id": f"task-{n}", "data": {"num1": n, "num2": 0.5}}).encode()
        for n in range(count)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def no_client_retry() -> Any:
    """A retry that never retries: failures reach the backend's answer and the driver."""
    return retries.Retry(predicate=lambda _: False)


def backend_without_client_retry(pubsub: PublishServer) -> GcpJobBackend:
    publisher = Clients("test-project", pubsub.address, None).publisher()
    backend = GcpJobBackend(topic=TOPIC, publisher=publisher, retry=no_client_retry())
    backend.check_topic()  # as open_backend does: Pub/Sub answered, later failures are transient
    return backend


def submit_args(tmp_path: Path, *more: str) -> list[str]:
    tasks = str(tmp_path / "tasks.jsonl")
    return ["submit", "gcp", "--topic", TOPIC, "--jobs-dir", str(tmp_path / "jobs"), *more, tasks]


def test_submit_publishes_everything_in_large_requests_and_counts(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 2,500 tasks and a Publish service that accepts everything
    tasks = write_tasks(tmp_path / "tasks.jsonl", 2500)
    # WHEN they are submitted (progress forced on, as on a terminal)
    code = main(submit_args(tmp_path, "--progress"))
    # THEN every task arrived once, byte for byte, on the right topic
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(pubsub.accepted()) == sorted(tasks)
    assert {topic for topic, _, _ in pubsub.requests} == {TOPIC}
    # AND in requests bounded by 1,000 messages, larger than the library default of 100
    sizes = [len(bodies) for _, bodies, _ in pubsub.requests]
    assert max(sizes) <= PUBLISH_MAX_MESSAGES
    assert max(sizes) > 100
    assert len(sizes) < 25  # the default batch settings would need at least 25 requests
    # AND the final count line and the progress bar were printed
    assert out.startswith(f"sent 2,500 tasks to Pub/Sub topic {TOPIC} in ")
    assert "2,500/2,500 100%" in err


def test_transient_errors_are_retried_by_the_client_library(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Publish service that answers UNAVAILABLE to every other request
    tasks = write_tasks(tmp_path / "tasks.jsonl", 1200)
    pubsub.fail = lambda index, _: grpc.StatusCode.UNAVAILABLE if index % 2 == 0 else None
    # WHEN the tasks are submitted
    code = main(submit_args(tmp_path))
    # THEN the client's retry sent the failed requests again, and every task arrived
    out, _ = capsys.readouterr()
    assert code == 0
    assert [status for _, _, status in pubsub.requests].count("UNAVAILABLE") > 0
    assert sorted(set(pubsub.accepted())) == sorted(tasks)
    assert f"sent 1,200 tasks to Pub/Sub topic {TOPIC}" in out


def test_failed_futures_are_refused_for_retry_and_the_driver_sends_them_again(
    pubsub: PublishServer, tmp_path: Path
) -> None:
    # GIVEN the first two requests fail, and the client itself does not retry
    tasks = write_tasks(tmp_path / "tasks.jsonl", 1500)
    pubsub.fail = lambda index, _: grpc.StatusCode.UNAVAILABLE if index < 2 else None
    backend = backend_without_client_retry(pubsub)
    # WHEN one batch is sent / THEN the failed ones are refused with "try again"
    refused = backend.send_batch(tasks[:1000])
    failed = [body for _, bodies, status in pubsub.requests if status != "OK" for body in bodies]
    assert len(refused) == len(failed) > 0
    assert all(refusal.retry for refusal in refused)
    assert {tasks[refusal.index] for refusal in refused} == set(failed)
    # WHEN the whole file is submitted by the driver
    manifest = Manifest.create(tmp_path / "jobs", "j", "gcp", {}, str(tmp_path / "tasks.jsonl"))
    summary = submit(backend, str(tmp_path / "tasks.jsonl"), manifest=manifest, pause=0)
    backend.close()
    # THEN every task was accepted, and the manifest records all of them
    assert (summary.sent, summary.failed, summary.exit_code) == (1500, 0, 0)
    assert set(pubsub.accepted()) == set(tasks)
    assert len(manifest.sent_names()) == 1500


def test_a_message_the_topic_refuses_is_not_sent_again_and_exits_1(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Publish service that refuses every request as INVALID_ARGUMENT
    write_tasks(tmp_path / "tasks.jsonl", 10)
    pubsub.fail = lambda index, _: grpc.StatusCode.INVALID_ARGUMENT
    # WHEN the tasks are submitted
    code = main(submit_args(tmp_path))
    # THEN each was tried once, none is counted as sent, and the reason is shown
    out, err = capsys.readouterr()
    assert code == 1
    assert sum(len(bodies) for _, bodies, _ in pubsub.requests) == 10
    assert "sent 0 tasks" in out and "10 not sent" in out
    assert "error: a task was not sent: InvalidArgument" in err


def test_permission_denied_on_publish_stops_the_submit_with_exit_2(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a topic the caller may not publish to
    write_tasks(tmp_path / "tasks.jsonl", 10)
    pubsub.fail = lambda index, _: grpc.StatusCode.PERMISSION_DENIED
    # WHEN the tasks are submitted
    code = main(submit_args(tmp_path))
    # THEN the submit stops with the role to grant, and exits 2 (no retry can fix it)
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"error: access denied to Pub/Sub topic {TOPIC} at {pubsub.address} (")
    assert err.endswith("): the caller needs roles/pubsub.publisher on it\n")
    assert len(err.splitlines()) == 1


def test_a_publisher_that_may_not_read_the_topic_still_submits(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN roles/pubsub.publisher alone: GetTopic is denied, Publish is allowed
    tasks = write_tasks(tmp_path / "tasks.jsonl", 3)
    pubsub.get_topic_status = grpc.StatusCode.PERMISSION_DENIED
    # WHEN the tasks are submitted / THEN the topic check lets it through and all are sent
    assert main(submit_args(tmp_path)) == 0
    assert sorted(pubsub.accepted()) == sorted(tasks)
    capsys.readouterr()
