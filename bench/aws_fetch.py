"""``adder fetch aws`` against one ``get_object`` per result in sequence, from moto's S3.

Ours: the fetch command's code path (one listing, then a bounded pool of ``get_object``
calls writing each file through the local runner's store: temp + rename) fetching 20,000
results. Baseline: list the same way, then ``get_object`` one result after another and write
each file, on a sample of ``--baseline-results`` (default 2,000: the per-object cost does not
depend on the count, so rates are compared; ``--baseline-results 20000`` times all of it).
The two alternate in ``--rounds`` rounds (each round its own prefix), so the load of a shared
machine weighs on both alike; the ratio is of the total rates.

moto answers from the same 2 cores the client runs on, so a request costs CPU on both sides
and nothing else: ``--latency-ms`` adds a fixed wait (no CPU) before each moto answer, the
shape of a real S3 request (tens of milliseconds first-byte latency), to show what the pool
buys when requests wait rather than compute. The README reports both.

Also measured: the same results written packed (``RESULTS_LAYOUT=packed``: one object per
delivered batch of ``--packed-batch`` tasks, see core/packing.py) fetched by the same
command into the same files, against the same baseline; and the list calls one
``adder watch`` poll makes for 20,000 results (target: at most one per 1,000 results).

    python -m bench.aws_fetch [--latency-ms 20] [--packed-batch 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.config import Config

from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.sandbox import moto_server
from bench._common import Timing, time_interleaved, verdict
from core.delivery import Delivery, deliver_packed
from core.ops import DEFAULT_FETCH_CONCURRENCY
from core.ops.fetch import fetch
from core.ops.watch import poll
from core.ports import ResultStore
from tools.servers import free_port, running_server

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = 8.0
BUCKET = "adder-results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=20_000)
    parser.add_argument("--baseline-results", type=int, default=2_000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_FETCH_CONCURRENCY,
        help="downloads in flight (default: adder fetch's)",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--packed-batch", type=int, default=10)
    args = parser.parse_args(argv)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    environment = {**os.environ, moto_server.LATENCY_ENV: str(args.latency_ms)}
    with (
        tempfile.TemporaryDirectory() as work,
        running_server(
            moto_server.command(port), f"{endpoint}/moto-api/", cwd=REPO_ROOT, env=environment
        ),
    ):
        session = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        )
        config = Config(max_pool_connections=64, retries={"mode": "standard"})
        s3 = session.client("s3", endpoint_url=endpoint, config=config)
        s3.create_bucket(Bucket=BUCKET)
        per_round = args.results // args.rounds
        baseline_per_round = args.baseline_results // args.rounds
        _plant(s3, args.rounds, per_round, baseline_per_round, args.packed_batch)
        next_round = iter(range(args.rounds))
        next_packed_round = iter(range(args.rounds))
        next_baseline_round = iter(range(args.rounds))

        def one_by_one() -> None:
            index = next(next_baseline_round)
            target = Path(work) / f"baseline-{index}"
            target.mkdir()
            prefix = f"baseline-{index}/"
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix):
                for item in page.get("Contents", []):
                    body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                    (target / item["Key"][len(prefix) :]).write_bytes(body)

        def adder_fetch() -> None:
            index = next(next_round)
            backend = AwsJobBackend(
                session.client("sqs", endpoint_url=endpoint),
                s3,
                bucket=BUCKET,
                prefix=f"round-{index}",
            )
            summary = fetch(backend, Path(work) / f"ours-{index}", concurrency=args.concurrency)
            assert (summary.results, summary.failed) == (per_round, 0), summary

        def adder_fetch_packed() -> None:
            index = next(next_packed_round)
            backend = AwsJobBackend(
                session.client("sqs", endpoint_url=endpoint),
                s3,
                bucket=BUCKET,
                prefix=f"packed-{index}",
            )
            summary = fetch(backend, Path(work) / f"packed-{index}", concurrency=args.concurrency)
            assert (summary.results, summary.failed) == (per_round, 0), summary
            assert _files(Path(work) / f"packed-{index}") == _files(Path(work) / f"ours-{index}")

        timings = time_interleaved(
            {
                "one by one": one_by_one,
                "adder fetch": adder_fetch,
                "adder fetch packed": adder_fetch_packed,
            },
            args.rounds,
        )
        list_calls = _list_calls_of_one_poll(session, endpoint, s3, per_round)

    _report(args, timings, per_round, baseline_per_round, list_calls)
    return 0


def _report(
    args: argparse.Namespace,
    timings: dict[str, Timing],
    per_round: int,
    baseline_per_round: int,
    list_calls: int,
) -> None:
    baseline_seconds = sum(timings["one by one"].seconds)
    ours_seconds = sum(timings["adder fetch"].seconds)
    baseline_rate = baseline_per_round * args.rounds / baseline_seconds
    ours_rate = per_round * args.rounds / ours_seconds
    print(
        f"fetch from moto S3 (cpus: {os.cpu_count()}, {args.rounds} interleaved rounds, "
        f"{args.latency_ms:g} ms added latency per request)"
    )
    print(
        f"one get_object at a time: {baseline_per_round * args.rounds:>6,} results in "
        f"{baseline_seconds:7.2f}s = {baseline_rate:8,.0f}/s"
    )
    print(
        f"adder fetch aws:          {per_round * args.rounds:>6,} results in "
        f"{ours_seconds:7.2f}s = {ours_rate:8,.0f}/s"
    )
    packed_seconds = sum(timings["adder fetch packed"].seconds)
    packed_rate = per_round * args.rounds / packed_seconds
    print(
        f"adder fetch aws, packed:  {per_round * args.rounds:>6,} results in "
        f"{packed_seconds:7.2f}s = {packed_rate:8,.0f}/s "
        f"({args.packed_batch} per pack)"
    )
    ratio = ours_rate / baseline_rate
    print(f"adder / one-by-one: {ratio:.1f}x", verdict(ratio, TARGET))
    packed_ratio = packed_rate / baseline_rate
    print(f"adder packed / one-by-one: {packed_ratio:.1f}x", verdict(packed_ratio, TARGET))
    per_thousand = list_calls / (per_round / 1000)
    print(
        f"watch: {list_calls} list calls in one poll of {per_round:,} results = "
        f"{per_thousand:.2f} per 1,000",
        verdict(per_thousand, 1.0, at_most=True),
    )


def _plant(
    s3: object, rounds: int, per_round: int, baseline_per_round: int, packed_batch: int
) -> None:
    """The results a job would leave: ``{prefix}/{id}.out`` holding the sum, and the same
    results packed by the function's own packing (``deliver_packed``) under ``packed-{r}``."""
    keys = [
        (f"round-{r}/t{r}-{i}.out", str(i + 1).encode())
        for r in range(rounds)
        for i in range(per_round)
    ] + [
        (f"baseline-{r}/t{r}-{i}.out", str(i + 1).encode())
        for r in range(rounds)
        for i in range(baseline_per_round)
    ]
    for r in range(rounds):
        bodies = [
            b'{"id": "t%d-%d", "data": {"num1": %d, "num2": 1}}' % (r, i, i)
            for i in range(per_round)
        ]
        keys += _packs(f"packed-{r}", bodies, packed_batch)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=BUCKET, Key=kv[0], Body=kv[1]), keys))  # type: ignore[attr-defined]


