"""``adder work`` on AWS: SQS -> the worker -> S3, on a real moto server.

- a queue of 20,000 tasks (``$ADDER_WORKER_MESSAGES``) drained by ``adder work --config``
  (a subprocess): 0 lost, 0 wrong, checked against S3;
- S3 refusing some results (botocore's ``before-send`` seam, tools/aws_faults.py): those
  messages are released, delivered again and end in the dead-letter queue after
  maxReceiveCount; everything else is written;
- ``kill -9`` of a worker subprocess mid-run: a second worker finishes after the visibility
  timeout; nothing lost;
- an IMDSv2 Spot notice served mid-run by a loopback metadata server: no receive after it,
  the tasks in hand finish, the worker returns; a second worker finishes the rest;
- an Auto Scaling termination notice: ``adder work`` drains, then completes the group's
  lifecycle action once, as its last call (moto has no CompleteLifecycleAction: a fault proxy
  in front of moto answers it with the documented XML and forwards everything else).

The project's moto server deletes messages in place (``moto_server.patch_deletes``):
moto's own delete rebuilds the queue's list and loses deletes that run at the same time,
which real SQS never does (the message would come back as a duplicate).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from aws_lambda.sandbox import moto_server
from aws_lambda.sqs_receiver import open_worker
from core.cli import main as adder
from core.worker.command import load_worker_config
from core.worker.logs import JsonLines
from core.worker.loop import StopReason, Worker, WorkerOptions
from core.worker.notices import Ec2NoticePoller
from tests.conftest import REPO_ROOT
from tests.integration.aws.conftest import REGION, Queues, read_object
from tests.support.metadata_server import MetadataServer
from tests.support.worker import HeldStore, Task, assert_fetched_exactly, run_to_notice, workload
from tools.aws_faults import S3PutFaults, canned_response
from tools.fault_proxy import FaultProxy, FaultRule
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence, Set
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


pytestmark = pytest.mark.integration

MESSAGES_ENV = "ADDER_WORKER_MESSAGES"
DEFAULT_MESSAGES = 20_000
WAIT = 120.0
"""The longest an event wait may take before the test fails (never reached when it works)."""
PREFIX = "out"


def worker_messages() -> int:
    """How many messages the drain test pushes through (``$ADDER_WORKER_MESSAGES``)."""
    value = os.environ.get(MESSAGES_ENV, "")
    return int(value) if value.strip().isdigit() else DEFAULT_MESSAGES


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own moto server, deleting in place (overrides the session's)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto-worker") / "moto.log"
    with running_server(moto_server.command(port), f"{url}/moto-api/", log=log, cwd=REPO_ROOT):
        yield url


def send(sqs: SQSClient, url: str, tasks: Sequence[Task]) -> None:
    """Every task on the queue, 10 a batch, from 8 threads."""

    def batch(start: int) -> None:
        entries: Any = [
            {"Id": str(n), "MessageBody": task.body.decode()}
            for n, task in enumerate(tasks[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(batch, range(0, len(tasks), 10)))


def listing(s3: S3Client, bucket: str) -> dict[str, str]:
    """Every record name under the prefix, with its ETag (the MD5 of its bytes)."""
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"):
        for item in page.get("Contents", []):
            found[item["Key"][len(PREFIX) + 1 :]] = item["ETag"].strip('"')
    return found


def ledger(
    s3: S3Client, bucket: str, tasks: Sequence[Task], dead: Set[str] = frozenset()
) -> dict[str, int]:
    """Where each task ended: lost (no record, not dead-lettered), wrong (a result whose MD5
    is not that of the exact sum, an error record without ``invalid_json``, a record for a
    dead letter, or a record nobody asked for)."""
    objects = listing(s3, bucket)
    counts = {"results": 0, "error_records": 0, "dead_lettered": 0, "lost": 0, "wrong": 0}
    for task in tasks:
        etag = objects.get(task.record)
        if task.task_id in dead:
            counts["dead_lettered"] += 1
            counts["wrong"] += etag is not None
        elif etag is None:
            counts["lost"] += 1
        elif task.expected is not None:
            counts["results"] += 1
            counts["wrong"] += etag != hashlib.md5(task.expected.encode()).hexdigest()
        else:
            counts["error_records"] += 1
            record = read_object(s3, bucket, f"{PREFIX}/{task.record}") or b"{}"
            counts["wrong"] += json.loads(record).get("error") != "invalid_json"
    counts["wrong"] += len(set(objects) - {task.record for task in tasks})
    return counts


def queue_counts(sqs: SQSClient, url: str) -> tuple[int, int]:
    """(visible, in flight), after moto's count cache has expired."""
    time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def dead_letter_ids(sqs: SQSClient, dlq_url: str) -> list[str]:
    ids: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        if not got.get("Messages"):
            return ids
        ids += [json.loads(m["Body"])["id"] for m in got["Messages"]]


