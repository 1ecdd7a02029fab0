"""The one translator from botocore's exceptions to the project's errors (AWS).

:func:`aws_error` sorts an exception into a :class:`~core.ops.problems.Problem` and lets
:func:`~core.ops.problems.problem_error` word it; only a missing region, which concerns no
resource, has a line of its own (:data:`NO_REGION`). Importing this module imports botocore:
``aws_lambda.jobs`` imports it where it builds the clients.
"""

from __future__ import annotations

import re
from typing import Any

from botocore import exceptions as bx

from core.errors import CloudUnavailableError, ConfigError
from core.ops.problems import Problem, Resource, problem_error

NO_REGION = "no AWS region: give --region or set AWS_REGION"
LOGIN = (
    "run aws configure (or aws sso login), set AWS_PROFILE, or set AWS_ACCESS_KEY_ID and"
    " AWS_SECRET_ACCESS_KEY"
)
"""How to get credentials, for every credential problem."""

_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClient",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidToken",
        "InvalidSecurity",
        "AuthFailure",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "RequestExpired",
    }
)
_MISSING_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "NoSuchBucket",
        "NotFound",
        "404",
    }
)
_RETRY_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
    }
)
_NO_CREDENTIALS = (
    bx.NoCredentialsError,
    bx.PartialCredentialsError,
    bx.CredentialRetrievalError,
    bx.SSOError,
    bx.SSOTokenLoadError,
    bx.UnauthorizedSSOTokenError,
    bx.TokenRetrievalError,
)
_UNREACHABLE = (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ProxyConnectionError)
_DROPPED = (
    bx.ReadTimeoutError,
    bx.ConnectionClosedError,
    bx.HTTPClientError,
    bx.ResponseStreamingError,
)


def aws_resource(
    what: str, setting: str, needs: str, *, region: str | None, endpoint: str | None
) -> Resource:
    """``what`` as error lines name it on AWS: in its region (and at a custom endpoint).

    ``setting`` says how it is given, e.g. ``--bucket (or the stack's results_bucket)``
    ("" for none); ``needs`` is the IAM permission the call needs, e.g. ``sqs:SendMessage``.
    """
    place = (f" in region {region}" if region else "") + (f" at {endpoint}" if endpoint else "")
    ways = [*([setting] if setting else []), "--region", *(["--endpoint-url"] if endpoint else [])]
    check = "check " + (", ".join(ways[:-1]) + " and " if len(ways) > 1 else "") + ways[-1]
    return Resource(what + place, check, f"{needs} on it" if needs else "the call's permission")


def aws_error(
    exc: bx.BotoCoreError | bx.ClientError, resource: Resource, *, reached: bool = False
) -> ConfigError | CloudUnavailableError:
    """The project error for a botocore exception raised by a call on ``resource``.

    ``reached`` says whether that service answered before: an endpoint that never did is a
    ConfigError (a wrong address, no network), one that did and then failed is worth another
    try. Throttling and 5xx are CloudUnavailableError; what credentials say is never shown.
    """
    if isinstance(exc, bx.NoRegionError):
        return ConfigError(NO_REGION)
    login = LOGIN
    if isinstance(exc, bx.ClientError):
        problem, detail = _answer_problem(exc)
        if problem is Problem.NO_CREDENTIALS:  # the code only: the message may quote a key
            login = f"AWS answered {detail}; {LOGIN}"
    elif isinstance(exc, _NO_CREDENTIALS):
        problem, detail = Problem.NO_CREDENTIALS, ""
    elif isinstance(exc, bx.ProfileNotFound):
        problem, detail = Problem.NO_CREDENTIALS, ""
        login = (
            f"no profile {exc.kwargs.get('profile')} in the AWS config: check AWS_PROFILE"
            " (aws configure list-profiles)"
        )
    elif isinstance(exc, _UNREACHABLE):
        problem, detail = (Problem.RETRY if reached else Problem.UNREACHABLE), str(exc)
    elif isinstance(exc, _DROPPED):
        problem, detail = Problem.RETRY, str(exc)
    else:  # e.g. ParamValidationError: a bucket name botocore refuses before sending
        problem, detail = Problem.REFUSED, str(exc)
    return problem_error(problem, resource, detail, login=login)


def _answer_problem(exc: bx.ClientError) -> tuple[Problem, str]:
    """The problem an error answer stands for, and what to show of it (for credential
    problems: the error code)."""
    code, message = error_code_and_message(exc.response)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    operation = exc.operation_name
    if code in _CREDENTIAL_CODES:
        return Problem.NO_CREDENTIALS, code
    if code in _MISSING_CODES:
        return Problem.MISSING, ""
    if "Throttl" in code or code in _RETRY_CODES or status == 429 or status >= 500:
        return Problem.RETRY, f"{operation}: {code or status}"
    if "AccessDenied" in code or code in {"403", "Forbidden"} or status == 403:
        return Problem.DENIED, f"{operation}: {code or status}"
    return Problem.REFUSED, f"{operation}: {code}: {message}"


def error_code_and_message(response: Any) -> tuple[str, str]:
    """The error's code and message; a code that is only the HTTP status, with the service's
    XML error document as the message (moto's SQS in the JSON protocol, some proxies), is read
    from the XML."""
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code") or error.get("QueryErrorCode") or "")
    message = str(error.get("Message") or "")
    if (not code or code.isdigit()) and message.lstrip().startswith("<"):
        found_code = re.search(r"<Code>([^<]+)</Code>", message)
        found_message = re.search(r"<Message>([^<]*)</Message>", message)
        code = found_code.group(1) if found_code else code
        message = found_message.group(1) if found_message else ""
    return code, message
