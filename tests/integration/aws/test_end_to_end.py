"""Submit with the CLI, deliver like the event source mapping, and account for every task."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.s3_store import S3ResultStore
from aws_lambda.submit import submit
from core.cli import main as adder
from tests.integration.aws.conftest import Queues, all_keys, read_object
from tests.support import moto_server
from tests.support.aws_faults import S3PutFaults, SqsBatchSendFaults
from tests.support.esm import EventSourceMapping

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

    # WHEN they are submitted with the CLI
    code = adder(["submit", "aws", "--queue-url", queues.url, "--no-progress", str(tasks)])
    assert code == 0
    assert f"sent 206 messages to {queues.url}" in capsys.readouterr().out

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


def test_submit_resends_entries_a_batch_response_reports_failed(
    tmp_path: Path, aws_env: str, sqs: SQSClient, queues: Queues
) -> None:
    # GIVEN the first 3 SendMessageBatch calls report every entry as failed
    faults = SqsBatchSendFaults(sqs, failing_calls=3)
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(
        "".join(f'{{"id": "t{i}", "data": {{"num1": 1, "num2": 2}}}}\n' for i in range(95))
    )
    # WHEN they are submitted
    summary = submit(sqs, queues.url, str(tasks), concurrency=4)
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


def test_submit_reports_messages_too_large_for_sqs(
    tmp_path: Path, aws_env: str, sqs: SQSClient, queues: Queues, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"id": "ok", "data": {"num1": 1, "num2": 2}}\n' + '"' + "x" * 300_000 + '"\n')
    code = adder(["submit", "aws", "--queue-url", queues.url, "--no-progress", str(tasks)])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 could not be sent" in captured.out
    assert "over SQS's limit" in captured.err


def test_status_and_redrive(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    s3: S3Client,
    bucket: str,
    queues: Queues,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN two dead letters, one waiting task and one result
    for i in range(2):
        sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=f'{{"id": "d{i}"}}')
    sqs.send_message(QueueUrl=queues.url, MessageBody="{}")
    s3.put_object(Bucket=bucket, Key="p/x.out", Body=b"1")
    settle_counts()
    # WHEN status is asked / THEN it shows the depths and counts
    args = ["--queue-url", queues.url, "--dlq-url", queues.dlq_url]
    assert adder(["status", "aws", *args, "--bucket", bucket, "--prefix", "p"]) == 0
    out = capsys.readouterr().out
    assert "task queue:   1 waiting" in out
    assert "dead letters: 2" in out
    assert "results:      1 .out, 0 .err" in out
    # WHEN the DLQ is redriven / THEN its messages are back on the task queue
    assert adder(["redrive", "aws", "--dlq-url", queues.dlq_url, "--queue-url", queues.url]) == 0
    assert "moved 2 messages" in capsys.readouterr().out
    settle_counts()
    assert adder(["status", "aws", *args]) == 0
    out = capsys.readouterr().out
    assert "task queue:   3 waiting" in out and "dead letters: 0" in out


def test_submit_without_credentials_fails_fast_with_the_reason(
    tmp_path: Path,
    aws_env: str,
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN no credentials anywhere
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"id": "a", "data": {"num1": 1, "num2": 2}}\n')
    calls: list[int] = []
    monkeypatch.setattr("aws_lambda.submit.time.sleep", lambda seconds: calls.append(1))
    # WHEN submitting / THEN it exits 1 saying why, without retrying what cannot succeed
    code = adder(["submit", "aws", "--queue-url", queues.url, "--no-progress", str(tasks)])
    captured = capsys.readouterr()
    assert code == 1
    assert "Unable to locate credentials" in captured.err
    assert "1 could not be sent" in captured.out
    assert calls == []
