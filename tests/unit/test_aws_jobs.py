"""The AWS job backend without a server: botocore's errors translated into one line each,
SQS's body rules, and what each command requires before any client is built."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from botocore import exceptions as bx
from botocore.stub import Stubber

from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.job_backend import unsendable_reason as unsendable
from aws_lambda.job_errors import aws_error, aws_resource
from aws_lambda.jobs import SETTINGS, make_clients, open_backend
from core.errors import CloudUnavailableError, ConfigError
from core.ops.backend import DeadLetter, RecordInfo
from core.ops.target import Target
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from core.ops.problems import Resource

URL = "https://sqs.eu-west-1.amazonaws.com/1/tasks"
QUEUE_WAY = "--queue-url, --stack DIR (terraform output queue_url) or --config FILE (queue_name)"
QUEUE = aws_resource(
    f"SQS queue {URL}", QUEUE_WAY, "sqs:SendMessage", region="eu-west-1", endpoint=None
)
BUCKET = aws_resource(
    "S3 bucket results",
    "--bucket (or the stack's results_bucket)",
    "s3:ListBucket",
    region="eu-west-1",
    endpoint=None,
)
LOGIN_WORDS = ("aws configure", "aws sso login", "AWS_PROFILE", "AWS_ACCESS_KEY_ID")


def client_error(code: str, status: int, operation: str = "SendMessageBatch", **extra: Any) -> Any:
    """A ClientError as botocore raises it from a parsed error response."""
    response = {
        "Error": {"Code": code, "Message": f"the {code} message", **extra},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bx.ClientError(response, operation)  # type: ignore[arg-type]


def translate(
    exc: Exception, resource: Resource = QUEUE, *, reached: bool = False
) -> ConfigError | CloudUnavailableError:
    error = aws_error(exc, resource, reached=reached)  # type: ignore[arg-type]
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
    assert str(error).startswith(f"no usable credentials for SQS queue {URL} in region eu-west-1: ")
    for words in LOGIN_WORDS:
        assert words in str(error)


def test_a_refused_credential_names_the_code_never_the_message() -> None:
    # GIVEN an answer whose message quotes what was sent
    exc = client_error("SignatureDoesNotMatch", 403, Message="signed with wJalrXUtnFEMI/K7MDENG")
    # WHEN translated / THEN the code is named, the message is not shown
    error = translate(exc)
    assert "AWS answered SignatureDoesNotMatch; run aws configure" in str(error)
    assert "wJalrXUtnFEMI" not in str(error)


def test_an_unknown_profile_names_it_and_aws_profile() -> None:
    error = translate(bx.ProfileNotFound(profile="prod"))
    assert isinstance(error, ConfigError)
    assert str(error).endswith(
        ": no profile prod in the AWS config: check AWS_PROFILE (aws configure list-profiles)"
    )


@pytest.mark.parametrize(
    ("exc", "resource", "expected"),
    [
        (
            client_error(
                "AWS.SimpleQueueService.NonExistentQueue", 400, QueryErrorCode="QueueDoesNotExist"
            ),
            QUEUE,
            f"SQS queue {URL} in region eu-west-1 does not exist: check {QUEUE_WAY} and --region",
        ),
        (
            client_error("QueueDoesNotExist", 400, "GetQueueUrl"),
            QUEUE,
            f"SQS queue {URL} in region eu-west-1 does not exist: check {QUEUE_WAY} and --region",
        ),
        (
            client_error("NoSuchBucket", 404, "ListObjectsV2"),
            BUCKET,
            "S3 bucket results in region eu-west-1 does not exist: check --bucket (or the stack's"
            " results_bucket) and --region",
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
    ("exc", "resource"),
    [
        (client_error("AccessDenied", 403), QUEUE),
        (client_error("AccessDeniedException", 400, "ReceiveMessage"), QUEUE),
        (client_error("AccessDenied", 403, "ListObjectsV2"), BUCKET),
        (client_error("403", 403, "DeleteMessageBatch"), QUEUE),
        (client_error("Forbidden", 403, "HeadBucket"), BUCKET),
    ],
)
def test_access_denied_names_the_resource_and_the_permission(
    exc: Exception, resource: Resource
) -> None:
    error = translate(exc, resource)
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"access denied to {resource.what} (")
    assert str(error).endswith(f": the caller needs {resource.needs}")
    assert resource.needs.endswith(" on it")


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
    assert str(error).startswith(f"no usable credentials for SQS queue {URL}")
    assert "AWS answered InvalidClientTokenId; run aws configure" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/1/tasks?x=1"),
        bx.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9/"),
    ],
)
def test_an_endpoint_never_reached_is_a_config_error_naming_it(exc: Exception) -> None:
    error = translate(exc)
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"cannot reach SQS queue {URL} in region eu-west-1 (")
    assert "http://127.0.0.1:9/" in str(error)
    assert str(error).endswith(f": check {QUEUE_WAY} and --region, and the network")


def test_an_unreachable_custom_endpoint_is_named_as_configured() -> None:
    exc = bx.EndpointConnectionError(endpoint_url="http://localhost:4566/q")
    queue = aws_resource(
        "SQS queue tasks", QUEUE_WAY, "sqs:SendMessage", region="us-east-1",
        endpoint="http://localhost:4566/",
    )  # fmt: skip
    error = translate(exc, queue)
    assert str(error).startswith(
        "cannot reach SQS queue tasks in region us-east-1 at http://localhost:4566/ ("
    )
    assert str(error).endswith(f": check {QUEUE_WAY}, --region and --endpoint-url, and the network")


def test_an_endpoint_that_answered_before_may_work_next_time() -> None:
    exc = bx.EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/")
    error = translate(exc, reached=True)
    assert isinstance(error, CloudUnavailableError)
    assert str(error).startswith(f"SQS queue {URL} in region eu-west-1: try again later (")


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
    error = translate(exc)
    assert isinstance(error, CloudUnavailableError)
    assert str(error).startswith(f"SQS queue {URL} in region eu-west-1: try again later (")


def test_any_other_refusal_is_a_configuration_error_with_the_code() -> None:
    error = translate(client_error("KMS.DisabledException", 400))
    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"SQS queue {URL} in region eu-west-1 refused the request (")
    assert "SendMessageBatch: KMS.DisabledException: the KMS.DisabledException message" in str(
        error
    )


def test_a_name_botocore_refuses_before_sending_is_a_refusal() -> None:
    exc = bx.ParamValidationError(report='Invalid bucket name "a/b"')
    error = translate(exc, BUCKET)
    assert isinstance(error, ConfigError)
    assert str(error).startswith("S3 bucket results in region eu-west-1 refused the request (")
    assert 'Invalid bucket name "a/b"' in str(error)


# --- which permission each call names: the backend on stubbed clients --------------------


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AwsJobBackend, Stubber, Stubber]]:
    """A backend on real clients whose answers are stubbed (no request leaves the process)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    sqs, s3 = make_clients("eu-west-1", None)
    dlq = "https://sqs.eu-west-1.amazonaws.com/1/dead"
    backend = AwsJobBackend(
        sqs, s3, queue_url=URL, dead_letter_queue_url=dlq, bucket="results", owns_clients=True
    )
    with Stubber(sqs) as sqs_stub, Stubber(s3) as s3_stub:
        yield backend, sqs_stub, s3_stub
    backend.close()


