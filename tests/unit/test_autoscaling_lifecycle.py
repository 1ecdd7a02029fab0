"""The AWS worker completes the Auto Scaling termination lifecycle action once drained
(aws_lambda/autoscaling_lifecycle.py, wired by ``adder work`` through the binding's
``prepare_notice_poller``).

moto has no CompleteLifecycleAction, so a real boto3 ``autoscaling`` client talks to
:class:`AutoScalingEndpoint`, a loopback server answering the Auto Scaling Query API action
with the documented XML and recording the form fields it was sent; IMDSv2 (notice,
``instance-id``, instance tags) is the shared loopback
:class:`~tests.support.metadata_server.MetadataServer`. Every wait is on an event, bounded
only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import collections
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import aws_lambda.sqs_receiver
from aws_lambda.autoscaling_lifecycle import GROUP_TAG
from aws_lambda.sqs_receiver import prepare_notice_poller
from core.cli import main as adder
from core.worker.command import WorkerConfig
from core.worker.logs import JsonLines
from core.worker.loop import StopReason, Worker, WorkerOptions
from core.worker.notices import Ec2NoticePoller
from core.worker.port import ReceivedMessage, Receiver
from tests.support.metadata_server import MetadataServer
from tests.support.worker import HeldStore, run_to_notice
from tests.unit.fakes import InMemoryResultStore
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

NAMESPACE = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
COMPLETED = (
    f'<CompleteLifecycleActionResponse xmlns="{NAMESPACE}">'
    "<CompleteLifecycleActionResult/>"
    "<ResponseMetadata><RequestId>7c6e177f-f082-11e1-ac58-3714bEXAMPLE</RequestId>"
    "</ResponseMetadata></CompleteLifecycleActionResponse>"
)
HOOK = "adder-drain"
GROUP = "adder-workers"
INSTANCE = "i-0123456789abcdef0"
COMPLETE = "CompleteLifecycleAction"


class AutoScalingEndpoint:
    """A loopback Auto Scaling Query API that knows one action, CompleteLifecycleAction.

    ``calls`` holds the form fields of every request; ``events`` (shared with the test's
    queue) gets ``CompleteLifecycleAction`` when one comes; ``refuse`` = (status, code,
    message) answers every call with that error instead.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.calls: list[dict[str, str]] = []
        self.refuse: tuple[int, str, str] | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> AutoScalingEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                fields = {name: values[0] for name, values in form.items()}
                endpoint.calls.append(fields)
                status, body = 200, COMPLETED
                if fields.get("Action") != COMPLETE:
                    status, body = 400, error_document("InvalidAction", "not served here")
                elif endpoint.refuse is not None:
                    status, code, message = endpoint.refuse
                    body = error_document(code, message)
                else:
                    endpoint.events.append(COMPLETE)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def error_document(code: str, message: str) -> str:
    """The Query API's error answer."""
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    )


