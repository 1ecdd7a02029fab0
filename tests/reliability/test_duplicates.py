"""Duplicate delivery: the same message twice, in sequence and at once, on every target.

Queues deliver at least once, so every target must turn repeated deliveries into one correct
object. Each target gets the same scenarios: a task delivered twice in a row; 16 deliveries
released together by a barrier; a bad task (named by its id, and one named by its hash)
delivered 8 times at once; and rounds of 8 messages with the same id but different numbers,
released together, after which the object must hold exactly one of the 8 valid sums (the sums
differ in every digit, so a mix of two writes or a partial one would show). Afterwards the
listing must hold exactly the expected names: no temporary, no extra object.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import requests
from google.api_core.exceptions import NotFound

from aws_lambda.handler import handle_event
from aws_lambda.s3_store import S3ResultStore, default_client_config
from core.local_store import LocalDirectoryResultStore
from core.outcome import OutcomeKind
from core.pipeline import process_message
from tests.conftest import REPO_ROOT, files_outside
from tests.integration.aws.conftest import REGION, all_keys, read_object
from tests.integration.azure.messages import app_settings_for, make_message, registered_function
from tests.integration.gcp.conftest import function_running
from tests.reliability.corpus import Case, content_problems
from tests.reliability.ledger import Row

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite

PREFIX = "jobs/duplicates"
AT_ONCE = 16
"""Deliveries of one message released together."""
BAD_AT_ONCE = 8
VARIANTS = 8
"""Messages with the same id and different numbers, per round."""
ROUNDS = 4


def task(task_id: str, num1: int, num2: int) -> bytes:
    return json.dumps({"id": task_id, "data": {"num1": num1, "num2": num2}}).encode()


def variant(task_id: str, k: int) -> tuple[bytes, str]:
    """The k-th message for ``task_id`` (k = 1..9) and its sum: the digit k, 999 times.

    Any two sums differ in every digit, so a result spliced from two writes matches neither.
    """
    num1 = int(str(k) * 999)
    return task(task_id, num1, 0), str(num1)


@dataclass
class Target:
    """How to deliver a message to one entry point, and how to see what it stored."""

    name: str
    deliver: Callable[[bytes, str], None]
    """Deliver ``body`` with this message id; fail the test unless it was handled."""
    names: Callable[[], list[str]]
    """Every stored name, relative to the prefix (fails if anything is outside it)."""
    read: Callable[[str], bytes | None]


@dataclass
class Tally:
    """What the scenarios sent and found."""

    expected: dict[str, Case | set[str]] = field(default_factory=dict)
    """Stored name -> the case it must hold, or the set of contents it may hold."""
    deliveries: int = 0
    results: int = 0
    error_records: int = 0
    wrong: list[str] = field(default_factory=list)


def at_once(target: Target, bodies: list[tuple[bytes, str]]) -> None:
    """Deliver every (body, message id) from its own thread, all released by one barrier."""
    barrier = threading.Barrier(len(bodies))

    def go(pair: tuple[bytes, str]) -> None:
        barrier.wait(timeout=60)
        target.deliver(*pair)

    with ThreadPoolExecutor(len(bodies)) as pool:
        list(pool.map(go, bodies))


def good_case(task_id: str, body: bytes, out: str) -> Case:
    return Case(name=task_id, raw=body, good=True, code=None, task_id=task_id, out=out)


def bad_case(body: bytes, code: str, task_id: str | None) -> Case:
    return Case(name=code, raw=body, good=False, code=code, task_id=task_id)


def check(target: Target, tally: Tally, name: str, allowed: Case | set[str]) -> None:
    """Record a problem unless the object ``name`` is whole and allowed."""
    content = target.read(name)
    if isinstance(allowed, Case):
        problems = content_problems(allowed, content)
    elif content is None or content.decode(errors="replace") not in allowed:
        problems = [f"{(content or b'')[:40]!r}... is none of the {len(allowed)} valid sums"]
    else:
        problems = []
    tally.wrong += [f"{target.name} {name}: {problem}" for problem in problems]


def run_scenarios(target: Target) -> Tally:
    """Every duplicate-delivery scenario against ``target``; returns what was found."""
    tag = f"dup-{uuid.uuid4().hex[:8]}"
    tally = Tally()

    # GIVEN a task delivered twice in a row (the second after the first is stored)
    body = task(f"{tag}-twice", 10**30, 1)
    case = good_case(f"{tag}-twice", body, str(10**30 + 1))
    for _ in range(2):
        target.deliver(body, f"{tag}-twice-m")
        check(target, tally, case.file_name, case)  # THEN it is right after each delivery
        tally.deliveries += 1
    tally.expected[case.file_name] = case

    # GIVEN one task delivered AT_ONCE times at the same moment
    body = task(f"{tag}-burst", -(10**40), 3)
    case = good_case(f"{tag}-burst", body, str(-(10**40) + 3))
    at_once(target, [(body, f"{tag}-burst-m")] * AT_ONCE)
    tally.deliveries += AT_ONCE
    tally.expected[case.file_name] = case

    # GIVEN a bad task with an id, and one with no usable id, each delivered 8 times at once
    with_id = task(f"{tag}-bad", 1, 2).replace(b": 1,", b": true,")
    hashed = f"not json {tag}".encode()
    bad = [
        bad_case(with_id, "invalid_number", f"{tag}-bad"),
        bad_case(hashed, "invalid_json", None),
    ]
    at_once(target, [(c.raw, f"{tag}-{c.code}") for c in bad for _ in range(BAD_AT_ONCE)])
    tally.deliveries += 2 * BAD_AT_ONCE
    tally.expected.update({c.file_name: c for c in bad})

    # GIVEN rounds of VARIANTS messages with one id but different numbers, released together
    for round_ in range(ROUNDS):
        task_id = f"{tag}-race-{round_}"
        variants = [variant(task_id, k) for k in range(1, VARIANTS + 1)]
        at_once(target, [(b, f"{task_id}-m{k}") for k, (b, _) in enumerate(variants)])
        tally.deliveries += VARIANTS
        tally.expected[f"{task_id}.out"] = {total for _, total in variants}

    # THEN each name holds one whole, valid content, and nothing else was stored
    for name, allowed in tally.expected.items():
        check(target, tally, name, allowed)
    names = target.names()
    extra = sorted(set(names) - set(tally.expected))
    missing = sorted(set(tally.expected) - set(names))
    tally.wrong += [f"{target.name}: extra object {n!r}" for n in extra]
    tally.wrong += [f"{target.name}: missing {n!r}" for n in missing]
    assert len(names) == len(set(names))
    tally.error_records = len(bad)
    tally.results = len(tally.expected) - len(bad)
    return tally


def save(
    tally: Tally,
    target: str,
    started: float,
    reliability_row: Callable[[Row], None],
    extra: str = "",
) -> None:
    # THEN nothing is wrong: no partial, mixed, missing or extra object
    assert tally.wrong == []
    unique = len(tally.expected)
    reliability_row(
        Row(
            "duplicate delivery",
            target,
            f"same message twice in a row, {AT_ONCE} at once, bad ones {BAD_AT_ONCE} at once, "
            f"{ROUNDS} rounds of {VARIANTS} different numbers for one id at once{extra}",
            cases=4 + bool(extra),
            messages=unique,
            results=tally.results,
            error_records=tally.error_records,
            duplicates=tally.deliveries - unique,
            seconds=time.monotonic() - started,
            note=f"messages counts ids; the {ROUNDS * VARIANTS} same-id messages with different "
            "numbers count as duplicates of their id (the object holds one whole valid sum)",
        )
    )


# --- local --------------------------------------------------------------------------------


def test_local_store_duplicates(tmp_path: Path, reliability_row: Callable[[Row], None]) -> None:
    # GIVEN a results directory; each delivery uses its own store (as separate workers do)
    results = tmp_path / "results"
    results.mkdir()

    def deliver(body: bytes, message_id: str) -> None:
        with LocalDirectoryResultStore(results) as store:
            outcome = process_message(body, store)
        assert outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.REJECTED)

    def read(name: str) -> bytes | None:
        path = results / name
        return path.read_bytes() if path.exists() else None

    target = Target("local", deliver, lambda: os.listdir(results), read)
    started = time.monotonic()
    # WHEN every scenario runs
    tally = run_scenarios(target)
    # THEN nothing was written outside the directory
    assert files_outside(tmp_path, results) == []
    save(tally, "local runner", started, reliability_row)


def test_local_runners_racing_on_the_same_ids(
    tmp_path: Path, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN 4 task files with the same 2,000 ids, each file with different numbers
    ids, runs = 2000, 4
    files = []
    for run in range(1, runs + 1):
        path = tmp_path / "input" / f"run-{run}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"".join(variant(f"r{i}", run)[0] + b"\n" for i in range(ids)))
        files.append(path)
    valid = {variant("r", run)[1] for run in range(1, runs + 1)}
    results = tmp_path / "results"
    started = time.monotonic()
    # WHEN 4 runners (one of them with 2 workers) run them into one directory at the same time
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "core.local", "--tasks", str(path), "--no-progress"),
                *("--results-dir", str(results), "--workers", "2" if n == 0 else "1"),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, path in enumerate(files)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    # THEN each finished every task
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert f"{ids} tasks: {ids} succeeded, 0 failed, 0 skipped" in stdout
    # AND each of the 2,000 files holds one whole valid sum, with no temporary left
    names = os.listdir(results)
    assert sorted(names) == sorted(f"r{i}.out" for i in range(ids))
    wrong = [n for n in names if (results / n).read_text() not in valid]
    assert wrong == []
    assert set(files_outside(tmp_path, results)) == set(files)
    reliability_row(
        Row(
            "duplicate delivery",
            "local runner",
            f"{runs} runners at once on the same {ids:,} ids with different numbers",
            cases=1,
            messages=ids,
            results=ids,
            duplicates=ids * (runs - 1),
            seconds=time.monotonic() - started,
            note="every file ends whole and equal to one of the runs' sums",
        )
    )


# --- AWS ----------------------------------------------------------------------------------


def sqs_event(*records: tuple[bytes, str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"handle-{index}",
                "body": body.decode(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
            }
            for index, (body, message_id) in enumerate(records)
        ]
    }


@pytest.mark.integration
def test_aws_handler_duplicates(
    aws_env: str, bucket: str, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN the handler writing to S3 on moto; each delivery is its own invocation
    s3 = boto3.session.Session().client(
        "s3", region_name=REGION, endpoint_url=aws_env, config=default_client_config()
    )
    store = S3ResultStore(bucket, PREFIX, client=s3)

    def deliver(body: bytes, message_id: str) -> None:
        assert handle_event(sqs_event((body, message_id)), None, store) == {"batchItemFailures": []}

    def names() -> list[str]:
        keys = all_keys(s3, bucket)
        assert all(key.startswith(PREFIX + "/") for key in keys)
        return [key.removeprefix(PREFIX + "/") for key in keys]

    target = Target("aws", deliver, names, lambda n: read_object(s3, bucket, f"{PREFIX}/{n}"))
    started = time.monotonic()
    # WHEN every scenario runs
    tally = run_scenarios(target)
    # AND the same message arrives 16 times in ONE batch (the handler's own thread pool)
    body, out = task("dup-in-one-batch", 7, 8), "15"
    response = handle_event(sqs_event(*[(body, "same-message")] * AT_ONCE), None, store)
    # THEN none is reported for retry, and the one object holds the sum
    assert response == {"batchItemFailures": []}
    assert read_object(s3, bucket, f"{PREFIX}/dup-in-one-batch.out") == out.encode()
    tally.expected["dup-in-one-batch.out"] = {out}
    tally.deliveries += AT_ONCE
    tally.results += 1
    assert sorted(names()) == sorted(tally.expected)
    save(tally, "aws", started, reliability_row, f"; {AT_ONCE} copies in one SQS batch")


# --- GCP ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_gcp_function_duplicates(
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    new_bucket: Any,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the function in functions-framework (1 worker, 4 threads), a bucket of its own
    bucket = gcs_client.bucket(new_bucket.name)
    session_local = threading.local()

    def read(name: str) -> bytes | None:
        try:
            return bytes(bucket.blob(f"{PREFIX}/{name}").download_as_bytes())
        except NotFound:
            return None

    def names() -> list[str]:
        found = [blob.name for blob in gcs_client.list_blobs(new_bucket.name)]
        assert all(name.startswith(PREFIX + "/") for name in found)
        return [name.removeprefix(PREFIX + "/") for name in found]

    with function_running(
        function_source, gcs_emulator, new_bucket.name, PREFIX, tmp_path / "function.log"
    ) as server:

        def deliver(body: bytes, message_id: str) -> None:
            # a raw push, as the stack's push subscription sends it (one connection per thread)
            session = getattr(session_local, "session", None) or requests.Session()
            session_local.session = session
            push: dict[str, Any] = {
                "message": {
                    "data": base64.b64encode(body).decode(),
                    "messageId": message_id,
                    "publishTime": "2026-11-27T12:00:00.000Z",
                },
                "subscription": "projects/example-project/subscriptions/adder-tasks-push",
                "deliveryAttempt": 1,
            }
            response = session.post(server.url, json=push, timeout=60)
            assert response.status_code == 200, response.text[:300]

        started = time.monotonic()
        # WHEN every scenario runs (concurrent deliveries are concurrent HTTP POSTs)
        tally = run_scenarios(Target("gcp", deliver, names, read))
    save(tally, "gcp", started, reliability_row, " (HTTP POSTs; the server runs 4 threads)")


# --- Azure --------------------------------------------------------------------------------


@pytest.mark.integration
def test_azure_function_duplicates(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the registered function, writing to Azurite
    user_function: Callable[[Any], object] = registered_function().get_user_function()
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def deliver(body: bytes, message_id: str) -> None:
        # Service Bus redelivers with the same message id and a growing delivery count
        with lock:
            counts[message_id] = counts.get(message_id, 0) + 1
            count = counts[message_id]
        message = make_message(body, message_id=message_id, delivery_count=count)
        assert user_function(message) is None

    def read(name: str) -> bytes | None:
        blob = container.get_blob_client(f"{PREFIX}/{name}")
        if not blob.exists():
            return None
        data: bytes = blob.download_blob().readall()
        return data

    def names() -> list[str]:
        found = list(container.list_blob_names())
        assert all(name.startswith(PREFIX + "/") for name in found)
        return [name.removeprefix(PREFIX + "/") for name in found]

    started = time.monotonic()
    with app_settings_for(monkeypatch, azurite.connection_string, container.container_name, PREFIX):
        # WHEN every scenario runs (concurrent deliveries are concurrent invocations)
        tally = run_scenarios(Target("azure", deliver, names, read))
    save(tally, "azure", started, reliability_row)


def test_variants_differ_in_every_digit() -> None:
    # The race check relies on it: a result spliced from two writes matches no valid sum.
    sums = [variant("x", k)[1] for k in range(1, VARIANTS + 1)]
    assert len({len(s) for s in sums}) == 1
    for a in sums:
        for b in sums:
            if a != b:
                assert all(x != y for x, y in zip(a, b, strict=True))
