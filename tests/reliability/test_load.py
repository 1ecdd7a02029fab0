"""Load: tens of thousands of tasks through SQS, the Lambda handler and S3, none lost or wrong.

``load_messages()`` tasks ($ADDER_LOAD_MESSAGES: 20,000 in an ordinary run and CI, 100,000 for
``python -m tests.reliability.report``), 1% of them bad, go to a moto SQS queue through the
submit command's code path (``core.ops.submit.submit`` over ``aws_lambda.job_backend``) in waves
of 1,000: moto's ReceiveMessage and DeleteMessage cost grows with the queue's length, so the next
wave is sent once no more than 300 messages wait or are in flight. Meanwhile four pollers
deliver them the way the event source mapping does (aws_lambda/sandbox/esm.py) to the real handler,
which writes with the production S3 client while botocore's transport fails a seeded 1% of the
objects: three quarters on their first attempt (botocore retries), a quarter on every attempt
of the first call (the delivery fails and SQS redelivers). Then every object is read back and
compared with the exact expected bytes.

The test runs its own two moto servers (SQS and S3: one Python process each, so each gets a
core), and serializes its queue-changing SQS calls: moto's SQS model loses messages under
concurrent SendMessage and DeleteMessage (see ``SerializedQueueCalls`` in test_faults.py).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.s3_store import S3ResultStore
from aws_lambda.sandbox import moto_server
from aws_lambda.sandbox.esm import EventSourceMapping, MappingStats
from core.ops.manifest import Manifest
from core.ops.submit import submit
from tests.integration.aws.conftest import REGION, Queues, all_keys, read_object
from tests.reliability.ledger import Row, load_messages
from tests.reliability.test_faults import (
    MAX_DELIVERIES,
    drain_queue,
    sdk_attempts_per_call,
    serialized,
    settle,
    workload,
)
from tools.aws_faults import S3PutFaults
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from tests.reliability.test_faults import Message

pytestmark = pytest.mark.integration

WAVE = 1_000
"""Messages sent at a time."""
LOW_WATER = 300
"""The next wave is sent once the queue holds no more than this (waiting or in flight)."""
POLLERS = 4
PREFIX = "load"
VISIBILITY_TIMEOUT = 10
"""Seconds: far above a batch's time, so a message is received again only after a failure."""


def queue_length(sqs: SQSClient, url: str) -> int:
    """Messages in the queue, waiting or in flight (approximate, as SQS reports them)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    waiting = attributes["ApproximateNumberOfMessages"]
    return int(waiting) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def submit_in_waves(
    sqs: SQSClient, url: str, messages: list[Message], directory: Path
) -> tuple[int, int]:
    """Send ``messages`` with the submit code path, a wave whenever the queue is short enough;
    returns (sent, failed)."""
    sent = failed = 0
    for start in range(0, len(messages), WAVE):
        while queue_length(sqs, url) > LOW_WATER:
            time.sleep(0.1)
        wave = directory / f"wave-{start // WAVE:04d}.jsonl"
        wave.write_bytes(b"".join(m.body + b"\n" for m in messages[start : start + WAVE]))
        manifest = Manifest.create(directory / "jobs", wave.stem, "aws", {}, str(wave))
        summary = submit(
            AwsJobBackend(sqs, queue_url=url), str(wave), manifest=manifest, concurrency=4
        )
        sent, failed = sent + summary.sent, failed + summary.failed
    return sent, failed


def poll_until(
    mapping: EventSourceMapping, stop: threading.Event, errors: list[BaseException]
) -> None:
    """One poller of the mapping, until ``stop`` is set."""
    try:
        while not stop.is_set():
            if mapping.poll_once() == 0:
                time.sleep(0.05)
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)


def deliver_in_waves(
    mapping: EventSourceMapping, sqs: SQSClient, url: str, messages: list[Message], directory: Path
) -> MappingStats:
    """Submit ``messages`` in waves while POLLERS threads deliver them through ``mapping``,
    check every one was sent, then drain the queue; the mapping's statistics."""
    stop, errors = threading.Event(), list[BaseException]()
    pollers = [
        threading.Thread(target=poll_until, args=(mapping, stop, errors), name=f"poller-{i}")
        for i in range(POLLERS)
    ]
    for poller in pollers:
        poller.start()
    try:
        sent, failed = submit_in_waves(sqs, url, messages, directory)
    finally:
        stop.set()
        for poller in pollers:
            poller.join()
    assert errors == []
    assert (sent, failed) == (len(messages), 0)
    return mapping.drain(pollers=POLLERS, timeout=300 + len(messages) / 50)


