"""A real moto server (HTTP) for the AWS tests, and clients and resources on it."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import TYPE_CHECKING

import boto3
import pytest

from aws_lambda.sandbox import moto_server
from tests.conftest import REPO_ROOT
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``moto.server`` for the whole session; every AWS call of the tests goes to it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with running_server(moto_server.command(port), f"{url}/moto-api/", log=log, cwd=REPO_ROOT):
        yield url


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and anything that reads the environment) at the moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


def reset_moto(endpoint: str) -> None:
    """Forget every resource (moto's own reset API)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def s3(aws_env: str) -> S3Client:
    return boto3.session.Session().client("s3", region_name=REGION, endpoint_url=aws_env)


@pytest.fixture
def sqs(aws_env: str) -> SQSClient:
    return boto3.session.Session().client("sqs", region_name=REGION, endpoint_url=aws_env)


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"results-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


class Queues:
    """A task queue with a redrive policy onto its dead-letter queue."""

    def __init__(self, sqs: SQSClient, visibility_timeout: int, max_receive_count: int) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.dlq_url = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        self.url = sqs.create_queue(
            QueueName=f"tasks-{suffix}",
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps(policy),
            },
        )["QueueUrl"]
        self.max_receive_count = max_receive_count


@pytest.fixture
def queues(sqs: SQSClient) -> Queues:
    return Queues(sqs, visibility_timeout=1, max_receive_count=3)


def read_object(s3: S3Client, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def all_keys(s3: S3Client, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys
