"""What a Google Cloud job failure says: the one translator from Google API, credential and
network exceptions to the project's errors, and the resources those lines name.

Each exception is sorted into a :class:`~core.ops.problems.Problem` here (the Google part);
:func:`~core.ops.problems.problem_error` words it the same way as on every cloud.
Importing this module imports no SDK.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING

from core.ops.problems import Problem, Resource, problem_error
from gcp_function.jobs import ways

if TYPE_CHECKING:
    from core.errors import CloudUnavailableError, ConfigError

LOGIN = "run gcloud auth application-default login"
"""How to get credentials: the fix of every "no usable credentials" line."""

CREDENTIALS = Resource(
    "Google Cloud",
    "check $GOOGLE_APPLICATION_CREDENTIALS and the project",
    "a role on the project",
)
"""What building a client or finding credentials touches."""

_SDK_PACKAGES = {"google", "grpc", "requests", "urllib3", "proto"}


def topic_resource(topic: str | None, emulator: str | None) -> Resource:
    """The task topic, published to (``emulator``: ``$PUBSUB_EMULATOR_HOST``, if set)."""
    return Resource(
        _at(f"Pub/Sub topic {topic}", emulator),
        _check("topic", "the project", emulator and "$PUBSUB_EMULATOR_HOST"),
        "roles/pubsub.publisher on it",
    )


def subscription_resource(subscription: str | None, emulator: str | None) -> Resource:
    """The dead-letter subscription, pulled from and acknowledged."""
    return Resource(
        _at(f"Pub/Sub subscription {subscription}", emulator),
        _check("dead_letter_subscription", "the project", emulator and "$PUBSUB_EMULATOR_HOST"),
        "roles/pubsub.subscriber on it",
    )


def bucket_resource(bucket: str | None, emulator: str | None) -> Resource:
    """The results bucket, listed and read (``emulator``: ``$STORAGE_EMULATOR_HOST``)."""
    return Resource(
        _at(f"bucket gs://{bucket}", emulator),
        _check("bucket", emulator and "$STORAGE_EMULATOR_HOST"),
        "roles/storage.objectViewer on it",
    )


def _at(what: str, emulator: str | None) -> str:
    return f"{what} at {emulator}" if emulator else what


def _check(setting: str, *also: str | None) -> str:
    more = " and ".join(item for item in also if item)
    return f"check {ways(setting)}" + (f" (and {more})" if more else "")


def translate_error(
    exc: BaseException, resource: Resource, *, reached: bool = True
) -> ConfigError | CloudUnavailableError:
    """The one line ``exc`` (raised while touching ``resource``) becomes.

    ConfigError when no retry can fix it: no credentials or credentials refused, no such
    topic, subscription or bucket, access denied, a request refused as given, and an
    endpoint that never answered (``reached`` False: a wrong emulator address, no network).
    CloudUnavailableError when another try may work: 5xx, throttling, a dropped connection
    once the service answered. Anything else (a bug) is raised again. The exception's own
    text is never shown for credential problems.
    """
    cause = _cause(exc)
    problem = problem_of(cause, reached=reached)
    if problem is None:
        raise exc
    return problem_error(problem, resource, describe(cause), login=LOGIN)


def problem_of(exc: BaseException, *, reached: bool = True) -> Problem | None:
    """What kind of failure ``exc`` is; None for none the cloud causes (a bug)."""
    from google.api_core import exceptions
    from google.auth.exceptions import GoogleAuthError, TransportError

    exc = _cause(exc)
    auth_failure = isinstance(exc, GoogleAuthError) and not isinstance(exc, TransportError)
    if auth_failure or isinstance(exc, exceptions.Unauthorized):
        return Problem.NO_CREDENTIALS
    rules: tuple[tuple[type[BaseException], Problem], ...] = (
        (exceptions.NotFound, Problem.MISSING),
        (exceptions.Forbidden, Problem.DENIED),
        (exceptions.BadRequest, Problem.REFUSED),
    )
    for kind, problem in rules:
        if isinstance(exc, kind):
            return problem
    if isinstance(exc, _connection_errors()):
        return Problem.RETRY if reached else Problem.UNREACHABLE
    if isinstance(exc, exceptions.GoogleAPIError) or _from_sdk(exc):
        return Problem.RETRY
    return None


def is_permanent(exc: BaseException) -> bool:
    """True for a publish error another try gives the same answer to."""
    if isinstance(exc, ValueError | TypeError):  # the client refused the message itself
        return True
    return problem_of(exc) in (
        Problem.NO_CREDENTIALS,
        Problem.MISSING,
        Problem.DENIED,
        Problem.REFUSED,
    )


def is_transient(exc: BaseException) -> bool:
    """True when another try may work: what the SDK's retries retry, once reached."""
    return problem_of(exc) is Problem.RETRY


def about_the_message(exc: BaseException) -> bool:
    """True for a publish error about one message, not about the topic or the caller."""
    return isinstance(exc, ValueError | TypeError) or problem_of(exc) is Problem.REFUSED


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an exception (gRPC errors carry debug lines after it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _cause(exc: BaseException) -> BaseException:
    """The error under the SDK's "retries ran out" wrapper, which says what went wrong."""
    from google.api_core import exceptions

    if isinstance(exc, exceptions.RetryError) and exc.cause is not None:
        return _cause(exc.cause)
    return exc


def _connection_errors() -> tuple[type[BaseException], ...]:
    import requests
    from google.api_core import exceptions
    from google.auth.exceptions import TransportError

    return (
        exceptions.ServiceUnavailable,
        exceptions.DeadlineExceeded,
        requests.ConnectionError,
        requests.Timeout,
        TransportError,
        OSError,
        concurrent.futures.TimeoutError,
    )


def _from_sdk(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in _SDK_PACKAGES