def read_all(s3: S3Client, bucket: str, keys: list[str]) -> dict[str, bytes]:
    """Every object's bytes, by name under the prefix (read with 8 threads)."""
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda key: read_object(s3, bucket, key) or b"", keys))
    return {key.removeprefix(f"{PREFIX}/"): body for key, body in zip(keys, bodies, strict=True)}


@dataclass(frozen=True)
class LoadAws:
    """Clients of this test's own moto servers: one for SQS, one for S3."""

    sqs: SQSClient
    s3: S3Client
    bucket: str


@pytest.fixture
def load_aws(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LoadAws]:
    """Two moto servers of the test's own, stopped (and their memory freed) at its end.

    Two, because a moto server is one Python process: SQS and S3 each keep one core busy
    here. The environment points every client at them, S3 through AWS_ENDPOINT_URL_S3,
    as the handler's own client is built from the environment.
    """
    logs = tmp_path_factory.mktemp("load-moto")
    ports = free_port(), free_port()
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with (
        running_server(moto_server.command(ports[0]), f"{urls[0]}/moto-api/", log=logs / "sqs.log"),
        running_server(moto_server.command(ports[1]), f"{urls[1]}/moto-api/", log=logs / "s3.log"),
    ):
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": urls[0],
            "AWS_ENDPOINT_URL_S3": urls[1],
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        session = boto3.session.Session()
        s3 = session.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="load-results")
        yield LoadAws(session.client("sqs", region_name=REGION), s3, "load-results")


@pytest.mark.slow
@pytest.mark.timeout(600 + load_messages() // 20)
def test_load_through_sqs_handler_and_s3_loses_nothing_and_gets_nothing_wrong(
    tmp_path: Path, load_aws: LoadAws, reliability_row: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    sqs, s3, bucket = load_aws.sqs, load_aws.s3, load_aws.bucket
    # GIVEN load_messages() tasks, 1% bad; 1% of the objects fail their first PutObject
    # attempt, or (a quarter of those) every attempt of the first call
    total = load_messages()
    bad = total // 100
    messages = workload(total - bad, bad, seed=41)
    per_call = sdk_attempts_per_call()
    faulted = random.Random(42).sample(messages, total // 100)
    failing = {f"{PREFIX}/{m.record}": per_call if n % 4 == 0 else 1 for n, m in enumerate(faulted)}
    queues = Queues(sqs, visibility_timeout=VISIBILITY_TIMEOUT, max_receive_count=MAX_DELIVERIES)
    store = S3ResultStore(bucket, PREFIX)
    faults = S3PutFaults(store.client, lambda key, attempt: attempt <= failing.get(key, 0))
    queue_client = serialized(sqs)
    mapping = EventSourceMapping(
        queue_client,
        queues.url,
        lambda event, ctx: lambda_module.handle_event(event, ctx, store=store),
    )

    # WHEN they are submitted in waves while 4 pollers deliver them to the handler, and the
    # pollers then drain the queue
    stats = deliver_in_waves(mapping, queue_client, queues.url, messages, tmp_path)
    processed = time.monotonic() - started

    # THEN nothing is in the DLQ, every planned fault was injected, and the objects that
    # failed a whole call were delivered again
    dead = drain_queue(queue_client, queues.dlq_url)
    assert dead == []
    assert faults.injected == sum(failing.values())
    assert stats.retried >= sum(1 for n in failing.values() if n == per_call)
    assert stats.delivered >= total + stats.retried
    # AND reading every object back: each good task's exact sum, each bad one's error
    # record, nothing else
    keys = all_keys(s3, bucket)
    objects = read_all(s3, bucket, keys)
    ledger = settle(messages, objects, set())
    assert (ledger.lost, ledger.wrong) == (0, 0)
    assert (ledger.results, ledger.error_records) == (total - bad, bad)
    seconds = time.monotonic() - started
    reliability_row(
        Row(
            "load",
            "aws",
            f"{total:,} tasks: moto SQS (submit code path, waves of {WAVE:,}) -> handler via"
            f" the event source mapping ({POLLERS} pollers) -> moto S3; 1% bad tasks, 1% of"
            " objects with injected S3 500s",
            cases=len(failing),
            messages=total,
            faults_injected=faults.injected,
            results=ledger.results,
            error_records=ledger.error_records,
            dead_lettered=len(dead),
            lost=ledger.lost,
            wrong=ledger.wrong,
            duplicates=stats.delivered - total,
            seconds=seconds,
            note=f"{stats.delivered:,} deliveries in {stats.invocations:,} invocations,"
            f" {stats.retried} records redelivered; submit and processing {processed:.0f} s,"
            f" reading back {len(keys):,} objects {seconds - processed:.0f} s",
        )
    )
