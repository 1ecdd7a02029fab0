"""``adder submit aws`` against one ``send_message`` per task, both into moto's SQS, in one run.

Ours: the submit command's code path (SendMessageBatch of 10, 8 calls in flight) sending
20,000 tasks. Baseline: a loop of ``send_message``, one call per task, on a sample of
``--baseline-tasks`` tasks (default 2,000: at moto's ~100 calls/s the full 20,000 would take
minutes; per-call cost does not depend on the count, so the rate is what is compared; pass
``--baseline-tasks 20000`` to time it in full). Both go through boto3 to a real moto server.

    python -m bench.aws_submit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from aws_lambda.submit import submit
from bench._common import verdict
from tests.support import moto_server
from tests.support.servers import free_port, running_server

TARGET = 8.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--baseline-tasks", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory() as work,
        running_server(moto_server.command(port), f"{endpoint}/moto-api/", cwd=REPO_ROOT),
    ):
        sqs = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        ).client("sqs", endpoint_url=endpoint, config=Config(max_pool_connections=32))
        tasks = Path(work) / "tasks.jsonl"
        bodies = [
            json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 1}}) for i in range(args.tasks)
        ]
        tasks.write_text("\n".join(bodies) + "\n")

        baseline_queue = sqs.create_queue(QueueName="baseline")["QueueUrl"]
        started = time.perf_counter()
        for body in bodies[: args.baseline_tasks]:
            sqs.send_message(QueueUrl=baseline_queue, MessageBody=body)
        baseline_seconds = time.perf_counter() - started

        queue = sqs.create_queue(QueueName="adder")["QueueUrl"]
        summary = submit(sqs, queue, str(tasks), concurrency=args.concurrency)
        assert (summary.sent, summary.failed) == (args.tasks, 0), summary
        time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)
        depth = sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert int(depth["Attributes"]["ApproximateNumberOfMessages"]) == args.tasks

    baseline_rate = args.baseline_tasks / baseline_seconds
    ours_rate = args.tasks / summary.seconds
    print(f"submit to moto SQS (cpus: {os.cpu_count()})")
    print(
        f"one send_message per task: {args.baseline_tasks:>6,} tasks in {baseline_seconds:7.2f}s = {baseline_rate:8,.0f}/s"
    )
    print(
        f"adder submit aws:          {args.tasks:>6,} tasks in {summary.seconds:7.2f}s = {ours_rate:8,.0f}/s"
    )
    ratio = ours_rate / baseline_rate
    print(f"adder / one-by-one: {ratio:.1f}x", verdict(ratio, TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
