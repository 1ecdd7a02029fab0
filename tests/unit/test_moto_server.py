"""The patched moto launcher (aws_lambda/sandbox/moto_server.py) must answer exactly as stock moto.

Its patches are speed-ups only; every AWS test and benchmark trusts that. Each check runs in
a fresh interpreter, since the patches change moto's classes for the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

SNAPSHOT = textwrap.dedent(
    """
    import json, sys, time
    from moto.backends import list_of_moto_modules
    from moto.sqs.models import sqs_backends
    from aws_lambda.sandbox import moto_server

    backend = sqs_backends["123456789012"]["us-east-1"]
    queue = backend.create_queue("q", VisibilityTimeout="30")
    for number in range(5):
        backend.send_message("q", f"available {number}")
    backend.send_message("q", "delayed", delay_seconds=60)
    backend.receive_message("q", count=2, wait_seconds_timeout=0, visibility_timeout=30)

    def snapshot():
        counts = [getattr(queue, name) for name in moto_server.COUNT_PROPERTIES]
        attributes = {k: v for k, v in queue.attributes.items() if k != "LastModifiedTimestamp"}
        return {"counts": counts, "attributes": attributes,
                "modules": list(list_of_moto_modules())}

    stock = snapshot()
    moto_server.patch_sqs()
    moto_server.patch_dispatch()
    patched = snapshot()
    backend.send_message("q", "one more")
    cached = [getattr(queue, name) for name in moto_server.COUNT_PROPERTIES]
    time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.05)
    refreshed = [getattr(queue, name) for name in moto_server.COUNT_PROPERTIES]
    json.dump({"stock": stock, "patched": patched, "cached": cached,
               "refreshed": refreshed}, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def snapshot() -> dict[str, object]:
    """One run of SNAPSHOT in a fresh interpreter, shared by this module's tests."""
    done = subprocess.run(
        [sys.executable, "-c", SNAPSHOT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_patched_moto_reports_what_stock_moto_reports(snapshot: dict[str, object]) -> None:
    # GIVEN a queue with available, in-flight and delayed messages
    # WHEN its counts, attributes and moto's module list are read before and after patching
    result = snapshot

    # THEN the patched answers are stock moto's, and the counts are the right ones
    assert result["patched"] == result["stock"]
    stock = result["stock"]
    assert isinstance(stock, dict)
    assert stock["counts"] == [3, 2, 1]  # available, in flight, delayed
    assert stock["attributes"]["ApproximateNumberOfMessages"] == 3
    assert "sqs" in stock["modules"]


def test_counts_are_cached_briefly_then_refreshed(snapshot: dict[str, object]) -> None:
    # GIVEN counts just read through the patched model
    # WHEN a message is sent, and read again at once and after the cache's lifetime
    result = snapshot

    # THEN the immediate read is the cached (approximate) figure, the later one is exact
    assert result["cached"] == [3, 2, 1]
    assert result["refreshed"] == [4, 2, 1]


RACE = textwrap.dedent(
    """
    import json, sys, threading, time
    from moto.sqs import models
    from moto.sqs.models import sqs_backends
    from aws_lambda.sandbox import moto_server

    if sys.argv[1] == "patched":
        moto_server.patch_receives()
    slow = models.Message.mark_received

    def mark_received(self, *args, **kwargs):
        time.sleep(0.002)  # widens moto's unlocked gap between "visible?" and "received"
        return slow(self, *args, **kwargs)

    models.Message.mark_received = mark_received
    backend = sqs_backends["123456789012"]["us-east-1"]
    backend.create_queue("q", VisibilityTimeout="60")
    for number in range(200):
        backend.send_message("q", f"m{number}")
    received, lock = [], threading.Lock()

    def take():
        while True:
            got = backend.receive_message(
                "q", count=10, wait_seconds_timeout=0, visibility_timeout=60
            )
            if not got:
                return
            with lock:
                received.extend(message.body for message in got)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump({"received": len(received), "distinct": len(set(received))}, sys.stdout)
    """
)


def concurrent_receives(variant: str) -> dict[str, int]:
    """8 threads receiving 200 messages at once from one queue, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", RACE, variant],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_concurrent_receives_never_take_the_same_message() -> None:
    # GIVEN 200 messages and 8 threads receiving at once (moto's gap widened by 2 ms)
    # WHEN they drain the queue through stock moto and through the patched receive
    stock = concurrent_receives("stock")
    patched = concurrent_receives("patched")
    # THEN stock moto hands some messages out twice (and, racing, may even lose a receiver's
    # batch); the patched server hands out each exactly once
    assert stock["received"] > stock["distinct"]
    assert patched == {"received": 200, "distinct": 200}
