"""The sandbox's packaged function in the packed layout (``adder sandbox aws --var
results_layout=packed``): one pack per batch, and the fail-writes file still works."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aws_lambda.sandbox.runtime import ZipRuntime
from core.clouds import CLOUDS
from core.packaging import build_package
from core.packing import unpack
from tests.integration.aws.conftest import all_keys, read_object

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


def test_the_packed_function_fails_the_batch_whose_pack_holds_a_matching_key(
    tmp_path: Path, aws_env: str, s3: S3Client, bucket: str
) -> None:
    # GIVEN the packaged handler with RESULTS_LAYOUT=packed, and a fail-writes file naming
    # "doomed" (a per-task key: packs are named by their hash)
    zip_path = build_package(CLOUDS["aws"], tmp_path / "aws_lambda.zip")
    fail = tmp_path / "fail-writes"
    fail.write_text("results/doomed\\.out\n")
    env = {
        "RESULTS_BUCKET": bucket,
        "RESULTS_PREFIX": "results",
        "RESULTS_LAYOUT": "packed",
        "AWS_ENDPOINT_URL": aws_env,
    }
    runtime = ZipRuntime(
        zip_path, "aws_lambda.handler.lambda_handler", tmp_path, env, fail_writes=fail
    )
    fine = {"messageId": "m1", "body": '{"id": "fine", "data": {"num1": 1, "num2": 2}}'}
    doomed = {"messageId": "m2", "body": '{"id": "doomed", "data": {"num1": 1, "num2": 1}}'}
    try:
        # WHEN a batch holding the matching task is invoked / THEN the whole batch is retried
        response = runtime.invoke({"Records": [fine, doomed]})
        assert response == {
            "batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]
        }
        assert all_keys(s3, bucket) == []
        # AND a batch without it is written, as one pack
        assert runtime.invoke({"Records": [fine]}) == {"batchItemFailures": []}
        # WHEN the file is removed and the first batch comes again / THEN it is written too
        fail.unlink()
        assert runtime.invoke({"Records": [fine, doomed]}) == {"batchItemFailures": []}
    finally:
        runtime.close()
    keys = all_keys(s3, bucket)
    assert len(keys) == 2 and all(key.startswith("results/packed/") for key in keys)
    files = {
        r.file_name: r.content for key in keys for r in unpack(read_object(s3, bucket, key) or b"")
    }
    assert files == {"fine.out": b"3", "doomed.out": b"2"}
