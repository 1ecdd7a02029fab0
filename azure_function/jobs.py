"""``adder submit|watch|fetch|redrive|status azure``: where a job lives (:data:`SETTINGS`)
and the Azure clients it is reached with (:func:`open_backend`).

Credentials: a connection string for each service, or ``DefaultAzureCredential`` built to
fail within seconds (no interactive, PowerShell, VS Code or broker credentials; the managed
identity probe waits 1 s and does not retry; developer CLIs get a few seconds) and asked
for a token before anything else, so "no credentials" is one line at once rather than a
credential dump after the clients' retries.

Importing this module imports no SDK; the Azure clients are imported by :func:`open_backend`.
The backend itself is :mod:`azure_function.job_backend`, its errors' wording
:mod:`azure_function.job_errors`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from azure_function.job_backend import BLOB_CONNECTIONS, AzureJobBackend, ServiceBusParts
from azure_function.job_errors import (
    LOGIN,
    account_resource,
    namespace_resource,
    problem_of,
    translate_error,
)
from core.errors import ConfigError, ProviderUnavailableError
from core.ops.problems import Problem, Resource, problem_error
from core.ops.target import Setting

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import ContainerClient

    from core.ops.backend import JobBackend
    from core.ops.target import Target

SETTINGS = (
    Setting(
        "namespace",
        "the Service Bus namespace: a name (sb-adder-1a2b3c) or host name",
        output="servicebus_namespace",
        config="config.namespace",
        env=("SERVICEBUS_CONNECTION__fullyQualifiedNamespace",),
    ),
    Setting(
        "queue",
        "the task queue's name",
        output="queue_name",
        config="queue_name",
        env=("TASK_QUEUE_NAME",),
    ),
    Setting(
        "connection_string",
        "a Service Bus connection string instead of Entra ID ($SERVICEBUS_CONNECTION_STRING)",
        env=("SERVICEBUS_CONNECTION_STRING",),
        secret=True,
    ),
    Setting(
        "account_url",
        "the results storage account URL",
        output="results_blob_account_url",
        config="config.account_url",
        env=("RESULTS_BLOB_ACCOUNT_URL",),
    ),
    Setting(
        "blob_connection_string",
        "a storage connection string instead, e.g. for Azurite ($RESULTS_BLOB_CONNECTION_STRING)",
        env=("RESULTS_BLOB_CONNECTION_STRING",),
        secret=True,
    ),
    Setting(
        "container",
        "the results container",
        output="results_container",
        config="result_bucket",
        env=("RESULTS_CONTAINER",),
    ),
    Setting(
        "prefix",
        "the results prefix",
        output="results_prefix",
        config="result_prefix",
        env=("RESULTS_PREFIX",),
    ),
)

INSTALL_HINT = "the Azure commands need the Azure SDKs: pip install 'adder-tasks[azure]'"
PUBLIC_CLOUD_SUFFIX = ".servicebus.windows.net"
SERVICE_BUS_SCOPE = "https://servicebus.azure.net/.default"
STORAGE_SCOPE = "https://storage.azure.com/.default"
CREDENTIAL_PROCESS_TIMEOUT_SECONDS = 5
"""How long ``az``/``azd`` may take to hand out a token."""
SERVICE_BUS_RETRIES = 2
SERVICE_BUS_BACKOFF_SECONDS = 0.5
BLOB_RETRIES = 2
BLOB_CONNECTION_TIMEOUT_SECONDS = 3
BLOB_READ_TIMEOUT_SECONDS = 20


def fully_qualified_namespace(namespace: str) -> str:
    """``sb-x`` -> ``sb-x.servicebus.windows.net``; a name with a dot is kept as it is."""
    namespace = namespace.strip().removeprefix("sb://").rstrip("/")
    return namespace if "." in namespace else namespace + PUBLIC_CLOUD_SUFFIX


def namespace_of_connection_string(connection_string: str) -> str:
    """The namespace host a Service Bus connection string names (its ``Endpoint``)."""
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "endpoint":
            return value.strip().removeprefix("sb://").rstrip("/")
    return "the namespace of the connection string"


def default_credential() -> DefaultAzureCredential:
    """``DefaultAzureCredential`` that answers within seconds and prints nothing.

    Kept: environment (service principal), workload identity, managed identity (its IMDS
    probe connects for at most 1 s and does not retry), Azure CLI and Azure Developer CLI
    (each at most :data:`CREDENTIAL_PROCESS_TIMEOUT_SECONDS`). Left out: interactive browser,
    PowerShell (slow to start), VS Code, the shared token cache and the broker (Windows).
    """
    from azure.identity import DefaultAzureCredential

    quiet_sdk_logs()
    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_powershell_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_broker_credential=True,
        process_timeout=CREDENTIAL_PROCESS_TIMEOUT_SECONDS,
    )


def check_credential(
    credential: TokenCredential, scope: str, resource: Resource, login: str = LOGIN
) -> None:
    """Get one token for ``scope`` now: no credentials is one ConfigError naming
    ``resource`` and how to log in (``login``), before any client retries."""
    try:
        credential.get_token(scope)
    except Exception as exc:
        problem = problem_of(exc)
        if problem is None:
            raise
        if problem is not Problem.RETRY:
            problem = Problem.NO_CREDENTIALS
        # no detail, and from None: one line, not the credential chain's report
        raise problem_error(problem, resource, login=login) from None


def quiet_sdk_logs() -> None:
    """Keep the SDKs' warnings (the credential chain's report, pool notices) off stderr
    unless the user configured logging: Python prints unhandled warnings otherwise."""
    for name in ("azure", "urllib3"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


# --- building the clients -----------------------------------------------------------------


def open_backend(target: Target, command: str) -> JobBackend:
    """The Service Bus + Blob backend of ``target`` (Azure clients imported here).

    submit and redrive need the queue; fetch needs the results; status and watch need the
    results and use the queue for counts when it is given.
    """
    what = f"adder {command} azure"
    queue_needed = command in ("submit", "redrive")
    results_needed = command in ("watch", "fetch", "status")
    queue_wanted = queue_needed or (command in ("watch", "status") and bool(target.get("queue")))
    queue = namespace = connection_string = None
    if queue_wanted:
        queue = target.require("queue", SETTINGS, what)
        connection_string = target.get("connection_string")
        if not connection_string:
            namespace = _require_either(target, "namespace", "--connection-string", what)
    container_name = account_url = blob_connection_string = None
    if results_needed:
        container_name = target.require("container", SETTINGS, what)
        blob_connection_string = target.get("blob_connection_string")
        if not blob_connection_string:
            account_url = _require_either(target, "account_url", "--blob-connection-string", what)
    try:
        import azure.servicebus
        import azure.storage.blob  # noqa: F401
    except ImportError:
        raise ProviderUnavailableError(INSTALL_HINT) from None
    quiet_sdk_logs()
    credential: TokenCredential | None = None
    if namespace or account_url:
        credential = default_credential()
        if namespace:
            host = fully_qualified_namespace(namespace)
            check_credential(credential, SERVICE_BUS_SCOPE, namespace_resource(host))
        else:
            check_credential(credential, STORAGE_SCOPE, account_resource(str(account_url)))
    bus = None
    if queue:
        bus = service_bus_parts(
            queue,
            namespace=namespace,
            connection_string=connection_string,
            credential=credential,
            admin=command in ("watch", "status"),
        )
    container = None
    if container_name:
        container = container_client(
            container_name,
            account_url=account_url,
            connection_string=blob_connection_string,
            credential=credential,
        )
    return AzureJobBackend(bus, container, target.get("prefix") or "", credential=credential)


def _require_either(target: Target, name: str, alternative: str, what: str) -> str:
    try:
        return target.require(name, SETTINGS, what)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; or {alternative}") from None


def service_bus_parts(
    queue: str,
    *,
    namespace: str | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | None = None,
    admin: bool = False,
) -> ServiceBusParts:
    """One ServiceBusClient, its queue sender and dead-letter receiver (and the
    administration client for counts); nothing connects until used."""
    from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode, ServiceBusSubQueue
    from azure.servicebus.management import ServiceBusAdministrationClient

    host = (
        namespace_of_connection_string(connection_string)
        if connection_string
        else fully_qualified_namespace(str(namespace))
    )
    try:
        if connection_string:
            client = ServiceBusClient.from_connection_string(
                connection_string,
                retry_total=SERVICE_BUS_RETRIES,
                retry_backoff_factor=SERVICE_BUS_BACKOFF_SECONDS,
            )
            manager = (
                ServiceBusAdministrationClient.from_connection_string(
                    connection_string, retry_total=SERVICE_BUS_RETRIES
                )
                if admin
                else None
            )
        else:
            assert credential is not None
            client = ServiceBusClient(
                host,
                credential,
                retry_total=SERVICE_BUS_RETRIES,
                retry_backoff_factor=SERVICE_BUS_BACKOFF_SECONDS,
            )
            manager = (
                ServiceBusAdministrationClient(host, credential, retry_total=SERVICE_BUS_RETRIES)
                if admin
                else None
            )
        sender = client.get_queue_sender(queue)
        receiver = client.get_queue_receiver(
            queue,
            sub_queue=ServiceBusSubQueue.DEAD_LETTER,
            receive_mode=ServiceBusReceiveMode.PEEK_LOCK,
        )
    except ValueError:  # never echo the string: it holds a key
        raise ConfigError(
            "the Service Bus connection string is malformed: expected "
            "Endpoint=sb://NAMESPACE/;SharedAccessKeyName=NAME;SharedAccessKey=KEY"
        ) from None
    except Exception as exc:
        raise translate_error(exc, namespace_resource(host)) from None
    return ServiceBusParts(queue, host, sender, receiver, manager, (client,))


def container_client(
    container: str,
    *,
    account_url: str | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | None = None,
) -> ContainerClient:
    """The results container's client: bounded retries and timeouts, a pool big enough for
    ``adder fetch``'s downloads."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import ContainerClient, ExponentialRetry

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=BLOB_CONNECTIONS, pool_maxsize=BLOB_CONNECTIONS
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    options: dict[str, Any] = {
        "retry_policy": ExponentialRetry(
            initial_backoff=0,
            increment_base=2,
            retry_total=BLOB_RETRIES,
            retry_connect=1,  # a refused connection or unknown host: one more try, 1-3 s on
            random_jitter_range=1,
            retry_to_secondary=False,
        ),
        "transport": RequestsTransport(session=session, session_owner=True),
        "connection_timeout": BLOB_CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": BLOB_READ_TIMEOUT_SECONDS,
    }
    try:
        if connection_string:
            return ContainerClient.from_connection_string(connection_string, container, **options)
        return ContainerClient(str(account_url), container, credential=credential, **options)
    except ValueError:  # never echo the string: it holds a key
        what = "storage connection string" if connection_string else "--account-url"
        raise ConfigError(
            f"the {what} is malformed: expected "
            + (
                "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=..."
                if connection_string
                else "https://ACCOUNT.blob.core.windows.net/"
            )
        ) from None
