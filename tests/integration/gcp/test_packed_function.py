"""The packed layout in the real functions-framework server, writing to the GCS emulator.

Pub/Sub pushes one message per request; in the packed layout the requests one instance holds
at once are written as one pack. The server here runs 4 threads, so a pack holds up to 4
requests; with a window far longer than the test needs, a pack closes only when it is full,
so which requests share a pack is known without measuring time.
"""

from __future__ import annotations

import base64
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import requests

from core.packing import PACK_CONTENT_TYPE
from tests.integration.gcp.packed import (
    SERVER_THREADS,
    packed_function_running,
    packs,
    unpacked_files,
)
from tools.fault_proxy import FaultProxy, FaultRule

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.integration.gcp.conftest import FunctionServer

pytestmark = pytest.mark.integration

PREFIX = "results/packed-run"
LONG_WINDOW_MS = 10_000
"""Longer than any test here takes to send a pack's requests: packs close when full."""


def push(body: bytes | None, message_id: str, attempt: int = 1) -> dict[str, Any]:
    """A raw push of a push subscription with a dead-letter policy (no data: ``None``)."""
    message: dict[str, Any] = {"messageId": message_id, "attributes": {"k": "v"}}
    if body is not None:
        message["data"] = base64.b64encode(body).decode()
    return {
        "message": message,
        "subscription": "projects/example-project/subscriptions/adder-tasks-push",
        "deliveryAttempt": attempt,
    }


def good(task_id: str, number: int) -> dict[str, Any]:
    """The push of a good task (its message id is the task id)."""
    task = f'{{"id": "{task_id}", "data": {{"num1": {number}, "num2": 1}}}}'
    return push(task.encode(), task_id)


def workload(run: str) -> list[dict[str, Any]]:
    """24 pushes (a multiple of 4): good tasks, bad ones, a non-JSON task, a message without
    data, and an id the default layout names by its hash."""
    bodies: list[bytes | None] = [
        f'{{"id": "{run}-{i}", "data": {{"num1": {i}, "num2": 0.5}}}}'.encode() for i in range(18)
    ]
    bodies += [
        f'{{"id": "{run}-bad", "data": {{"num1": "x", "num2": 1}}}}'.encode(),
        f'{{"id": "{run}-missing", "data": {{"num1": 1}}}}'.encode(),
        f"not json {run}".encode(),
        None,
        b'{"id": "../escape", "data": {"num1": 1, "num2": 2}}',
        f'{{"id": "{run}-big", "data": {{"num1": 1e400, "num2": 1}}}}'.encode(),
    ]
    return [push(body, f"{run}-m{i}") for i, body in enumerate(bodies)]


def post_all(url: str, bodies: list[dict[str, Any]], workers: int = 8) -> list[int]:
    with ThreadPoolExecutor(workers) as pool:
        return list(
            pool.map(lambda body: requests.post(url, json=body, timeout=90).status_code, bodies)
        )


@pytest.fixture(scope="module")
def packed_server(
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FunctionServer]:
    """The function in the packed layout, with a bucket of its own."""
    bucket = gcs_client.create_bucket(f"packed-{uuid.uuid4().hex[:12]}")
    log = tmp_path_factory.mktemp("packed-function") / "stdout.log"
    with packed_function_running(
        function_source, gcs_emulator, bucket.name, PREFIX, log, max_wait_ms=LONG_WINDOW_MS
    ) as server:
        yield server