def write_config(
    tmp_path: Path, queue_url: str, bucket: str, endpoint: str, **settings: str
) -> Path:
    path = tmp_path / "cloud-config.json"
    document = {
        "provider": "aws",
        "job_id": "worker-test",
        "queue_name": queue_url.rsplit("/", 1)[1],
        "result_bucket": bucket,
        "result_prefix": PREFIX,
        "config": {"region": REGION, "endpoint_url": endpoint, **settings},
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def adder_work(config: Path, *extra: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    """``adder work --config`` as its own process (``python -m core``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "core", "work", "--config", str(config), "--no-notices", *extra],
        cwd=REPO_ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def task_lines(output: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in map(json.loads, output.splitlines())
        if entry.get("outcome") in {"succeeded", "rejected", "retry"}
    ]


@pytest.mark.timeout(900 + worker_messages() // 20)
def test_adder_work_drains_a_queue_losing_nothing_and_getting_nothing_wrong(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    # GIVEN 20,000 tasks (1% bad) on a queue
    tasks = workload(worker_messages(), "w")
    queues = Queues(sqs, visibility_timeout=30, max_receive_count=5)
    send(sqs, queues.url, tasks)
    config = write_config(tmp_path, queues.url, bucket, aws_env)
    # WHEN `adder work --config` runs until the queue stays empty
    started = time.monotonic()
    worker = adder_work(config, "--idle-exit", "3", "--wait-seconds", "1")
    out, err = worker.communicate(timeout=900 + len(tasks) // 20)
    seconds = time.monotonic() - started
    # THEN it exits 0, every task has its exact record, nothing is left or dead-lettered
    assert worker.returncode == 0, err
    counts = ledger(s3, bucket, tasks)
    bad = sum(task.expected is None for task in tasks)
    assert counts == {
        "results": len(tasks) - bad,
        "error_records": bad,
        "dead_lettered": 0,
        "lost": 0,
        "wrong": 0,
    }
    assert queue_counts(sqs, queues.url) == (0, 0)
    assert dead_letter_ids(sqs, queues.dlq_url) == []
    lines = task_lines(out)
    assert {line["task_id"] for line in lines if line["outcome"] == "succeeded"} >= {
        task.task_id for task in tasks if task.expected is not None
    }
    assert all(line["job_id"] == "worker-test" for line in lines)
    print(f"\nadder work: {len(tasks):,} tasks in {seconds:.1f}s = {len(tasks) / seconds:,.0f}/s")


def test_adder_work_packed_writes_packs_that_fetch_turns_into_the_per_task_files(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    # GIVEN 1,000 tasks (1% bad) and a cloud config naming the stack's packed layout
    tasks = workload(1000, "p")
    queues = Queues(sqs, visibility_timeout=30, max_receive_count=5)
    send(sqs, queues.url, tasks)
    config = write_config(tmp_path, queues.url, bucket, aws_env, results_layout="packed")
    # WHEN `adder work --config` drains the queue
    worker = adder_work(config, "--idle-exit", "3", "--wait-seconds", "1")
    _, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err
    # THEN only packs were written, one per receive call (at most 10 tasks each), and the
    # queue is empty
    objects = listing(s3, bucket)
    assert objects
    assert all(name.startswith("packed/") and name.endswith(".jsonl") for name in objects)
    assert len(tasks) // 10 <= len(objects) <= len(tasks) // 5
    assert queue_counts(sqs, queues.url) == (0, 0)
    # AND `adder fetch aws` gives every task its exact record, as the default layout would
    into = tmp_path / "results"
    where = ["--bucket", bucket, "--prefix", PREFIX, "--into", str(into), "--no-progress"]
    assert adder(["fetch", "aws", *where]) == 0
    assert_fetched_exactly(into, tasks)


def test_store_faults_are_retried_and_end_in_the_dead_letter_queue(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    # GIVEN 300 tasks; S3 answers 500 to every write of 5 of them (botocore retries each
    # call, then the delivery fails), 403 to the first write of 20 others (not retried by
    # botocore: that delivery fails), and 500 to the first attempt of 20 more
    tasks = workload(300, "f")
    good = [task for task in tasks if task.expected is not None]
    doomed, flaky, blips = good[:5], good[5:25], good[25:45]
    always = {f"{PREFIX}/{t.record}" for t in doomed}
    once = {f"{PREFIX}/{t.record}" for t in blips}
    queues = Queues(sqs, visibility_timeout=2, max_receive_count=3)
    send(sqs, queues.url, tasks)
    config = load_worker_config(write_config(tmp_path, queues.url, bucket, aws_env))
    receiver, store = open_worker(config, 16)
    faults = S3PutFaults(
        store.client, lambda key, attempt: key in always or (key in once and attempt == 1)
    )
    refuse_once = RefuseOnce(store.client, {f"{PREFIX}/{t.record}" for t in flaky})
    out = io.StringIO()
    # WHEN the worker runs (a failed task comes back at once) until the queue stays empty
    options = WorkerOptions(
        concurrency=16, pollers=1, wait_seconds=1, idle_exit_seconds=4, retry_delay_seconds=0
    )
    summary = Worker(receiver, store, JsonLines("faults", out), options=options).run()
    # THEN the doomed ones were delivered maxReceiveCount (3) times and dead-lettered; every
    # other task has its exact record, the refused ones from their second delivery
    dead = set(dead_letter_ids(sqs, queues.dlq_url))
    assert dead == {task.task_id for task in doomed}
    counts = ledger(s3, bucket, tasks, dead)
    assert (counts["lost"], counts["wrong"], counts["dead_lettered"]) == (0, 0, 5)
    assert queue_counts(sqs, queues.url) == (0, 0)
    retries = [e for e in task_lines(out.getvalue()) if e["outcome"] == "retry"]

    def attempts(group: Sequence[Task]) -> set[int]:
        ids = {task.task_id for task in group}
        return {e["delivery_attempt"] for e in retries if e["task_id"] in ids}

    assert attempts(doomed) == {1, 2, 3}
    assert attempts(flaky) == {1}
    assert attempts(blips) <= {1}  # absorbed by botocore's retry, unless its quota ran out
    assert {e["task_id"] for e in retries} >= {t.task_id for t in [*doomed, *flaky]}
    assert summary.retried == len(retries)
    assert refuse_once.refused == len(flaky)
    assert faults.injected >= 5 * 3 + len(blips)


class RefuseOnce:
    """Answers S3's 403 AccessDenied to the first PutObject of each of ``keys`` (botocore
    does not retry a 403: the write fails at once)."""

    def __init__(self, client: Any, keys: set[str]) -> None:
        self.keys = set(keys)
        self.refused = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.PutObject", self._before_send)

    def _before_send(self, request: Any, **_: Any) -> Any:
        key = urllib.parse.unquote(urllib.parse.urlsplit(request.url).path.lstrip("/"))
        key = key.partition("/")[2]
        with self._lock:
            if key not in self.keys:
                return None
            self.keys.discard(key)
            self.refused += 1
        body = b"<Error><Code>AccessDenied</Code><Message>injected</Message></Error>"
        return canned_response(request, 403, body, "application/xml")


def test_kill_9_mid_run_loses_nothing_a_second_worker_finishes(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    # GIVEN 2,000 tasks and a 3 s visibility timeout
    tasks = workload(2000, "k")
    queues = Queues(sqs, visibility_timeout=3, max_receive_count=5)
    send(sqs, queues.url, tasks)
    config = write_config(tmp_path, queues.url, bucket, aws_env)
    # WHEN a worker is killed with SIGKILL after it has done 300 tasks
    first = adder_work(config)
    assert first.stdout is not None
    done = 0
    for line in first.stdout:
        done += '"outcome": "succeeded"' in line
        if done >= 300:
            break
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    # AND a second worker runs until the queue stays empty (longer than the visibility
    # timeout, so what the first one held comes back to it)
    second = adder_work(config, "--idle-exit", "8", "--wait-seconds", "1")
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    # THEN every task has its exact record and the queue is empty
    bad = sum(task.expected is None for task in tasks)
    counts = ledger(s3, bucket, tasks)
    assert (counts["lost"], counts["wrong"], counts["error_records"]) == (0, 0, bad)
    assert queue_counts(sqs, queues.url) == (0, 0)
    # AND the second worker got back messages the first had received and not acknowledged
    assert any(line["delivery_attempt"] >= 2 for line in task_lines(out))


@pytest.mark.parametrize(
    ("queue_name", "bucket_name", "says"),
    [
        ("no-such-queue", None, "SQS queue no-such-queue in region us-east-1 at "),
        (None, "no-such-bucket-7", "S3 bucket no-such-bucket-7 does not exist"),
    ],
)
def test_a_missing_queue_or_bucket_is_one_line_and_exit_2(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    bucket: str,
    queue_name: str | None,
    bucket_name: str | None,
    says: str,
) -> None:
    queues = Queues(sqs, visibility_timeout=30, max_receive_count=5)
    url = queues.url.rsplit("/", 1)[0] + f"/{queue_name}" if queue_name else queues.url
    config = write_config(tmp_path, url, bucket_name or bucket, aws_env)
    worker = adder_work(config)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1


def test_a_spot_notice_mid_run_drains_cleanly(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    # GIVEN 500 tasks and a worker (32 threads) whose writes are held after the 100th: 32
    # writing, up to one more batch waiting, and no room to receive another
    tasks = workload(500, "n")
    queues = Queues(sqs, visibility_timeout=30, max_receive_count=5)
    send(sqs, queues.url, tasks)
    config = load_worker_config(write_config(tmp_path, queues.url, bucket, aws_env))
    receiver, s3_store = open_worker(config, 32)
    store = HeldStore(s3_store, hold_from=101, hold_count=32)
    receives_after_notice = 0
    notice_out = threading.Event()

    def count_receives(**_: Any) -> None:
        nonlocal receives_after_notice
        receives_after_notice += notice_out.is_set()

    receiver.sqs.meta.events.register("before-send.sqs.ReceiveMessage", count_receives)
    with MetadataServer(spot_time=_utc_in(120)) as metadata:
        out = io.StringIO()
        worker = Worker(
            receiver,
            store,
            JsonLines("spot", out),
            options=WorkerOptions(concurrency=32, pollers=1, wait_seconds=1),
            notice_pollers=[Ec2NoticePoller(metadata.url, interval_seconds=0.05)],
        )
        # WHEN IMDSv2 serves a Spot interruption notice
        summary, in_hand = run_to_notice(worker, store, notice_out, lambda: metadata.notice("spot"))
    # THEN the worker stopped on it in time: no receive after it, the ones in hand written
    # and acknowledged, nothing released
    assert summary.reason is StopReason.NOTICE
    assert summary.notice is not None
    assert summary.notice.source == "aws-spot"
    assert receives_after_notice == 0
    assert summary.drained_in_time
    assert 32 < in_hand <= 42
    assert (summary.received, summary.acknowledged, summary.released) == (
        100 + in_hand,
        100 + in_hand,
        0,
    )
    assert queue_counts(sqs, queues.url) == (500 - 100 - in_hand, 0)
    # AND a second worker finishes the rest: every task written once, exactly
    second = adder_work(
        write_config(tmp_path, queues.url, bucket, aws_env),
        "--idle-exit",
        "2",
        "--wait-seconds",
        "1",
    )
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    counts = ledger(s3, bucket, tasks)
    assert (counts["lost"], counts["wrong"]) == (0, 0)
    assert queue_counts(sqs, queues.url) == (0, 0)


AUTOSCALING_NAMESPACE = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
LIFECYCLE_ACTION_COMPLETED = (
    f'<CompleteLifecycleActionResponse xmlns="{AUTOSCALING_NAMESPACE}">'
    "<CompleteLifecycleActionResult/><ResponseMetadata><RequestId>r-1</RequestId>"
    "</ResponseMetadata></CompleteLifecycleActionResponse>"
).encode()


def test_an_autoscaling_notice_drains_then_completes_the_lifecycle_action_once(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    # GIVEN 300 tasks, and `adder work` (a process) reaching SQS and S3 through a proxy that
    # answers Auto Scaling's CompleteLifecycleAction itself (its form is the rule's key)
    tasks = workload(300, "l")
    queues = Queues(sqs, visibility_timeout=30, max_receive_count=5)
    send(sqs, queues.url, tasks)
    completes = FaultRule(
        method="POST",
        body_regex=rb"(.*Action=CompleteLifecycleAction.*)",
        status=200,
        body=LIFECYCLE_ACTION_COMPLETED,
        headers=(("Content-Type", "text/xml"),),
        name="autoscaling",
    )
    with FaultProxy(aws_env, [completes]) as proxy, MetadataServer() as metadata:
        config = write_config(
            tmp_path,
            queues.url,
            bucket,
            proxy.url,
            lifecycle_hook="adder-drain",
            autoscaling_group="adder-workers",
        )
        worker = subprocess.Popen(
            [
                *(sys.executable, "-m", "core", "work", "--config", str(config)),
                *("--metadata-url", metadata.url, "--wait-seconds", "1"),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        # WHEN, once it has written 50 results, IMDS says the group is terminating it
        done = 0
        for line in worker.stdout:
            done += '"outcome": "succeeded"' in line
            if done >= 50:
                break
        metadata.notice("autoscaling")
        rest, err = worker.communicate(timeout=300)
    # THEN it drained and exited 0: nothing left in flight, every record written is right
    assert worker.returncode == 0, err
    visible, in_flight = queue_counts(sqs, queues.url)
    assert in_flight == 0
    counts = ledger(s3, bucket, tasks)
    assert counts["wrong"] == 0
    assert counts["results"] + counts["error_records"] + visible == len(tasks)
    # AND its last call completed the lifecycle action, once, for this instance
    [form] = [urllib.parse.parse_qs(key) for key in completes.attempts]
    assert {name: values[0] for name, values in form.items()} == {
        "Action": "CompleteLifecycleAction",
        "Version": "2011-01-01",
        "LifecycleHookName": "adder-drain",
        "AutoScalingGroupName": "adder-workers",
        "LifecycleActionResult": "CONTINUE",
        "InstanceId": metadata.instance_id,
    }
    assert completes.matched == 1
    assert proxy.requests[-1].rule == "autoscaling"
    assert "approved aws-autoscaling" in rest


def _utc_in(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