LETTER = DeadLetter(b"{}", "handle")
RECORD = RecordInfo("t-1", ".out", "t-1.out", 2)
CALLS: list[tuple[str, str, Callable[[AwsJobBackend], object], str]] = [
    ("sqs", "send_message_batch", lambda b: b.send_batch([b"{}"]), "sqs:SendMessage"),
    ("sqs", "get_queue_attributes", lambda b: b.check("status"), "sqs:GetQueueAttributes"),
    (
        "sqs",
        "get_queue_attributes",
        lambda b: b.check("submit"),
        "sqs:GetQueueAttributes and sqs:SendMessage",
    ),
    ("sqs", "get_queue_attributes", lambda b: b.dead_letter_count(), "sqs:GetQueueAttributes"),
    ("sqs", "receive_message", lambda b: b.receive_dead_letters(1), "sqs:ReceiveMessage"),
    ("sqs", "delete_message_batch", lambda b: b.delete_dead_letters([LETTER]), "sqs:DeleteMessage"),
    ("s3", "list_objects_v2", lambda b: list(b.list_records()), "s3:ListBucket"),
    ("s3", "get_object", lambda b: b.read_record(RECORD), "s3:GetObject"),
]


@pytest.mark.parametrize(("service", "operation", "call", "permission"), CALLS, ids=str)
def test_access_denied_names_the_permission_of_the_call(
    stubbed: tuple[AwsJobBackend, Stubber, Stubber],
    service: str,
    operation: str,
    call: Callable[[AwsJobBackend], object],
    permission: str,
) -> None:
    # GIVEN a backend whose call is denied
    backend, sqs_stub, s3_stub = stubbed
    stub = sqs_stub if service == "sqs" else s3_stub
    stub.add_client_error(operation, "AccessDenied", "denied", 403)
    # WHEN it is made / THEN one line names what was touched and the permission it needs
    with pytest.raises(ConfigError) as raised:
        call(backend)
    assert str(raised.value).startswith("access denied to S")
    assert str(raised.value).endswith(f"the caller needs {permission} on it")
    assert "\n" not in str(raised.value)


def test_a_queue_name_lookup_names_get_queue_url(
    stubbed: tuple[AwsJobBackend, Stubber, Stubber],
) -> None:
    _, sqs_stub, _ = stubbed
    backend = AwsJobBackend(sqs_stub.client, queue_url="tasks")  # type: ignore[arg-type]
    sqs_stub.add_client_error("get_queue_url", "QueueDoesNotExist", "no such queue", 400)
    with pytest.raises(ConfigError) as raised:
        backend.task_queue_url()
    assert str(raised.value) == (
        f"SQS queue tasks in region eu-west-1 does not exist: check {QUEUE_WAY} and --region"
    )


def test_a_bug_is_not_swallowed(
    stubbed: tuple[AwsJobBackend, Stubber, Stubber], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a client call that fails with something that is no botocore error
    backend, _, _ = stubbed

    def broken(**_: object) -> object:
        raise KeyError("a bug")

    monkeypatch.setattr(backend.sqs, "send_message_batch", broken)
    # WHEN it is called / THEN the bug goes up as it is
    with pytest.raises(KeyError, match="a bug"):
        backend.send_batch([b"{}"])


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


def test_no_credentials_anywhere_is_a_config_error_before_any_call(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError) as raised:
        make_clients("eu-west-1", "http://127.0.0.1:9")
    assert str(raised.value).startswith(
        "no usable credentials for AWS in region eu-west-1 at http://127.0.0.1:9: run aws configure"
    )


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
