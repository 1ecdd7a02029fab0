"""The Lambda handler against S3 on moto, in both results layouts, with faults injected at
botocore's transport seam."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.s3_store import S3ResultStore
from aws_lambda.sandbox.esm import LambdaContext
from core.packing import PACK_CONTENT_TYPE, ResultsLayout, is_pack_name, unpack
from tests.conftest import load_event
from tests.integration.aws.conftest import all_keys, read_object
from tools.aws_faults import S3PutFaults

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {"messageId": f"m{i}", "body": body, "attributes": {"ApproximateReceiveCount": "1"}}
            for i, body in enumerate(bodies)
        ]
    }


def test_real_handler_reads_its_settings_from_the_environment(
    bucket: str, s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the environment Terraform sets, and a fresh container
    monkeypatch.setenv("RESULTS_BUCKET", bucket)
    monkeypatch.setenv("RESULTS_PREFIX", "results")
    monkeypatch.setattr(lambda_module, "_store", None)
    # WHEN Lambda calls the handler with the sample event
    response = lambda_module.lambda_handler(load_event("sqs_batch.json"), LambdaContext(30_000))
    # THEN results and the error record are in the bucket under the prefix, nothing retried
    assert response == {"batchItemFailures": []}
    assert read_object(s3, bucket, "results/test-task.out") == b"100"
    assert read_object(s3, bucket, "results/flat.out") == b"0.3"
    record = read_object(s3, bucket, "results/bad-number.err")
    assert record is not None and json.loads(record)["error"] == "invalid_number"
    assert all(key.startswith("results/") for key in all_keys(s3, bucket))


def test_mixed_batch_reports_only_the_failing_write(s3: S3Client, bucket: str) -> None:
    # GIVEN S3 answers 500 to every attempt to write "stuck.out"
    faults = S3PutFaults(s3, lambda key, attempt: key.endswith("stuck.out"))
    store = S3ResultStore(bucket, "r", client=s3)
    event = sqs_event(
        '{"id": "good", "data": {"num1": 2, "num2": 3}}',
        '{"id": "stuck", "data": {"num1": 2, "num2": 3}}',
        '{"id": "bad", "data": {"num1": null, "num2": 3}}',
        "{not json",
    )
    # WHEN the batch is handled
    response = lambda_module.handle_event(event, LambdaContext(30_000), store=store)
    # THEN only the stuck record returns to the queue, after botocore's own 3 attempts
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert faults.attempts["r/stuck.out"] == 3
    assert read_object(s3, bucket, "r/good.out") == b"5"
    assert read_object(s3, bucket, "r/bad.err") is not None
    assert len([k for k in all_keys(s3, bucket) if k.startswith("r/invalid-")]) == 1


def test_transient_fault_is_absorbed_by_the_sdk_retry(s3: S3Client, bucket: str) -> None:
    # GIVEN S3 fails the first attempt of every write
    faults = S3PutFaults(s3, lambda key, attempt: attempt == 1)
    store = S3ResultStore(bucket, client=s3)
    # WHEN a batch is handled / THEN botocore's retry succeeds and nothing is reported
    response = lambda_module.handle_event(
        sqs_event(*[f'{{"id": "t{i}", "data": {{"num1": {i}, "num2": 1}}}}' for i in range(20)]),
        LambdaContext(30_000),
        store=store,
    )
    assert response == {"batchItemFailures": []}
    assert faults.injected == 20
    assert read_object(s3, bucket, "t19.out") == b"20"


# --- the packed layout (RESULTS_LAYOUT=packed) ---------------------------------------------

MIXED_BODIES = (
    '{"id": "p-good", "data": {"num1": 2, "num2": 3}}',
    '{"id": "p-big", "data": {"num1": 1e400, "num2": -1}}',
    '{"id": "p-bad", "data": {"num1": null, "num2": 3}}',
    "{not json",
    '{"id": "caf\\u00e9", "data": {"num1": 0.1, "num2": 0.2}}',
)


def packs(s3: S3Client, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every pack under ``{prefix}/packed/``, by key."""
    keys = [key for key in all_keys(s3, bucket) if key.startswith(f"{prefix}/packed/")]
    return {key: read_object(s3, bucket, key) or b"" for key in keys}


