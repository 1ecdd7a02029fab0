"""``adder submit aws`` against one ``send_message`` per task, both into moto's SQS, in one run.

Ours: the submit command's code path (SendMessageBatch of 10, 8 calls in flight) sending
20,000 tasks. Baseline: a loop of ``send_message``, one call per task, on a sample of
``--baseline-tasks`` tasks (default 2,000: per-call cost does not depend on the count, so the
rate is what is compared; ``--baseline-tasks 20000`` times all of it). Both go through boto3 to
a real moto server (the patched launcher of aws_lambda/sandbox/moto_server.py). The two alternate in
``--rounds`` rounds (a slice of the baseline, then a slice of our 20,000 tasks), so that the
load of a shared machine weighs on both alike; the ratio is of the total rates.

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

from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.sandbox import moto_server
from bench._common import time_interleaved, verdict
from core.ops.manifest import Manifest
from core.ops.submit import submit
from tools.servers import free_port, running_server

TARGET = 8.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def slice_of(items: list[str], index: int, parts: int) -> list[str]:
    """The ``index``-th of ``parts`` near-equal consecutive slices of ``items``."""
    return items[len(items) * index // parts : len(items) * (index + 1) // parts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--baseline-tasks", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
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
        bodies = [
            json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 1}}) for i in range(args.tasks)
        ]
        baseline_parts = [
            slice_of(bodies[: args.baseline_tasks], index, args.rounds)
            for index in range(args.rounds)
        ]
        our_parts = [slice_of(bodies, index, args.rounds) for index in range(args.rounds)]
        task_files = [Path(work) / f"tasks-{index}.jsonl" for index in range(args.rounds)]
        for path, part in zip(task_files, our_parts, strict=True):
            path.write_text("\n".join(part) + "\n")

        baseline_queue = sqs.create_queue(QueueName="baseline")["QueueUrl"]
        queue = sqs.create_queue(QueueName="adder")["QueueUrl"]
        next_baseline = iter(baseline_parts)
        next_ours = iter(zip(task_files, our_parts, strict=True))

        def one_by_one() -> None:
            for body in next(next_baseline):
                sqs.send_message(QueueUrl=baseline_queue, MessageBody=body)

        backend = AwsJobBackend(sqs, queue_url=queue)

        def adder_submit() -> None:
            path, part = next(next_ours)
            manifest = Manifest.create(Path(work) / "jobs", path.stem, "aws", {}, str(path))
            summary = submit(backend, str(path), manifest=manifest, concurrency=args.concurrency)
            assert (summary.sent, summary.failed) == (len(part), 0), summary

        timings = time_interleaved(
            {"one by one": one_by_one, "adder submit": adder_submit}, args.rounds
        )
        time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)
        depth = sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert int(depth["Attributes"]["ApproximateNumberOfMessages"]) == args.tasks

    baseline_seconds = sum(timings["one by one"].seconds)
    ours_seconds = sum(timings["adder submit"].seconds)
    rounds = [
        (len(ours) / ours_time) / (len(baseline) / baseline_time)
        for ours, ours_time, baseline, baseline_time in zip(
            our_parts,
            timings["adder submit"].seconds,
            baseline_parts,
            timings["one by one"].seconds,
            strict=True,
        )
    ]
    baseline_rate = args.baseline_tasks / baseline_seconds
    ours_rate = args.tasks / ours_seconds
    print(f"submit to moto SQS (cpus: {os.cpu_count()}, {args.rounds} interleaved rounds)")
    print(
        f"one send_message per task: {args.baseline_tasks:>6,} tasks in {baseline_seconds:7.2f}s = {baseline_rate:8,.0f}/s"
    )
    print(
        f"adder submit aws:          {args.tasks:>6,} tasks in {ours_seconds:7.2f}s = {ours_rate:8,.0f}/s"
    )
    print("ratio per round:", ", ".join(f"{ratio:.1f}x" for ratio in rounds))
    ratio = ours_rate / baseline_rate
    print(f"adder / one-by-one: {ratio:.1f}x", verdict(ratio, TARGET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
