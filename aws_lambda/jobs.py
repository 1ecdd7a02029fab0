"""The AWS settings for ``adder submit|watch|fetch|redrive|status aws``, and the opening of
its backend (SQS and S3, :mod:`aws_lambda.job_backend`).

Importing this module imports no SDK: boto3 and the backend are imported by the functions
that build the clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import ConfigError, ProviderUnavailableError
from core.ops.problems import one_line
from core.ops.target import Setting

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from core.ops.backend import JobBackend
    from core.ops.target import Target

SETTINGS = (
    Setting(
        "queue_url", "the SQS task queue: URL or name", output="queue_url", config="queue_name"
    ),
    Setting(
        "dead_letter_queue_url",
        "the dead-letter queue's URL (default: from the task queue's redrive policy)",
        output="dead_letter_queue_url",
        config="config.dead_letter_queue",
    ),
    Setting("bucket", "the results bucket", output="results_bucket", config="result_bucket"),
    Setting("prefix", "the results prefix", output="results_prefix", config="result_prefix"),
    Setting(
        "region",
        "the AWS region ($AWS_REGION, $AWS_DEFAULT_REGION)",
        output="region",
        config="config.region",
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
    ),
    Setting(
        "endpoint_url",
        "another endpoint, e.g. a local moto server ($AWS_ENDPOINT_URL)",
        output="endpoint_url",  # only `adder sandbox aws`'s copy of the stack has it
        config="config.endpoint_url",
        env=("AWS_ENDPOINT_URL",),
    ),
)


def ways(setting: str) -> str:
    """Every way to give ``setting`` (:meth:`core.ops.target.Setting.ways`), for a line that
    says it is missing or wrong."""
    return next(s for s in SETTINGS if s.name == setting).ways(environment=False)


MAX_POOL_CONNECTIONS = 32
"""Connections per client, and so batches the backend has in flight at once."""
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 20
"""Above ReceiveMessage's long poll (1 s) and a slow S3 read of a record."""
SDK_ATTEMPTS = 3
"""Attempts of one call in all (botocore's ``total_max_attempts``, what ``max_attempts`` means
in an AWS config file; botocore's own ``max_attempts`` would count retries only, one more)."""


def make_clients(region: str | None, endpoint_url: str | None) -> tuple[SQSClient, S3Client]:
    """SQS and S3 clients sharing one session: standard retries (3 attempts), 3 s connect and
    20 s read timeouts, 32 pooled connections; a ConfigError when no region or no credentials
    can be found."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, NoCredentialsError
    except ImportError:
        from core.clouds import CLOUDS

        raise ProviderUnavailableError(
            f"the AWS commands need boto3: {CLOUDS['aws'].install_hint}"
        ) from None
    from aws_lambda.job_errors import NO_REGION, aws_error, aws_resource

    config = Config(
        retries={"mode": "standard", "total_max_attempts": SDK_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )
    try:
        session = boto3.session.Session(region_name=region)
        region = session.region_name
        if not region:
            raise ConfigError(NO_REGION)
        if session.get_credentials() is None:
            raise NoCredentialsError  # worded below, as when a call finds none
        sqs = session.client("sqs", config=config, endpoint_url=endpoint_url)
        s3 = session.client("s3", config=config, endpoint_url=endpoint_url)
    except BotoCoreError as exc:
        account = aws_resource("AWS", "", "", region=region, endpoint=endpoint_url)
        raise aws_error(exc, account) from exc
    except ValueError as exc:  # botocore's "Invalid endpoint: ..."
        raise ConfigError(
            f"{one_line(exc)}: give --endpoint-url as a URL, e.g. http://127.0.0.1:5000"
        ) from exc
    return sqs, s3


def open_backend(target: Target, command: str) -> JobBackend:
    """The SQS + S3 backend of ``target``, checked for what ``command`` needs (boto3 is
    imported here): submit needs the queue; watch and fetch the bucket (and watch the
    dead-letter queue when one is found); redrive the queue and its dead-letter queue; status
    shows whatever is given."""
    what = f"adder {command} aws"
    if command in {"submit", "redrive"}:
        target.require("queue_url", SETTINGS, what)
    if command in {"watch", "fetch"}:
        target.require("bucket", SETTINGS, what)
    if command == "status" and not any(
        target.get(name) for name in ("queue_url", "dead_letter_queue_url", "bucket")
    ):
        raise ConfigError(
            f"{what} needs a queue or a bucket: give --queue-url and/or --bucket, --stack DIR or"
            " --config FILE"
        )
    sqs, s3 = make_clients(target.get("region"), target.get("endpoint_url"))
    from aws_lambda.job_backend import AwsJobBackend

    backend = AwsJobBackend(
        sqs,
        s3,
        queue_url=target.get("queue_url"),
        dead_letter_queue_url=target.get("dead_letter_queue_url"),
        bucket=target.get("bucket"),
        prefix=target.get("prefix") or "",
        owns_clients=True,
    )
    try:
        backend.check(command)
    except BaseException:
        backend.close()
        raise
    return backend
