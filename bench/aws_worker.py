"""``adder work``'s loop (``--concurrency 32``) against a single-threaded receive-process-delete
loop, draining SQS into S3 on moto, in the same run.

Ours: :class:`core.worker.loop.Worker` over :class:`aws_lambda.sqs_receiver.SqsReceiver` and
the functions' :class:`~aws_lambda.s3_store.S3ResultStore` (pollers, 32 task threads, batched
DeleteMessageBatch, heartbeat). Baseline ("one thread"): ReceiveMessage (10, long poll), each
task through the same :func:`core.delivery.deliver` with the same store and log, then one
DeleteMessageBatch, one step after the other. Both log one JSON line per task (to
``/dev/null``). The variants alternate for ``--rounds`` rounds, each round on its own queue and
prefix (``--tasks`` tasks for ours, ``--baseline-tasks`` for the baseline: the cost of a task
does not depend on the count, so a smaller baseline sample saves minutes when requests are
slow), so the load of a shared machine weighs on both alike; the ratio is of the total rates.
Target: ours >= 8x. Also measured: the same worker with the packed layout (``--results-layout
packed``: the messages of one receive call written as one object, core/packing.py), against
the same baseline, as a row of its own.

moto answers from the same cores the client runs on, and as one Python process: every
request costs CPU on both sides and nothing else, so with no added latency the pool can only
win what the cores allow. ``--latency-ms`` adds a fixed wait (a sleep, no CPU) before each moto
answer, the shape of real SQS and S3 round trips (tens of milliseconds): what the worker's
concurrency is for. Report both.

moto's SQS model rebuilds a queue's message list on every delete, so concurrent deletes can
undo each other (the message comes back after its visibility timeout: a duplicate SQS
itself would never cause). The project's moto server (aws_lambda/sandbox/moto_server.py,
``patch_deletes``) deletes in place under the queue's own lock; the tests use it too.

    python -m bench.aws_worker [--tasks 2000] [--baseline-tasks N] [--rounds 2] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from aws_lambda.s3_store import S3ResultStore, default_client_config
from aws_lambda.sandbox import moto_server
from aws_lambda.sqs_receiver import SqsReceiver
from bench._common import Timing, time_interleaved, verdict
from core.delivery import Delivery, deliver
from core.packing import PACK_SUFFIX, ResultsLayout, unpack
from core.ports import ResultStore
from core.worker.logs import JsonLines
from core.worker.loop import Worker, WorkerOptions
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mypy_boto3_sqs import SQSClient

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = 8.0
BUCKET = "adder-bench"
PACKED = "adder work, packed"
PACKED_LAYOUT = ResultsLayout.PACKED
TAGS = {"one thread": "one", "adder work": "work", PACKED: "packed"}


class CountingStore(ResultStore):
    """The S3 store, counting distinct records written (a pack's records each); sets ``done``
    at ``target``."""

    def __init__(self, store: S3ResultStore, target: int) -> None:
        self.store = store
        self.prefix = store.prefix
        self.target = target
        self.keys: set[str] = set()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.store.put(key, data, content_type)
        names = [r.file_name for r in unpack(data)] if key.endswith(PACK_SUFFIX) else [key]
        with self._lock:
            self.keys.update(names)
            if len(self.keys) >= self.target:
                self.done.set()


def send_tasks(sqs: SQSClient, queue_url: str, round_name: str, count: int) -> None:
    """``count`` tasks on the queue, 10 a batch, from 16 threads."""

    def batch(start: int) -> None:
        entries: Any = [
            {
                "Id": str(i),
                "MessageBody": json.dumps(
                    {"id": f"{round_name}-{i}", "data": {"num1": i, "num2": 1}}
                ),
            }
            for i in range(start, min(count, start + 10))
        ]
        assert not sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(batch, range(0, count, 10)))


def one_thread(sqs: SQSClient, queue_url: str, store: CountingStore, log: JsonLines) -> None:
    """The baseline: receive 10, process each, delete the batch; until all are written."""
    while not store.done.is_set():
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        done = []
        for message in messages:
            delivery = Delivery(message["Body"].encode(), message["MessageId"], None)
            if not deliver(delivery, store, log).retry:
                done.append(message)
        if done:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )


def worker_loop(
    sqs: SQSClient,
    queue_url: str,
    store: CountingStore,
    log: JsonLines,
    concurrency: int,
    *,
    layout: ResultsLayout = ResultsLayout.PER_TASK,
) -> None:
    """Ours: the worker on the queue until all are written, then its drain."""
    receiver = SqsReceiver(sqs, queue_url, lease_seconds=60)
    options = WorkerOptions(
        concurrency=concurrency, wait_seconds=1, drain_seconds=60, layout=layout
    )
    worker = Worker(receiver, store, log, options=options)

    def stop_when_done() -> None:
        store.done.wait()
        worker.request_stop()

    threading.Thread(target=stop_when_done, daemon=True).start()
    worker.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round (ours)")
    parser.add_argument(
        "--baseline-tasks",
        type=int,
        help="tasks per round for the one-thread loop (default: --tasks); rates are compared",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    args.baseline_tasks = args.baseline_tasks or args.tasks
    sizes = {"one thread": args.baseline_tasks, "adder work": args.tasks, PACKED: args.tasks}

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    environment = {**os.environ, moto_server.LATENCY_ENV: str(args.latency_ms)}
    with (
        Path(os.devnull).open("w", encoding="utf-8") as devnull,
        running_server(
            moto_server.command(port), f"{endpoint}/moto-api/", cwd=REPO_ROOT, env=environment
        ),
    ):
        session = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        )
        sqs = session.client(
            "sqs",
            endpoint_url=endpoint,
            config=Config(retries={"mode": "standard"}, read_timeout=30, max_pool_connections=64),
        )
        s3 = session.client("s3", endpoint_url=endpoint, config=default_client_config(64))
        s3.create_bucket(Bucket=BUCKET)
        log = JsonLines("bench", devnull)
        rounds: dict[str, int] = dict.fromkeys(sizes, 0)
        queues: dict[str, str] = {}
        stores: dict[str, CountingStore] = {}

        def prepare(name: str) -> None:
            rounds[name] += 1
            tag = f"{TAGS[name]}-{rounds[name]}"
            url = sqs.create_queue(QueueName=tag, Attributes={"VisibilityTimeout": "60"})[
                "QueueUrl"
            ]
            send_tasks(sqs, url, tag, sizes[name])
            queues[name] = url
            stores[name] = CountingStore(S3ResultStore(BUCKET, tag, client=s3), sizes[name])

        timings = time_interleaved(
            {
                "one thread": lambda: one_thread(
                    sqs, queues["one thread"], stores["one thread"], log
                ),
                "adder work": lambda: worker_loop(
                    sqs, queues["adder work"], stores["adder work"], log, args.concurrency
                ),
                PACKED: lambda: worker_loop(
                    sqs, queues[PACKED], stores[PACKED], log, args.concurrency, layout=PACKED_LAYOUT
                ),
            },
            args.rounds,
            before_each=prepare,
        )
        written = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                if item["Key"].endswith(PACK_SUFFIX):
                    body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                    written += len(unpack(body))
                else:
                    written += 1
        assert written == args.rounds * sum(sizes.values()), written
    _report(args, timings, sizes)
    return 0


def _report(args: argparse.Namespace, timings: dict[str, Timing], sizes: dict[str, int]) -> None:
    rates = {name: sizes[name] * args.rounds / sum(t.seconds) for name, t in timings.items()}
    print(
        f"drain SQS -> S3 on moto (cpus: {os.cpu_count()}, {args.rounds} interleaved rounds,"
        f" {args.latency_ms:g} ms added per request)"
    )
    for name, timing in timings.items():
        total = sizes[name] * args.rounds
        label = {
            "one thread": "one thread:",
            "adder work": f"adder work --concurrency {args.concurrency}:",
            PACKED: "  the same, packed:",
        }[name]
        print(
            f"{label:<30}{total:>7,} tasks in {sum(timing.seconds):7.2f}s ="
            f" {rates[name]:7,.0f}/s  ({timing.spread} a round)"
        )
    ratio = rates["adder work"] / rates["one thread"]
    print(f"adder work / one thread: {ratio:.1f}x", verdict(ratio, TARGET))
    packed = rates[PACKED] / rates["one thread"]
    print(f"adder work, packed / one thread: {packed:.1f}x (one object per receive call)")


if __name__ == "__main__":
    sys.exit(main())