def test_concurrent_pushes_become_packs_that_unpack_to_the_default_layouts_files(
    packed_server: FunctionServer, function_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN 24 pushes (good and bad tasks, a message without data), 8 in flight at a time
    run = uuid.uuid4().hex[:10]
    bodies = workload(run)
    # WHEN they are pushed to the packed function and to the default one
    packed_statuses = post_all(packed_server.url, bodies)
    default_statuses = post_all(function_server.url, bodies)
    # THEN every push is acknowledged by both
    assert packed_statuses == [200] * len(bodies) == default_statuses
    # AND the packed function wrote full packs only: 4 requests each (its 4 threads)
    found = packs(gcs_client, packed_server.bucket, PREFIX)
    assert sorted(len(records) for records in found.values()) == [SERVER_THREADS] * 6
    for name in found:
        blob = gcs_client.bucket(packed_server.bucket).get_blob(name)
        assert blob.content_type == PACK_CONTENT_TYPE
    # AND the packs unpack to exactly the files the default layout wrote, byte for byte
    files = unpacked_files(gcs_client, packed_server.bucket, PREFIX)
    assert len(files) == len(bodies)
    default = {
        name: gcs_client.bucket(function_server.bucket)
        .blob(f"{function_server.prefix}/{name}")
        .download_as_bytes()
        for name in files
    }
    assert files == default
    assert files[f"{run}-3.out"] == b"3.5"
    assert json.loads(files[f"{run}-bad.err"])["error"] == "invalid_number"
    # AND each request logged its own line, as in the default layout
    for index, body in enumerate(bodies):
        entry = packed_server.entry_for(body["message"]["messageId"])
        assert entry["outcome"] in {"succeeded", "rejected"}, index
        assert entry["delivery_attempt"] == 1


def test_a_redelivered_batch_rewrites_the_same_pack(
    packed_server: FunctionServer, gcs_client: Any
) -> None:
    # GIVEN 4 pushes delivered together, then delivered together again (at least once)
    run = uuid.uuid4().hex[:10]
    bodies = [good(f"{run}-{i}", i) for i in range(4)]
    before = set(packs(gcs_client, packed_server.bucket, PREFIX))
    # WHEN both deliveries are handled
    assert post_all(packed_server.url, bodies, workers=4) == [200] * 4
    first = set(packs(gcs_client, packed_server.bucket, PREFIX)) - before
    assert post_all(packed_server.url, bodies, workers=4) == [200] * 4
    # THEN the second wrote the same pack (same name, same bytes): one pack for the 4 tasks
    after = set(packs(gcs_client, packed_server.bucket, PREFIX)) - before
    assert len(first) == 1 and after == first


def test_a_failed_pack_write_answers_500_to_every_request_of_its_batch(
    gcs_emulator: str, gcs_client: Any, function_source: Path, tmp_path: Path
) -> None:
    # GIVEN the packed function behind a fault proxy that answers the first upload with a 403
    # (an error the SDK does not retry: it reaches the function)
    bucket = gcs_client.create_bucket(f"packed-fault-{uuid.uuid4().hex[:12]}")
    first_upload = FaultRule(
        "POST",
        rf"^/upload/storage/v1/b/({bucket.name})/o\?",
        status=403,
        mode="first_n_per_key",
        n=1,
        body=b'{"error": {"code": 403, "message": "injected: forbidden"}}',
    )
    run = uuid.uuid4().hex[:10]
    bodies = [good(f"{run}-{i}", i) for i in range(3)] + [push(b"not json", f"{run}-bad")]
    with (
        FaultProxy(gcs_emulator, [first_upload]) as proxy,
        packed_function_running(
            function_source,
            proxy.url,
            bucket.name,
            PREFIX,
            tmp_path / "function.log",
            max_wait_ms=LONG_WINDOW_MS,
        ) as server,
    ):
        # WHEN 4 requests arrive together (one batch) and its pack write fails
        statuses = post_all(server.url, bodies, workers=4)
        # THEN every request of the batch is answered 500, the bad task's too: its error
        # record was in the lost pack, so Pub/Sub must deliver it again
        assert statuses == [500] * 4
        assert first_upload.injected == 1
        assert list(gcs_client.list_blobs(bucket.name)) == []
        entries = [server.entry_for(body["message"]["messageId"]) for body in bodies]
        assert {(e["severity"], e["outcome"], e["error_type"]) for e in entries} == {
            ("ERROR", "retry", "StoreWriteError")
        }
        assert all("403" in entry["reason"] for entry in entries)
        # WHEN Pub/Sub delivers them again
        again = post_all(server.url, [{**body, "deliveryAttempt": 2} for body in bodies], 4)
    # THEN they are acknowledged, and one pack holds all 4 records
    assert again == [200] * 4
    [records] = packs(gcs_client, bucket.name, PREFIX).values()
    names = sorted(record.file_name for record in records)
    assert names[:3] == [f"{run}-{i}.out" for i in range(3)]
    assert names[3].startswith("invalid-") and names[3].endswith(".err")