def _packs(prefix: str, bodies: list[bytes], batch: int) -> list[tuple[str, bytes]]:
    """The packs the packed handler writes for ``bodies`` delivered ``batch`` at a time."""
    packs: list[tuple[str, bytes]] = []

    class Keep(ResultStore):
        def put(self, key: str, data: bytes, content_type: str) -> None:
            packs.append((key, data))

    store = Keep()
    store.prefix = prefix
    for start in range(0, len(bodies), batch):
        chunk = bodies[start : start + batch]
        deliver_packed([Delivery(body) for body in chunk], store, lambda *_: None)
    return packs


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def _list_calls_of_one_poll(
    session: boto3.session.Session, endpoint: str, s3: object, results: int
) -> int:
    """ListObjectsV2 calls made by one ``watch`` poll over ``results`` results."""
    calls = 0

    def count(**_: object) -> None:
        nonlocal calls
        calls += 1

    counting = session.client("s3", endpoint_url=endpoint)
    counting.meta.events.register("before-send.s3.ListObjectsV2", count)
    backend = AwsJobBackend(
        session.client("sqs", endpoint_url=endpoint), counting, bucket=BUCKET, prefix="round-0"
    )
    counts = poll(backend, {f"t0-{i}" for i in range(results)})
    assert counts.succeeded == results, counts
    return calls


if __name__ == "__main__":
    sys.exit(main())
