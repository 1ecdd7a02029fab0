"""S3 writes per 10,000 tasks, one object per task (the default) against packed results (one
object per batch), through the real Lambda handler and S3 store on a moto server, in one run.

Every variant sends the same 10,000 tasks (1% of them bad: they get an error record) to
``aws_lambda.handler.handle_event`` as SQS events of ``--batch-sizes`` records, in the
``per_task`` and the ``packed`` layout, with the production S3 client settings
(``default_client_config``) pointed at moto. PutObject calls are counted by a botocore
``before-call.s3.PutObject`` hook on the store's client (one per API call, whatever its
retries; ``before-send`` counts the HTTP requests, and the two must agree: no faults here).

Baseline: ``per_task`` at the same batch size. Targets: packed makes at least 10x fewer
writes at batch size 10 (SQS's default) and 100x fewer at 1,000 (a batching window), and its
handler throughput (tasks/s, wall clock of the invocations) is not lower. moto is one Python
process spending a few ms of CPU per PutObject, so per-task throughput here is bounded by moto;
real S3 answers a PUT in tens of milliseconds of waiting instead, which the handler's thread
pool overlaps. The write counts do not depend on either.

    python -m bench.aws_packed_writes
    python -m bench.aws_packed_writes --tasks 2000 --batch-sizes 10 100
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from aws_lambda.handler import handle_event
from aws_lambda.s3_store import S3ResultStore, default_client_config
from aws_lambda.sandbox import moto_server
from bench._common import time_interleaved, verdict
from core.packing import ResultsLayout
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
PER_10K = 10_000
WRITE_TARGETS = {10: 10.0, 1000: 100.0}
"""Batch size -> the least ratio of per_task writes to packed writes."""
THROUGHPUT_TARGET = 1.0
"""Packed tasks/s over per_task tasks/s, at the same batch size."""


class PutCounter:
    """PutObject API calls and HTTP attempts made by one client (botocore event hooks)."""

    def __init__(self, client: Any) -> None:
        self.calls = 0
        self.attempts = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3.PutObject", self._call)
        client.meta.events.register("before-send.s3.PutObject", self._attempt)

    def _call(self, **_: Any) -> None:
        with self._lock:
            self.calls += 1

    def _attempt(self, **_: Any) -> None:
        with self._lock:
            self.attempts += 1

    def reset(self) -> None:
        with self._lock:
            self.calls = self.attempts = 0


def task_body(i: int) -> str:
    """Task ``i``: a good one, or (1 in 100) one with a boolean addend (an error record)."""
    num1 = "true" if i % 100 == 99 else str(i)
    return f'{{"id": "t{i:06d}", "data": {{"num1": {num1}, "num2": 0.5}}}}'


def events(tasks: int, batch_size: int) -> list[dict[str, Any]]:
    """The tasks as SQS events of ``batch_size`` records."""
    records = [
        {
            "messageId": f"m{i}",
            "body": task_body(i),
            "attributes": {"ApproximateReceiveCount": "1"},
            "eventSource": "aws:sqs",
        }
        for i in range(tasks)
    ]
    return [
        {"Records": records[start : start + batch_size]} for start in range(0, tasks, batch_size)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=PER_10K)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=sorted(WRITE_TARGETS))
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (default 1)")
    args = parser.parse_args(argv)
    # One log line per record in both layouts, built as on Lambda (INFO) and then dropped
    handler_log = logging.getLogger("aws_lambda")
    handler_log.setLevel(logging.INFO)
    handler_log.addHandler(logging.NullHandler())
    handler_log.propagate = False

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running_server(moto_server.command(port), f"{endpoint}/moto-api/", cwd=REPO_ROOT):
        client = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        ).client("s3", endpoint_url=endpoint, config=default_client_config())
        client.create_bucket(Bucket="bench")
        counter = PutCounter(client)
        variants: dict[str, Callable[[], None]] = {}
        writes: dict[str, list[tuple[int, int]]] = {}
        for batch_size in args.batch_sizes:
            batches = events(args.tasks, batch_size)
            for layout in ResultsLayout:
                name = f"{layout.value} @ {batch_size}"
                store = S3ResultStore("bench", f"{layout.value}-{batch_size}", client=client)
                variants[name] = invoke_all(batches, store, layout)
                writes[name] = []

        def count_from_zero(name: str) -> None:
            counter.reset()

        handle_event(events(1, 1)[0], None, S3ResultStore("bench", "warm", client=client))
        timings = time_interleaved(
            {name: counted(run, counter, writes[name]) for name, run in variants.items()},
            args.repeat,
            before_each=count_from_zero,
        )

    scale = PER_10K / args.tasks
    print(
        f"{args.tasks:,} tasks (1% bad) through aws_lambda.handler.handle_event, S3 on moto;"
        f" PutObject calls counted by a botocore before-call hook on the store's client;"
        f" {args.repeat} round(s), median time"
    )
    print(f"{'variant':<18}{'PutObject':>10}{'per 10k':>10}{'seconds':>10}{'tasks/s':>10}")
    rate = {}
    calls = {}
    for name, timing in timings.items():
        (made, attempted), *_ = writes[name]
        assert all(w == (made, attempted) for w in writes[name]), writes[name]
        assert made == attempted, f"{name}: {made} calls, {attempted} attempts"
        calls[name] = made
        rate[name] = args.tasks / timing.median
        print(
            f"{name:<18}{made:>10,}{made * scale:>10,.0f}{timing.median:>10.2f}{rate[name]:>10,.0f}"
        )
    for batch_size in args.batch_sizes:
        per_task, packed = f"per_task @ {batch_size}", f"packed @ {batch_size}"
        ratio = calls[per_task] / calls[packed]
        target = WRITE_TARGETS.get(batch_size)
        judged = verdict(ratio, target) if target else "(no target)"
        speed = rate[packed] / rate[per_task]
        print(
            f"batch {batch_size:,}: per_task / packed writes = {ratio:,.1f}x {judged};"
            f" packed / per_task tasks/s = {speed:.2f}x {verdict(speed, THROUGHPUT_TARGET)}"
        )
    return 0


def invoke_all(
    batches: list[dict[str, Any]], store: S3ResultStore, layout: ResultsLayout
) -> Callable[[], None]:
    """Hand every batch to the handler, as the event source mapping would, one at a time."""

    def run() -> None:
        for event in batches:
            response = handle_event(event, None, store, layout)
            assert response == {"batchItemFailures": []}, response

    return run


def counted(
    run: Callable[[], None], counter: PutCounter, into: list[tuple[int, int]]
) -> Callable[[], None]:
    """``run``, then the PutObject calls and attempts it made appended to ``into``."""

    def go() -> None:
        run()
        into.append((counter.calls, counter.attempts))

    return go


if __name__ == "__main__":
    sys.exit(main())
