"""``adder submit gcp`` through the real google-cloud-pubsub PublisherClient.

No Pub/Sub emulator can be installed here (it ships only with the gcloud SDK). The client is
pointed, by its own ``PUBSUB_EMULATOR_HOST`` seam, at a small gRPC server on loopback that
implements the one RPC it calls, ``google.pubsub.v1.Publisher/Publish``, with the library's
own request/response types: it records every request and fails the ones a test chooses.
Batching, the client's retry, serialization and gRPC transport are the library's real code.
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
from google.pubsub_v1.types import PublishRequest, PublishResponse

from core.cli import main
from core.submit import message_bodies
from gcp_function import submit

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

TOPIC = "projects/test-project/topics/adder-tasks"
Failure = Callable[[int, list[bytes]], Any]
"""Given the request index and its bodies: a ``grpc.StatusCode`` to fail with, or None."""


@dataclass
class PublishServer:
    """What the loopback Publish service received, and its failure rule."""

    address: str
    requests: list[tuple[str, list[bytes], str]] = field(default_factory=list)
    """Every request: topic, message bodies, and the status answered ("OK" or a code name)."""
    fail: Failure = lambda index, bodies: None
    lock: threading.Lock = field(default_factory=threading.Lock)

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
            )
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
    """A retry that never retries: failures reach this command's own re-publish rounds."""
    return retries.Retry(predicate=lambda _: False)


def test_submit_publishes_everything_in_large_batches_and_counts(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 2,500 tasks and a Publish service that accepts everything
    tasks = write_tasks(tmp_path / "tasks.jsonl", 2500)
    # WHEN they are submitted (progress forced on, as on a terminal)
    code = main(["submit", "gcp", "--topic", TOPIC, str(tmp_path / "tasks.jsonl"), "--progress"])
    # THEN every task arrived once, byte for byte, on the right topic
    out, err = capsys.readouterr()
    assert code == 0
    assert sorted(pubsub.accepted()) == sorted(tasks)
    assert {topic for topic, _, _ in pubsub.requests} == {TOPIC}
    # AND in batches bounded by 1,000 messages, larger than the library default of 100
    sizes = [len(bodies) for _, bodies, _ in pubsub.requests]
    assert max(sizes) <= submit.MAX_MESSAGES
    assert max(sizes) > 100
    assert len(sizes) < 25  # the default batch settings would need at least 25 requests
    # AND the final count line and the progress bar were printed
    assert out.strip().startswith(f"sent 2500 messages to {TOPIC} in ")
    assert "could not be sent" not in out
    assert "2,500/2,500 100%" in err


def test_transient_errors_are_retried_by_the_client_library(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Publish service that answers UNAVAILABLE to every other request
    tasks = write_tasks(tmp_path / "tasks.jsonl", 1200)
    pubsub.fail = lambda index, _: grpc.StatusCode.UNAVAILABLE if index % 2 == 0 else None
    # WHEN the tasks are submitted
    code = main(["submit", "gcp", "--topic", TOPIC, str(tmp_path / "tasks.jsonl")])
    # THEN the client's retry sent the failed batches again, and every task arrived
    out, _ = capsys.readouterr()
    assert code == 0
    failed = [bodies for _, bodies, status in pubsub.requests if status == "UNAVAILABLE"]
    assert failed
    assert sorted(set(pubsub.accepted())) == sorted(tasks)
    assert f"sent 1200 messages to {TOPIC}" in out


def test_failed_publishes_are_published_again_in_a_later_round(
    pubsub: PublishServer, tmp_path: Path
) -> None:
    # GIVEN the first two requests fail, and the client itself does not retry
    tasks = write_tasks(tmp_path / "tasks.jsonl", 1500)
    pubsub.fail = lambda index, _: grpc.StatusCode.UNAVAILABLE if index < 2 else None
    publisher = submit.publisher_client()
    sent: list[int] = []
    # WHEN every body is published
    try:
        result = submit.publish_all(
            publisher,
            TOPIC,
            message_bodies(str(tmp_path / "tasks.jsonl")),
            retry=no_client_retry(),
            on_sent=sent.append,
            pause=0,
        )
    finally:
        publisher.stop()
    # THEN the failed ones were published again, and each task was accepted exactly once
    first_failed = [body for _, bodies, status in pubsub.requests[:2] for body in bodies]
    assert len(first_failed) > 0
    assert sorted(pubsub.accepted()) == sorted(tasks)
    assert result.rounds == 2
    assert (result.summary.sent, result.summary.failed) == (1500, 0)
    assert sum(sent) == 1500


def test_publishing_gives_up_after_the_bounded_number_of_rounds(
    pubsub: PublishServer, tmp_path: Path
) -> None:
    # GIVEN a Publish service that is always unavailable, and no client retry
    write_tasks(tmp_path / "tasks.jsonl", 30)
    pubsub.fail = lambda index, _: grpc.StatusCode.UNAVAILABLE
    publisher = submit.publisher_client()
    # WHEN 30 tasks are published with 3 rounds
    try:
        result = submit.publish_all(
            publisher,
            TOPIC,
            message_bodies(str(tmp_path / "tasks.jsonl")),
            attempts=3,
            retry=no_client_retry(),
            pause=0,
        )
    finally:
        publisher.stop()
    # THEN each was tried exactly 3 times, none counted as sent, the reason is kept
    tried = [body for _, bodies, _ in pubsub.requests for body in bodies]
    assert len(tried) == 90 and len(set(tried)) == 30
    assert (result.summary.sent, result.summary.failed, result.rounds) == (0, 30, 3)
    assert result.summary.exit_code == 1
    [(reason, count)] = result.errors.items()
    assert count == 30 and reason.startswith("ServiceUnavailable")


def test_permanent_errors_are_not_republished_and_exit_1(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a topic the caller may not publish to
    write_tasks(tmp_path / "tasks.jsonl", 10)
    pubsub.fail = lambda index, _: grpc.StatusCode.PERMISSION_DENIED
    # WHEN the tasks are submitted
    code = main(["submit", "gcp", "--topic", TOPIC, str(tmp_path / "tasks.jsonl")])
    # THEN nothing is retried, the failure is explained and the exit code is 1
    out, err = capsys.readouterr()
    assert code == 1
    assert sum(len(bodies) for _, bodies, _ in pubsub.requests) == 10
    assert "sent 0 messages" in out and "10 could not be sent" in out
    assert "error: 10 message(s) not sent: PermissionDenied" in err


def test_bad_topic_is_a_usage_error_before_anything_is_sent(
    pubsub: PublishServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tasks(tmp_path / "tasks.jsonl", 1)
    code = main(["submit", "gcp", "--topic", "adder-tasks", str(tmp_path / "tasks.jsonl")])
    assert code == 2
    assert "projects/PROJECT/topics/TOPIC" in capsys.readouterr().err
    assert pubsub.requests == []