class RecordingQueue(Receiver):
    """An in-memory queue that notes every acknowledgement in ``events``."""

    describe = "recording queue"

    def __init__(self, count: int, events: list[str]) -> None:
        self.available = collections.deque(
            json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 1}}).encode()
            for i in range(count)
        )
        self.events = events
        self.released: list[str] = []
        self._lock = threading.Lock()
        self._received = 0

    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        with self._lock:
            taken: list[ReceivedMessage] = []
            while self.available and len(taken) < max_messages:
                self._received += 1
                message_id = f"m{self._received}"
                taken.append(ReceivedMessage(self.available.popleft(), message_id, 1, message_id))
        if not taken:
            threading.Event().wait(min(wait_seconds, 0.05))
        return taken

    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        pass

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        with self._lock:
            self.events += [f"ack {m.message_id}" for m in messages]
        return []

    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        with self._lock:
            self.released += [str(m.message_id) for m in messages]


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def autoscaling(
    events: list[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[AutoScalingEndpoint]:
    """The loopback Auto Scaling endpoint, and credentials for boto3 that go nowhere else."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_AUTO_SCALING"):
        monkeypatch.delenv(name, raising=False)
    with AutoScalingEndpoint(events) as endpoint:
        yield endpoint


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    with MetadataServer() as server:
        yield server


def settings(endpoint: AutoScalingEndpoint, **more: str | None) -> dict[str, str]:
    """A config's ``config`` object: the endpoint, the hook and the group, less what is None."""
    values = {
        "region": "us-east-1",
        "endpoint_url": endpoint.url,
        "lifecycle_hook": HOOK,
        "autoscaling_group": GROUP,
        **more,
    }
    return {name: value for name, value in values.items() if value is not None}


def completed(group: str = GROUP) -> dict[str, str]:
    """The form of the one call expected."""
    return {
        "Action": COMPLETE,
        "Version": "2011-01-01",
        "LifecycleHookName": HOOK,
        "AutoScalingGroupName": group,
        "LifecycleActionResult": "CONTINUE",
        "InstanceId": INSTANCE,
    }


def test_after_an_autoscaling_notice_and_the_drain_the_lifecycle_action_is_completed_once(
    autoscaling: AutoScalingEndpoint, metadata: MetadataServer, events: list[str]
) -> None:
    # GIVEN a worker (2 threads) whose writes are held from the first: 10 tasks in hand
    queue = RecordingQueue(30, events)
    store = HeldStore(InMemoryResultStore(), hold_from=1, hold_count=2)
    poller = Ec2NoticePoller(metadata.url, interval_seconds=0.01)
    config = WorkerConfig(
        Path("cloud-config.json"), "aws", "j", "q", "b", settings=settings(autoscaling)
    )
    prepare_notice_poller(config, poller)
    out = io.StringIO()
    worker = Worker(
        queue,
        store,
        JsonLines("j", out),
        options=WorkerOptions(concurrency=2, pollers=1, wait_seconds=0.05),
        notice_pollers=[poller],
    )
    # WHEN IMDS says the Auto Scaling group is terminating the instance
    notice_out = threading.Event()
    summary, in_hand = run_to_notice(
        worker, store, notice_out, lambda: metadata.notice("autoscaling")
    )
    # THEN the worker drained: the tasks in hand written and acknowledged, nothing released
    assert summary.reason is StopReason.NOTICE
    assert summary.notice is not None
    assert summary.notice.source == "aws-autoscaling"
    assert (summary.acknowledged, summary.released, in_hand) == (10, 0, 10)
    # AND exactly one CompleteLifecycleAction went out, with the four fields, after the last
    # acknowledgement
    assert autoscaling.calls == [completed()]
    assert events[-1] == COMPLETE
    assert events.count(COMPLETE) == 1
    assert len(events) == 1 + summary.acknowledged
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(line["message"].startswith("approved aws-autoscaling") for line in lines)


def run_adder_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    metadata: MetadataServer,
    queue: RecordingQueue,
    config: dict[str, str],
) -> int:
    """``adder work`` on provider aws, its real binding module with only the queue and store
    replaced (no SQS here); the notice is out before it starts."""
    store = InMemoryResultStore()
    monkeypatch.setattr(
        aws_lambda.sqs_receiver, "open_worker", lambda config, concurrency: (queue, store)
    )
    path = tmp_path / "cloud-config.json"
    document = {
        "provider": "aws",
        "job_id": "lifecycle",
        "queue_name": "q",
        "result_bucket": "b",
        "config": config,
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return adder(
        ["work", "--config", str(path), "--concurrency", "2", "--metadata-url", metadata.url]
    )


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_adder_work_completes_it_for_the_group_named_by_the_instance_tag(
    autoscaling: AutoScalingEndpoint,
    metadata: MetadataServer,
    events: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a config naming the hook but not the group, which IMDS shows as the instance's
    # aws:autoscaling:groupName tag, and an Auto Scaling termination notice already out
    metadata.instance_tags = {GROUP_TAG: "asg-from-tag"}
    metadata.notice("autoscaling")
    # WHEN `adder work` runs
    code = run_adder_work(
        tmp_path,
        monkeypatch,
        metadata,
        RecordingQueue(5, events),
        settings(autoscaling, autoscaling_group=None),
    )
    # THEN it drains, completes the lifecycle action for that group once, and exits 0
    assert code == 0
    assert autoscaling.calls == [completed("asg-from-tag")]
    assert events[-1] == COMPLETE
    lines = log_lines(capsys)
    assert [line["reason"] for line in lines if line["message"].startswith("stopped")] == ["notice"]


def test_a_spot_notice_completes_no_lifecycle_action(
    autoscaling: AutoScalingEndpoint,
    metadata: MetadataServer,
    events: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a Spot interruption notice (hook and group configured all the same)
    metadata.notice("spot")
    # WHEN `adder work` runs
    code = run_adder_work(
        tmp_path, monkeypatch, metadata, RecordingQueue(5, events), settings(autoscaling)
    )
    # THEN it drains and exits 0 without calling Auto Scaling or asking IMDS for its id
    assert code == 0
    assert autoscaling.calls == []
    assert not [path for _, path, _ in metadata.requests if path.endswith("/instance-id")]
    lines = log_lines(capsys)
    assert [line["notice_source"] for line in lines if line["message"].startswith("draining")] == [
        "aws-spot"
    ]


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ({"lifecycle_hook": None}, "no config.lifecycle_hook in"),
        ({"autoscaling_group": None}, "no config.autoscaling_group in"),
        (
            {"lifecycle_hook": None, "autoscaling_group": None},
            "no config.lifecycle_hook and no config.autoscaling_group in",
        ),
    ],
)
def test_without_a_hook_or_group_no_call_is_made_and_one_line_says_how_to_configure_it(
    autoscaling: AutoScalingEndpoint,
    metadata: MetadataServer,
    events: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    missing: dict[str, str | None],
    says: str,
) -> None:
    # GIVEN a config without the hook or the group (and no instance tags in IMDS), and an
    # Auto Scaling termination notice
    metadata.notice("autoscaling")
    # WHEN `adder work` runs
    code = run_adder_work(
        tmp_path, monkeypatch, metadata, RecordingQueue(5, events), settings(autoscaling, **missing)
    )
    # THEN it drains and exits 0, calls nothing, and one warning says the instance waits for
    # the hook's timeout and which settings to add
    assert code == 0
    assert autoscaling.calls == []
    lines = log_lines(capsys)
    [line] = [line for line in lines if "lifecycle" in line["message"]]
    assert line["level"] == "WARNING"
    assert says in line["message"]
    assert "until the hook's heartbeat timeout" in line["message"]
    assert "; set config." in line["message"]
    assert [entry["reason"] for entry in lines if entry["message"].startswith("stopped")] == [
        "notice"
    ]


@pytest.mark.parametrize(
    ("status", "code", "message", "says"),
    [
        (
            403,
            "AccessDenied",
            "User is not authorized to perform: autoscaling:CompleteLifecycleAction",
            "access denied to Auto Scaling lifecycle hook adder-drain of group adder-workers",
        ),
        (
            400,
            "ValidationError",
            "No active Lifecycle Action found with instance ID i-0123456789abcdef0",
            "No active Lifecycle Action found",
        ),
    ],
)
def test_a_failing_call_is_one_line_and_exit_0(
    autoscaling: AutoScalingEndpoint,
    metadata: MetadataServer,
    events: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: int,
    code: str,
    message: str,
    says: str,
) -> None:
    # GIVEN Auto Scaling refusing the call, and a termination notice
    autoscaling.refuse = (status, code, message)
    metadata.notice("autoscaling")
    # WHEN `adder work` runs
    exit_code = run_adder_work(
        tmp_path, monkeypatch, metadata, RecordingQueue(5, events), settings(autoscaling)
    )
    # THEN the call was made once (not retried: the answer is final), the worker exits 0, and
    # one warning line says what failed and that the hook's timeout releases the instance
    assert exit_code == 0
    assert autoscaling.calls == [completed()]
    lines = log_lines(capsys)
    [line] = [line for line in lines if "lifecycle" in line["message"]]
    assert line["level"] == "WARNING"
    assert says in line["message"]
    assert "until the hook's heartbeat timeout" in line["message"]
