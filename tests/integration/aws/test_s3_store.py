"""The results-store contract against S3 on a real moto server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest

from aws_lambda.s3_store import S3ResultStore, default_client_config
from core.errors import StoreWriteError
from tests.integration.aws.conftest import read_object
from tests.store_contract import Reader, ResultStoreContract
from tools.servers import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


class TestS3Store(ResultStoreContract):
    @pytest.fixture
    def store(self, s3: S3Client, bucket: str) -> S3ResultStore:
        return S3ResultStore(bucket, "runs/2026", client=s3)

    @pytest.fixture
    def read(self, s3: S3Client, bucket: str) -> Reader:
        return lambda name: read_object(s3, bucket, f"runs/2026/{name}")

    @pytest.fixture
    def broken_store(self, aws_env: str) -> S3ResultStore:
        # the production client settings, pointed at a loopback port where nothing listens
        client = boto3.session.Session().client(
            "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", config=default_client_config()
        )
        return S3ResultStore("any-bucket", "runs/2026", client=client)


def test_content_types(s3: S3Client, bucket: str) -> None:
    S3ResultStore(bucket, "p", client=s3).write_result("t", "1")
    assert s3.head_object(Bucket=bucket, Key="p/t.out")["ContentType"] == "text/plain"


def test_missing_bucket_is_a_transient_store_error(s3: S3Client) -> None:
    store = S3ResultStore("no-such-bucket-anywhere", client=s3)
    with pytest.raises(StoreWriteError, match="no-such-bucket-anywhere"):
        store.write_result("t", "1")


def test_client_is_created_lazily_once_from_the_environment(aws_env: str, bucket: str) -> None:
    # GIVEN a store with no client injected (as the Lambda container builds it)
    store = S3ResultStore(bucket)
    # WHEN it writes twice / THEN one client, built from the environment, served both
    store.write_result("a", "1")
    first = store.client
    store.write_result("b", "2")
    assert store.client is first
    config = first.meta.config
    assert getattr(config, "retries")["mode"] == "standard"  # noqa: B009 - botocore sets it dynamically
    assert getattr(config, "max_pool_connections") >= 32  # noqa: B009
