"""A batch of 100 SQS records with 20 ms of simulated S3 round trip: the handler's bounded
thread pool against one-by-one writes, in one run.

Each PutObject is answered by a botocore ``before-send`` hook that sleeps 20 ms and returns
S3's 200 response, so a write costs one real S3 round trip and everything on the client side
(request building, signing, parsing, the thread pool) runs for real. Baseline ("one by one"):
the same handler code with no pool. Target: the pooled batch in at most 1/8 of the time.

``--moto`` sends the writes on to a real moto server after the sleep instead. moto is one
Python process that spends ~5 ms of CPU per PutObject, so it, not the handler, then sets the
pace; that figure is printed for comparison, not judged.

    python -m bench.aws_batch
    python -m bench.aws_batch --moto
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from aws_lambda.batch import process_batch
from aws_lambda.handler import handle_event
from aws_lambda.s3_store import MAX_POOL_CONNECTIONS, S3ResultStore
from aws_lambda.sandbox import moto_server
from bench._common import time_interleaved, verdict
from tools.aws_faults import canned_response
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest, AWSResponse

TARGET = 1 / 8
REPO_ROOT = Path(__file__).resolve().parent.parent


def event(records: int, round_no: int) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "body": f'{{"id": "r{round_no}-t{i}", "data": {{"num1": {i}, "num2": 1}}}}',
                "attributes": {"ApproximateReceiveCount": "1"},
            }
            for i in range(records)
        ]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--moto", action="store_true", help="let the writes reach moto too")
    args = parser.parse_args(argv)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running_server(moto_server.command(port), f"{endpoint}/moto-api/", cwd=REPO_ROOT):
        client = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        ).client(
            "s3",
            endpoint_url=endpoint,
            config=Config(retries={"mode": "standard"}, max_pool_connections=MAX_POOL_CONNECTIONS),
        )
        client.create_bucket(Bucket="bench")

        def slow_round_trip(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
            time.sleep(args.latency_ms / 1000)
            return None if args.moto else canned_response(request, 200, b"", "application/xml")

        # botocore uses the first non-None answer of a before-send hook as the response (the
        # stubs type hooks as returning None)
        client.meta.events.register("before-send.s3.PutObject", slow_round_trip)  # type: ignore[arg-type]
        store = S3ResultStore("bench", "results", client=client)
        rounds = {"one by one": 0, "thread pool": 0}

        def one_by_one() -> None:
            rounds["one by one"] += 1
            batch = event(args.records, rounds["one by one"])["Records"]
            response = process_batch(
                batch, store, executor=None, remaining_ms=lambda: 60_000, margin_ms=0
            )
            assert response == {"batchItemFailures": []}

        def pooled() -> None:
            rounds["thread pool"] += 1
            response = handle_event(event(args.records, 1000 + rounds["thread pool"]), None, store)
            assert response == {"batchItemFailures": []}

        pooled()  # warm the pool and the connection pool once, untimed
        timings = time_interleaved({"one by one": one_by_one, "thread pool": pooled}, args.repeat)
        if args.moto:
            written = client.list_objects_v2(Bucket="bench", Prefix="results/")["KeyCount"]
            assert written >= args.records, written

    base = timings["one by one"].median
    print(
        f"Lambda batch of {args.records} records, {args.latency_ms:.0f} ms added per S3 write, "
        f"median of {args.repeat} (pool: {os.environ.get('ADDER_MAX_CONCURRENCY', '32')} threads; "
        f"writes {'reach moto' if args.moto else 'answered after the delay'})"
    )
    for timing in timings.values():
        print(
            f"{timing.name:<12}{timing.median:>8.3f}s  {timing.median / base:6.3f}x  {timing.spread}"
        )
    ratio = timings["thread pool"].median / base
    judged = "" if args.moto else verdict(ratio, TARGET, at_most=True)
    print(f"thread pool / one by one: {ratio:.3f} (1/{1 / ratio:.1f})", judged)
    return 0


if __name__ == "__main__":
    sys.exit(main())
