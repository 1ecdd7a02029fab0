"""Submit with the CLI, deliver like the event source mapping, watch and fetch: every task
accounted for."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.s3_store import S3ResultStore
from aws_lambda.sandbox import moto_server
from aws_lambda.sandbox.esm import EventSourceMapping
from core.cli import main as adder
from core.ops.manifest import Manifest
from core.ops.submit import submit
from tests.integration.aws.conftest import Queues, all_keys, read_object
from tools.aws_faults import S3PutFaults, SqsBatchSendFaults

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration


def settle_counts() -> None:
    """SQS message counts are approximate; the test server caches them for a moment."""
    time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)


def dlq_bodies(sqs: SQSClient, dlq_url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        if not got.get("Messages"):
            return bodies
        bodies += [m["Body"] for m in got["Messages"]]


def test_every_submitted_task_ends_as_result_error_record_or_dead_letter(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    s3: S3Client,
    bucket: str,
    queues: Queues,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN 200 good tasks, 5 bad ones, and one whose result S3 always refuses
    good = [{"id": f"t{i}", "data": {"num1": i, "num2": 0.5}} for i in range(200)]
    bad = ['{"id": "b1"}', "nope", '{"id": "b2", "data": {"num1": true, "num2": 1}}', "[]", '""']
    doomed = {"id": "doomed", "data": {"num1": 1, "num2": 1}}
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join([*map(json.dumps, good), *bad, json.dumps(doomed)]) + "\n")

    jobs = tmp_path / "jobs"
    job = ["--job", "tasks", "--jobs-dir", str(jobs), "--no-progress"]

    # WHEN they are submitted with the CLI
    code = adder(["submit", "aws", "--queue-url", queues.url, *job, str(tasks)])
    assert code == 0
    assert f"sent 206 tasks to SQS queue {queues.url}" in capsys.readouterr().out

    # AND delivered to the handler the way the event source mapping does, by 2 pollers
    faults = S3PutFaults(s3, lambda key, attempt: key == "out/doomed.out")
    store = S3ResultStore(bucket, "out", client=s3)
    mapping = EventSourceMapping(
        sqs, queues.url, lambda event, ctx: lambda_module.handle_event(event, ctx, store=store)
    )
    stats = mapping.drain(pollers=2, timeout=120)

    # THEN every good task has its exact result, every bad one an error record,
    # and the doomed one is in the DLQ after maxReceiveCount deliveries
    keys = set(all_keys(s3, bucket))
    for task in good:
        expected = f"{task['data']['num1']}.5"  # type: ignore[index]
        assert read_object(s3, bucket, f"out/{task['id']}.out") == expected.encode()
    errors = {k for k in keys if k.endswith(".err")}
    assert len(errors) == len(bad)
    assert {"out/b1.err", "out/b2.err"} <= errors
    assert dlq_bodies(sqs, queues.dlq_url) == [json.dumps(doomed)]
    assert faults.attempts["out/doomed.out"] == 3 * queues.max_receive_count
    # AND the ledger balances: results + error records + dead letters = submitted
    results = {k for k in keys if k.endswith(".out")}
    assert len(results) + len(errors) + 1 == 206
    assert stats.retried == queues.max_receive_count
    assert mapping.queue_is_empty()

    # WHEN the job is watched (its manifest says what "every task" is)
    where = ["--bucket", bucket, "--prefix", "out"]
    code = adder(["watch", "aws", *job, *where, "--interval", "0.2", "--timeout", "30"])
    # THEN it is finished with failures: the rejected and the dead-lettered ones
    out = capsys.readouterr().out
    assert code == 1
    assert "job tasks finished with failures: 200 succeeded, 5 rejected, 1 dead-lettered" in out
    # WHEN it is fetched / THEN the directory holds every record, byte for byte
    into = tmp_path / "results"
    code = adder(["fetch", "aws", *job, *where, "--into", str(into)])
    assert code == 0
    assert "fetched 200 .out and 5 .err" in capsys.readouterr().out
    fetched = {path.name: path.read_bytes() for path in into.iterdir()}
    assert set(fetched) == {key.removeprefix("out/") for key in keys}
    for name, data in fetched.items():
        assert read_object(s3, bucket, f"out/{name}") == data


def test_submit_resends_entries_a_batch_response_reports_failed(
    tmp_path: Path, aws_env: str, sqs: SQSClient, s3: S3Client, queues: Queues
) -> None:
    # GIVEN the first 3 SendMessageBatch calls report every entry as failed
    faults = SqsBatchSendFaults(sqs, failing_calls=3)
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(
        "".join(f'{{"id": "t{i}", "data": {{"num1": 1, "num2": 2}}}}\n' for i in range(95))
    )
    # WHEN they are submitted (4 sends per batch at most)
    backend = AwsJobBackend(sqs, s3, queue_url=queues.url)
    manifest = Manifest.create(tmp_path / "jobs", "t", "aws", {}, str(tasks))
    summary = submit(backend, str(tasks), manifest=manifest, concurrency=4, attempts=4, pause=0.01)
    # THEN the failed entries were sent again, and the queue holds each task exactly once
    assert faults.injected_entries >= 3
    assert (summary.sent, summary.failed) == (95, 0)
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        if not got.get("Messages"):
            break
        bodies += [json.loads(m["Body"])["id"] for m in got["Messages"]]
    assert sorted(bodies) == sorted(f"t{i}" for i in range(95))
    assert manifest.sent_names() == {f"t{i}" for i in range(95)}