def test_a_packed_batch_is_one_object_that_unpacks_to_the_per_task_files(
    s3: S3Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the same batch for a per_task function and for a packed one (from the environment)
    batch = sqs_event(*MIXED_BODIES)
    per_task = S3ResultStore(bucket, "default", client=s3)
    assert lambda_module.handle_event(batch, LambdaContext(30_000), store=per_task) == {
        "batchItemFailures": []
    }
    monkeypatch.setenv("RESULTS_BUCKET", bucket)
    monkeypatch.setenv("RESULTS_PREFIX", "packed-job")
    monkeypatch.setenv("RESULTS_LAYOUT", "packed")
    monkeypatch.setattr(lambda_module, "_store", None)
    monkeypatch.setattr(lambda_module, "_layout", None)
    # WHEN Lambda calls the packed function with it
    response = lambda_module.lambda_handler(batch, LambdaContext(30_000))
    # THEN nothing is retried and the packed prefix holds exactly one object, a pack
    assert response == {"batchItemFailures": []}
    keys = [key for key in all_keys(s3, bucket) if key.startswith("packed-job/")]
    [key] = keys
    assert key.startswith("packed-job/packed/") and is_pack_name(key.rsplit("/", 1)[1])
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == PACK_CONTENT_TYPE
    # AND unpacked, it is byte for byte the files the per_task function wrote
    unpacked = {r.file_name: r.content for r in unpack(read_object(s3, bucket, key) or b"")}
    default = {
        k.removeprefix("default/"): read_object(s3, bucket, k)
        for k in all_keys(s3, bucket)
        if k.startswith("default/")
    }
    assert unpacked == default
    assert len(unpacked) == len(MIXED_BODIES)


def test_a_pack_s3_refuses_sends_the_whole_batch_back(s3: S3Client, bucket: str) -> None:
    # GIVEN S3 answers 500 to every attempt to write a pack
    faults = S3PutFaults(s3, lambda key, attempt: "/packed/" in key)
    store = S3ResultStore(bucket, "r", client=s3)
    # WHEN a packed batch is handled
    response = lambda_module.handle_event(
        sqs_event(*MIXED_BODIES), LambdaContext(30_000), store=store, layout=ResultsLayout.PACKED
    )
    # THEN every record returns to the queue, after botocore's own 3 attempts of the one pack
    assert response == {
        "batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(len(MIXED_BODIES))]
    }
    assert list(faults.attempts.values()) == [3]
    assert all_keys(s3, bucket) == []


def test_a_transient_fault_on_a_pack_is_absorbed_by_the_sdk_retry(
    s3: S3Client, bucket: str
) -> None:
    # GIVEN S3 fails the first attempt of every write
    faults = S3PutFaults(s3, lambda key, attempt: attempt == 1)
    store = S3ResultStore(bucket, "r", client=s3)
    tasks = [f'{{"id": "t{i}", "data": {{"num1": {i}, "num2": 1}}}}' for i in range(20)]
    # WHEN a packed batch of 20 is handled
    response = lambda_module.handle_event(
        sqs_event(*tasks), LambdaContext(30_000), store=store, layout=ResultsLayout.PACKED
    )
    # THEN botocore's retry wrote the one pack: one fault, one object, nothing retried
    assert response == {"batchItemFailures": []}
    assert faults.injected == 1
    [(_, data)] = packs(s3, bucket, "r").items()
    assert {r.file_name: r.content for r in unpack(data)} == {
        f"t{i}.out": str(i + 1).encode() for i in range(20)
    }
