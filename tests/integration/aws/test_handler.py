"""The Lambda handler against S3 on moto, with faults injected at botocore's transport seam."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.s3_store import S3ResultStore
from aws_lambda.sandbox.esm import LambdaContext
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
