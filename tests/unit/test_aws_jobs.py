"""The AWS job backend without a server: botocore's errors translated into one line each,
SQS's body rules, and what each command requires before any client is built."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from botocore import exceptions as bx

from aws_lambda.jobs import SETTINGS, Resource, aws_error, make_clients, open_backend
from aws_lambda.jobs import unsendable_reason as unsendable
from core.errors import CloudUnavailableError, ConfigError
from core.ops.target import Target
from tests.conftest import REPO_ROOT

QUEUE = Resource("queue", "https://sqs.eu-west-1.amazonaws.com/1/tasks", "--queue-url", "sqs")
BUCKET = Resource("bucket", "results", "--bucket", "s3")


def client_error(code: str, status: int, operation: str = "SendMessageBatch", **extra: Any) -> Any:
    """A ClientError as botocore raises it from a parsed error response."""
    response = {
        "Error": {"Code": code, "Message": f"the {code} message", **extra},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bx.ClientError(response, operation)  # type: ignore[arg-type]


def translate(exc: Exception, resource: Resource = QUEUE) -> ConfigError | CloudUnavailableError:
    error = aws_error(exc, resource, region="eu-west-1")
    assert "\n" not in str(error)
    return error


def test_no_region_names_the_flag_and_the_variable() -> None:
    error = translate(bx.NoRegionError())
    assert isinstance(error, ConfigError)
    assert str(error) == "no AWS region: give --region or set AWS_REGION"


@pytest.mark.parametrize(
    "exc",
    [
        bx.NoCredentialsError(),
        bx.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        bx.SSOTokenLoadError(error_msg="token expired"),
        client_error("ExpiredToken", 400),
        client_error("ExpiredTokenException", 400),
        client_error("InvalidClientTokenId", 403),
        client_error("UnrecognizedClientException", 400),
        client_error("SignatureDoesNotMatch", 403),
        client_error("InvalidAccessKeyId", 403, "ListObjectsV2"),
    ],
    ids=lambda exc: type(exc).__name__ + ":" + str(getattr(exc, "response", {}).get("Error", "")),
)
def test_unusable_credentials_say_how_to_get_some(exc: Exception) -> None:
    error = translate(exc)
    assert isinstance(error, ConfigError)
    assert str(error).startswith("no usable AWS credentials")
    assert "aws configure" in str(error) and "AWS_PROFILE" in str(error)


def test_an_unknown_profile_names_aws_profile() -> None:
    error = translate(bx.ProfileNotFound(profile="prod"))
    assert isinstance(error, ConfigError)
    assert "prod" in str(error) and "AWS_PROFILE" in str(error)


@pytest.mark.parametrize(
    ("exc", "resource", "expected"),
    [
        (
            client_error(
                "AWS.SimpleQueueService.NonExistentQueue", 400, QueryErrorCode="QueueDoesNotExist"
            ),
            QUEUE,
            f"no queue {QUEUE.name} in region eu-west-1: check --queue-url / the stack",
        ),
        (
            client_error("QueueDoesNotExist", 400, "GetQueueUrl"),
            QUEUE,
            f"no queue {QUEUE.name} in region eu-west-1: check --queue-url / the stack",
        ),
        (
            client_error("NoSuchBucket", 404, "ListObjectsV2"),
            BUCKET,
            "no bucket results in region eu-west-1: check --bucket / the stack",
        ),
    ],
)
def test_a_missing_queue_or_bucket_names_it_and_the_flag(
    exc: Exception, resource: Resource, expected: str
) -> None:
    error = translate(exc, resource)
    assert isinstance(error, ConfigError)
    assert str(error) == expected


@pytest.mark.parametrize(
    ("exc", "resource", "permission"),
    [
        (client_error("AccessDenied", 403), QUEUE, "sqs:SendMessage"),
        (client_error("AccessDeniedException", 400, "ReceiveMessage"), QUEUE, "sqs:ReceiveMessage"),
        (client_error("AccessDenied", 403, "ListObjectsV2"), BUCKET, "s3:ListBucket"),
        (client_error("AccessDenied", 403, "GetObject"), BUCKET, "s3:GetObject"),
        (client_error("403", 403, "DeleteMessageBatch"), QUEUE, "sqs:DeleteMessage"),
    ],
)
def test_access_denied_names_the_resource_and_the_permission(
    exc: Exception, resource: Resource, permission: str
) -> None:
    error = translate(exc, resource)
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"access denied to {resource.kind} {resource.name}: ")
    assert f"the caller needs {permission} on it" in str(error)


def test_an_error_code_inside_an_xml_message_is_read() -> None:
    # GIVEN a 403 whose code is only the status, the service's XML error document as message
    # (what moto's SQS answers in the JSON protocol)
    xml = (
        '<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>'
        "<Message>The security token included in the request is invalid.</Message>"
        "</Error></Errors></ErrorResponse>"
    )
    response = {
        "Error": {"Code": "403", "Message": xml},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    error = translate(bx.ClientError(response, "GetQueueAttributes"))  # type: ignore[arg-type]
    # THEN it is a credentials error, not an access denied one
    assert str(error).startswith("no usable AWS credentials (InvalidClientTokenId)")


@pytest.mark.parametrize(
    "exc",
    [
        bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/1/tasks?x=1"),
        bx.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9/"),
    ],
)
def test_an_unreachable_endpoint_names_it(exc: Exception) -> None:
    error = translate(exc)
    assert isinstance(error, ConfigError)
    assert str(error) == "cannot reach http://127.0.0.1:9: check --endpoint-url / network"


def test_an_unreachable_custom_endpoint_is_named_as_configured() -> None:
    exc = bx.EndpointConnectionError(endpoint_url="http://localhost:4566/q")
    error = aws_error(exc, QUEUE, endpoint="http://localhost:4566/")
    assert str(error) == "cannot reach http://localhost:4566/: check --endpoint-url / network"


@pytest.mark.parametrize(
    "exc",
    [
        client_error("ThrottlingException", 400),
        client_error("RequestThrottled", 403),
        client_error("SlowDown", 503, "GetObject"),
        client_error("InternalError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("AnythingElse", 502),
        client_error("TooManyRequests", 429),
        bx.ReadTimeoutError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
        bx.ConnectionClosedError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"),
    ],
    ids=str,
)
def test_throttling_5xx_and_read_timeouts_may_work_next_time(exc: Exception) -> None:
    assert isinstance(translate(exc), CloudUnavailableError)


def test_any_other_refusal_is_a_configuration_error_with_the_code() -> None:
    error = translate(client_error("KMS.DisabledException", 400))
    assert isinstance(error, ConfigError)
    assert "SendMessageBatch on queue" in str(error) and "KMS.DisabledException" in str(error)


# --- what SQS can carry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'"' + b"x" * 262_144, "over SQS's limit"),
        (b"\xff", "not valid UTF-8"),
        ('"\ud800"'.encode("utf-8", "surrogatepass"), "not valid UTF-8"),
        (b"", "empty"),
        (b'"\x00"', "'\\x00' at character 1"),
        (b'"\x1f"', "'\\x1f'"),
        ('"\ufffe"'.encode(), "'\\ufffe'"),
    ],
)
def test_bodies_sqs_refuses(body: bytes, reason: str) -> None:
    found = unsendable(body)
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "body",
    [
        b"x" * 262_144,
        b'{"id": "\xc3\xa9", "data": {"num1": 1e400, "num2": 0.1}}',
        b"\t\r\n ",
        '"\U0001f600 \ue000"'.encode(),
    ],
)
def test_bodies_sqs_carries(body: bytes) -> None:
    assert unsendable(body) is None


# --- what each command requires -------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "values", "message"),
    [
        ("submit", {"bucket": "b"}, "adder submit aws needs queue url: give --queue-url"),
        ("redrive", {}, "adder redrive aws needs queue url"),
        ("watch", {"queue_url": "q"}, "adder watch aws needs bucket: give --bucket"),
        ("fetch", {"queue_url": "q"}, "adder fetch aws needs bucket"),
        ("status", {"region": "eu-west-1"}, "adder status aws needs a queue or a bucket"),
    ],
)
def test_each_command_requires_what_it_uses_before_any_call(
    command: str, values: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        open_backend(Target("aws", values), command)
    assert str(raised.value).startswith(message)


def test_a_missing_queue_lists_every_way_to_give_it() -> None:
    with pytest.raises(ConfigError) as raised:
        open_backend(Target("aws", {}), "submit")
    assert "--stack DIR (terraform output queue_url)" in str(raised.value)
    assert "--config FILE (queue_name)" in str(raised.value)


def test_region_settings_honour_both_environment_variables() -> None:
    (region,) = [setting for setting in SETTINGS if setting.name == "region"]
    assert region.env == ("AWS_REGION", "AWS_DEFAULT_REGION")


def test_no_region_anywhere_is_a_config_error_before_any_call(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    with pytest.raises(ConfigError, match=r"^no AWS region: give --region or set AWS_REGION$"):
        make_clients(None, None)


def test_the_clients_have_the_documented_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    sqs, s3 = make_clients("eu-west-1", "http://127.0.0.1:9")
    for client in (sqs, s3):
        config: Any = client.meta.config
        assert config.retries == {"mode": "standard", "total_max_attempts": 3}
        assert (config.connect_timeout, config.read_timeout) == (3, 20)
        assert config.max_pool_connections == 32
        assert client.meta.region_name == "eu-west-1"
        assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_a_malformed_endpoint_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(ConfigError, match="--endpoint-url"):
        make_clients("eu-west-1", "localhost:4566")


def test_importing_the_module_imports_no_sdk() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, aws_lambda.jobs; "
            "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
