"""What an Azure job failure says: the one translator from Service Bus, Storage, credential
and network exceptions to the project's errors, and the resources those lines name.

Each exception is sorted into a :class:`~core.ops.problems.Problem` here (the Azure part);
:func:`~core.ops.problems.problem_error` words it the same way as on every cloud.
Importing this module imports no SDK.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from core.ops.problems import Problem, Resource, problem_error

if TYPE_CHECKING:
    from core.errors import CloudUnavailableError, ConfigError

LOGIN = (
    "run az login, or set --connection-string (and --blob-connection-string for the results), "
    "or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
)
"""How to get credentials: the fix of every "no usable credentials" line."""
UNAUTHORIZED_ACCESS = "amqp:unauthorized-access"
"""The AMQP condition of a link or connection the broker refused."""

_CONDITION = re.compile(r"\s*Error condition: .*$|\s*Status Code: .*$")
_ADDRESS = re.compile(r"<[^>]*>:\s*")
_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^\"()]*?(?=\s+Error condition|[\"()]|$)")


def namespace_resource(host: str) -> Resource:
    """A Service Bus namespace, as a client or a token for it needs it."""
    return Resource(
        f"Service Bus namespace {host}",
        "check --namespace (or --connection-string)",
        "'Azure Service Bus Data Sender' and 'Data Receiver' on the queue (or a connection "
        "string with Send and Listen)",
    )


def queue_resource(queue: str, host: str) -> Resource:
    """The task queue: sent to, and counted (counts need Manage, see the backend)."""
    return Resource(
        f"Service Bus queue {queue!r} on {host}",
        "check --queue and --namespace (or --connection-string)",
        "'Azure Service Bus Data Sender' and 'Data Receiver' on the queue (or a connection "
        "string with Send and Listen)",
    )


def dead_letter_resource(queue: str, host: str) -> Resource:
    """The task queue's dead-letter sub-queue: received from and settled."""
    return Resource(
        f"the dead-letter queue of Service Bus queue {queue!r} on {host}",
        "check --queue and --namespace (or --connection-string)",
        "'Azure Service Bus Data Receiver' on the queue (or a connection string with Listen)",
    )


def account_resource(account_url: str) -> Resource:
    """A storage account, as a token for it needs it."""
    return Resource(
        f"storage account {account_url.rstrip('/')}",
        "check --account-url (or --blob-connection-string)",
        "'Storage Blob Data Reader' on the results container (or a connection string)",
    )


def container_resource(container: str, account_url: str) -> Resource:
    """The results container: listed and read."""
    return Resource(
        f"container {container!r} at {account_url.rstrip('/')}",
        "check --container and --account-url (or --blob-connection-string)",
        "'Storage Blob Data Reader' on the container (or a connection string)",
    )


def translate_error(exc: BaseException, resource: Resource) -> ConfigError | CloudUnavailableError:
    """The one line ``exc`` (raised while touching ``resource``) becomes.

    ConfigError when no retry can fix it: no credentials, no such namespace, queue, account
    or container, access denied, an endpoint that never answered, a request refused as
    given. CloudUnavailableError when another try may work: timeouts, a dropped connection,
    a busy or full queue, throttling and server errors. Anything else (a bug) is raised
    again.
    """
    from azure.servicebus.exceptions import MessagingEntityDisabledError

    problem = problem_of(exc)
    if problem is None:
        raise exc
    detail = _detail(exc)
    if isinstance(exc, MessagingEntityDisabledError):
        detail = f"it is disabled, enable it: {detail}"
    return problem_error(problem, resource, detail, login=LOGIN)


def problem_of(exc: BaseException) -> Problem | None:
    """What kind of failure ``exc`` is; None for none the cloud causes (a bug)."""
    from azure.servicebus.exceptions import ServiceBusError

    if _is_credential_failure(exc):
        return Problem.NO_CREDENTIALS
    if isinstance(exc, ServiceBusError):
        return _service_bus_problem(exc)
    return _http_problem(exc)


def _service_bus_problem(exc: BaseException) -> Problem:
    from azure.servicebus.exceptions import (
        MessagingEntityDisabledError,
        MessagingEntityNotFoundError,
        OperationTimeoutError,
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
        ServiceBusCommunicationError,
        ServiceBusConnectionError,
        ServiceBusQuotaExceededError,
        ServiceBusServerBusyError,
    )

    rules: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Problem], ...] = (
        (MessagingEntityNotFoundError, Problem.MISSING),
        (ServiceBusCommunicationError, Problem.UNREACHABLE),  # the namespace itself is unknown
        ((ServiceBusAuthenticationError, ServiceBusAuthorizationError), Problem.DENIED),
        (MessagingEntityDisabledError, Problem.REFUSED),
        (
            (OperationTimeoutError, ServiceBusServerBusyError, ServiceBusQuotaExceededError),
            Problem.RETRY,
        ),
    )
    if getattr(exc, "_condition", None) == UNAUTHORIZED_ACCESS:
        return Problem.DENIED
    for classes, problem in rules:
        if isinstance(exc, classes):
            return problem
    if isinstance(exc, ServiceBusConnectionError):  # never connected, or dropped
        return Problem.UNREACHABLE if "initiate the connection" in str(exc) else Problem.RETRY
    return Problem.RETRY if getattr(exc, "_retryable", False) else Problem.REFUSED


def _http_problem(exc: BaseException) -> Problem | None:
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        if isinstance(exc, ResourceNotFoundError) or status == 404:
            return Problem.MISSING
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            return Problem.DENIED
        return Problem.RETRY if status in (408, 429) or status >= 500 else Problem.REFUSED
    rules: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Problem], ...] = (
        (ServiceRequestError, Problem.UNREACHABLE),  # the request never left: DNS, refused, TLS
        ((AzureError, OSError), Problem.RETRY),
        (ValueError, Problem.REFUSED),  # the SDK's own check of a request's arguments
    )
    for classes, problem in rules:
        if isinstance(exc, classes):
            return problem
    return None


def _is_credential_failure(exc: BaseException) -> bool:
    """A credential that could not produce a token, anywhere in the exception's chain (an
    HTTP 401 from a service carries a response; a failed credential does not)."""
    from azure.core.exceptions import ClientAuthenticationError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ClientAuthenticationError) and current.response is None:
            return True
        current = current.__cause__ or current.__context__
    return False


def _detail(exc: BaseException) -> str:
    """The exception's first line; for a socket failure only its ``[Errno N] reason``."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    os_error = _OS_ERROR.search(text)
    if os_error:
        return os_error.group(0)
    text = _CONDITION.sub("", text)  # Service Bus: " Error condition: amqp:not-found."
    return _ADDRESS.sub("", text)  # "<urllib3.connection.HTTPConnection object at 0x..>: "
