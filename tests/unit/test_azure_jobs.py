"""The Azure job backend without a network: error translation with the SDKs' own exception
classes, the credential it builds, what each command requires, and the dead-letter and
count paths on the Service Bus double (tests/support/azure_service_bus.py; what that double
does not exercise is listed there). Blob listing and reading run on Azurite in
tests/integration/azure/test_jobs.py.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus._pyamqp.message import Message, Properties
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

from azure_function import jobs
from azure_function.job_backend import AzureJobBackend, message_body
from azure_function.job_errors import LOGIN, namespace_resource, queue_resource, translate_error
from azure_function.jobs import (
    check_credential,
    default_credential,
    fully_qualified_namespace,
    namespace_of_connection_string,
    open_backend,
)
from core.errors import CloudUnavailableError, ConfigError, ProviderUnavailableError
from core.ops.target import resolve_target
from tests.conftest import REPO_ROOT
from tests.support.azure_service_bus import CONNECTION_STRING, FakeServiceBus

if TYPE_CHECKING:
    from core.ops.target import Target

QUEUE = queue_resource("tasks", "sb-x")
NO_CREDENTIALS = f"no usable credentials for Service Bus queue 'tasks' on sb-x: {LOGIN}"
CHECK = "check --queue and --namespace (or --connection-string)"
ROLES = "the caller needs 'Azure Service Bus Data Sender' and 'Data Receiver' on the queue"
AZURE_ENV = (
    "SERVICEBUS_CONNECTION__fullyQualifiedNamespace",
    "TASK_QUEUE_NAME",
    "SERVICEBUS_CONNECTION_STRING",
    "RESULTS_BLOB_ACCOUNT_URL",
    "RESULTS_BLOB_CONNECTION_STRING",
    "RESULTS_CONTAINER",
    "RESULTS_PREFIX",
)


def response(status: int) -> SimpleNamespace:
    """What azure-core's HttpResponseError reads from a response."""
    return SimpleNamespace(status_code=status, reason="canned")


# --- translate_error (job_errors) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "starts", "fix"),
    [
        (
            MessagingEntityNotFoundError(message="gone"),
            "Service Bus queue 'tasks' on sb-x does not exist (gone)",
            f": {CHECK}",
        ),
        (
            ServiceBusCommunicationError(message="ns?"),
            "cannot reach Service Bus queue 'tasks' on sb-x (ns?)",
            f": {CHECK}, and the network",
        ),
        (
            ServiceBusAuthenticationError(message="sas"),
            "access denied to Service Bus queue 'tasks' on sb-x (sas)",
            f": {ROLES} (or a connection string with Send and Listen)",
        ),
        (
            ServiceBusAuthorizationError(message="claims"),
            "access denied to Service Bus queue 'tasks' on sb-x (claims)",
            "(or a connection string with Send and Listen)",
        ),
        (
            MessagingEntityDisabledError(message="off"),
            "Service Bus queue 'tasks' on sb-x refused the request",
            "(it is disabled, enable it: off)",
        ),
        (
            ServiceBusConnectionError(
                message="Failed to initiate the connection due to exception: "
                "[Errno -2] Name or service not known"
            ),
            "cannot reach Service Bus queue 'tasks' on sb-x ([Errno -2] Name or service not known)",
            f": {CHECK}, and the network",
        ),
        (
            ResourceNotFoundError(message="ContainerNotFound"),
            "Service Bus queue 'tasks' on sb-x does not exist (ContainerNotFound)",
            f": {CHECK}",
        ),
        (
            ClientAuthenticationError(message="no", response=response(403)),
            "access denied to Service Bus queue 'tasks' on sb-x (no)",
            "(or a connection string with Send and Listen)",
        ),
        (
            HttpResponseError(message="forbidden", response=response(403)),
            "access denied to Service Bus queue 'tasks' on sb-x (forbidden)",
            "(or a connection string with Send and Listen)",
        ),
        (
            HttpResponseError(message="bad", response=response(400)),
            "Service Bus queue 'tasks' on sb-x refused the request",
            "(bad)",
        ),
        (
            ServiceRequestError("HTTPConnectionPool: [Errno 111] Connection refused"),
            "cannot reach Service Bus queue 'tasks' on sb-x ([Errno 111] Connection refused)",
            f": {CHECK}, and the network",
        ),
        (
            CredentialUnavailableError(message="DefaultAzureCredential failed"),
            NO_CREDENTIALS,
            NO_CREDENTIALS,
        ),
        (ClientAuthenticationError(message="token request failed"), NO_CREDENTIALS, NO_CREDENTIALS),
        (
            ValueError("bad url"),
            "Service Bus queue 'tasks' on sb-x refused the request",
            "(bad url)",
        ),
    ],
)
def test_errors_no_retry_can_fix_are_one_line_config_errors(
    error: Exception, starts: str, fix: str
) -> None:
    # GIVEN an SDK error of a kind no retry can fix / WHEN translated
    translated = translate_error(error, QUEUE)
    # THEN it is a ConfigError of one line that says what, where, and how to fix it
    assert isinstance(translated, ConfigError)
    assert str(translated).startswith(starts)
    assert str(translated).endswith(fix)
    assert "\n" not in str(translated)


@pytest.mark.parametrize(
    "error",
    [
        OperationTimeoutError(message="timed out"),
        ServiceBusServerBusyError(message="busy"),
        ServiceBusQuotaExceededError(message="queue full"),
        ServiceBusConnectionError(message="connection reset by peer"),
        HttpResponseError(message="busy", response=response(503)),
        HttpResponseError(message="slow down", response=response(429)),
        ServiceResponseError("connection dropped mid-response"),
        ConnectionResetError("reset"),
    ],
)
def test_errors_another_try_may_fix_are_cloud_unavailable(error: Exception) -> None:
    # GIVEN a transient SDK error / WHEN translated / THEN "try again", in one line
    translated = translate_error(error, QUEUE)
    assert isinstance(translated, CloudUnavailableError)
    assert str(translated).startswith("Service Bus queue 'tasks' on sb-x: try again later (")
    assert "\n" not in str(translated)


def test_a_credential_failure_inside_another_error_is_no_credentials() -> None:
    # GIVEN a Service Bus error raised while its credential failed (the CBS token request)
    try:
        try:
            raise CredentialUnavailableError(message="EnvironmentCredential unavailable\nmore")
        except CredentialUnavailableError as cause:
            raise ServiceBusAuthenticationError(message="CBS failed") from cause
    except ServiceBusAuthenticationError as error:
        translated = translate_error(error, QUEUE)
    # THEN the user reads the one credentials line, not the chain's report
    assert isinstance(translated, ConfigError)
    assert str(translated) == NO_CREDENTIALS


def test_bugs_are_raised_again() -> None:
    # GIVEN a programming error / WHEN translated
    bug = TypeError("bug")
    # THEN it is not disguised as a cloud failure: the same exception is raised
    with pytest.raises(TypeError) as raised:
        translate_error(bug, QUEUE)
    assert raised.value is bug


# --- credentials -------------------------------------------------------------------------------


def test_default_credential_keeps_only_the_quick_credentials() -> None:
    # WHEN the backend's DefaultAzureCredential is built
    credential = default_credential()
    kinds = [type(c).__name__ for c in credential.credentials]
    # THEN the slow or interactive ones are left out, and the CLIs get a short timeout
    assert "EnvironmentCredential" in kinds
    assert "ManagedIdentityCredential" in kinds
    assert "AzureCliCredential" in kinds
    for left_out in (
        "InteractiveBrowserCredential",
        "AzurePowerShellCredential",
        "VisualStudioCodeCredential",
        "SharedTokenCacheCredential",
        "BrokerCredential",
    ):
        assert left_out not in kinds
    cli = next(c for c in credential.credentials if type(c).__name__ == "AzureCliCredential")
    assert vars(cli)["_process_timeout"] == jobs.CREDENTIAL_PROCESS_TIMEOUT_SECONDS


def test_no_credentials_is_one_line_and_prints_no_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an environment without any credential (no variables, no az on PATH)
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT",
                 "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("HOME", str(tmp_path))
    # WHEN a token is asked for
    namespace = namespace_resource("sb-x.servicebus.windows.net")
    with pytest.raises(ConfigError) as raised:
        check_credential(default_credential(), jobs.SERVICE_BUS_SCOPE, namespace)
    # THEN the error is the one line naming the namespace and how to log in, and the
    # credential chain's report went nowhere
    assert str(raised.value) == (
        f"no usable credentials for Service Bus namespace sb-x.servicebus.windows.net: {LOGIN}"
    )
    captured = capsys.readouterr()
    assert "EnvironmentCredential" not in captured.err + captured.out


# --- settings ---------------------------------------------------------------------------------


def target(flags: dict[str, str], environ: dict[str, str] | None = None) -> Target:
    """The settings resolved from ``flags`` and ``environ`` alone."""
    args = argparse.Namespace(stack=None, config=None, **flags)
    return resolve_target("azure", jobs.SETTINGS, args, environ=environ or {})


@pytest.mark.parametrize(
    ("command", "flags", "needs"),
    [
        ("submit", {}, "adder submit azure needs queue: give --queue"),
        ("submit", {"queue": "q"}, "needs namespace: give --namespace"),
        ("redrive", {"queue": "q"}, "; or --connection-string"),
        ("fetch", {}, "adder fetch azure needs container: give --container"),
        ("watch", {"container": "c"}, "needs account url: give --account-url"),
        ("status", {"container": "c"}, "; or --blob-connection-string"),
    ],
)
def test_each_command_requires_what_it_uses(
    command: str, flags: dict[str, str], needs: str, tmp_path: object
) -> None:
    # GIVEN settings missing what the command needs / WHEN the backend is opened
    with pytest.raises(ConfigError) as raised:
        open_backend(target(flags), command)
    # THEN the error names the missing setting and every way to give it
    assert needs in str(raised.value)
    assert "\n" not in str(raised.value)


def test_settings_come_from_the_function_s_app_settings() -> None:
    # GIVEN the function's own app settings in the environment
    environ = {
        "SERVICEBUS_CONNECTION__fullyQualifiedNamespace": "sb-adder-1a2b3c",
        "TASK_QUEUE_NAME": "tasks",
        "RESULTS_CONTAINER": "results",
        "RESULTS_PREFIX": "p",
        "RESULTS_BLOB_ACCOUNT_URL": "https://acct.blob.core.windows.net/",
    }
    # WHEN resolved / THEN each setting is found
    resolved = target({}, environ)
    assert resolved.values == {
        "namespace": "sb-adder-1a2b3c",
        "queue": "tasks",
        "container": "results",
        "prefix": "p",
        "account_url": "https://acct.blob.core.windows.net/",
    }
    # AND secrets are marked so that manifests leave them out
    assert {s.name for s in jobs.SETTINGS if s.secret} == {
        "connection_string",
        "blob_connection_string",
    }


def test_connection_strings_build_clients_without_connecting() -> None:
    # GIVEN connection strings for both services / WHEN a status backend is opened
    blob = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    backend = open_backend(
        target(
            {
                "queue": "tasks",
                "connection_string": CONNECTION_STRING,
                "container": "results",
                "blob_connection_string": blob,
                "prefix": "/p/",
            }
        ),
        "status",
    )
    # THEN it names both places (nothing was contacted yet)
    try:
        assert backend.queue_label == "Service Bus queue tasks on sb-test.servicebus.windows.net"
        assert backend.results_label == "http://127.0.0.1:9/devstoreaccount1/results/p/"
        assert backend.max_concurrency == 1
    finally:
        backend.close()


def test_a_malformed_connection_string_is_not_echoed() -> None:
    # GIVEN a connection string with a key but no endpoint
    secret = "SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"
    # WHEN a submit backend is opened / THEN the error explains the shape, not the key
    with pytest.raises(ConfigError) as raised:
        open_backend(target({"queue": "q", "connection_string": secret}), "submit")
    assert "malformed" in str(raised.value)
    assert "c2VjcmV0" not in str(raised.value)


def test_missing_sdk_is_provider_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an environment without azure-storage-blob
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    # WHEN a backend is opened / THEN it says what to install
    with pytest.raises(ProviderUnavailableError) as raised:
        open_backend(target({"container": "c", "blob_connection_string": "x"}), "fetch")
    assert "pip install 'adder-tasks[azure]'" in str(raised.value)


def test_importing_the_module_imports_no_sdk() -> None:
    # WHEN azure_function.jobs is imported in a fresh interpreter
    done = subprocess.run(
        [sys.executable, "-c", "import sys, azure_function.jobs, azure_function.job_backend, "
         "azure_function.job_errors; "
         "print(sorted(m for m in sys.modules if m.startswith('azure.')))"],
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
    )  # fmt: skip
    # THEN no Azure SDK module was loaded
    assert done.stdout.strip() == "[]"


def test_namespace_names() -> None:
    # GIVEN short and full names / THEN both become the namespace's host name
    assert fully_qualified_namespace("sb-adder-1a2b3c") == "sb-adder-1a2b3c.servicebus.windows.net"
    assert fully_qualified_namespace("sb://ns.servicebus.chinacloudapi.cn/") == (
        "ns.servicebus.chinacloudapi.cn"
    )
    assert namespace_of_connection_string(CONNECTION_STRING) == "sb-test.servicebus.windows.net"


# --- the backend on the Service Bus double -----------------------------------------------------


def test_dead_letters_are_received_deleted_and_released() -> None:
    # GIVEN three dead letters
    bus = FakeServiceBus()
    for body in (b"a", b"b", b"c"):
        bus.dead_letter(body)
    backend = AzureJobBackend(bus.parts())
    # WHEN two are received, one deleted and one released
    first, second = backend.receive_dead_letters(2)
    assert (first.body, second.body) == (b"a", b"b")
    assert isinstance(first.handle, ServiceBusReceivedMessage)
    backend.delete_dead_letters([first])
    backend.release_dead_letters([second])
    # THEN the released one is back, the deleted one is gone, nothing stays locked
    assert [body for _, body in bus.dead] == [b"b", b"c"]
    assert bus.locked == {}


def test_a_lost_lock_on_delete_leaves_the_letter_for_later() -> None:
    # GIVEN a received dead letter whose lock expired (the broker gave it back)
    bus = FakeServiceBus()
    bus.dead_letter(b"a")
    backend = AzureJobBackend(bus.parts())
    letters = backend.receive_dead_letters(1)
    bus.dead.insert(0, ("dl-0", bus.locked.pop("dl-0")))
    # WHEN it is deleted / THEN no error stops the redrive, and the letter stays (a later
    # receive moves it again: a duplicate, never a loss)
    backend.delete_dead_letters(letters)
    assert [body for _, body in bus.dead] == [b"a"]


def test_counts_come_from_the_runtime_properties() -> None:
    # GIVEN 2 messages waiting and 1 dead letter
    bus = FakeServiceBus()
    bus.queued += [("1", b"x"), ("2", b"y")]
    bus.dead_letter(b"z")
    backend = AzureJobBackend(bus.parts())
    # WHEN counted / THEN the real administration client parsed the service's answer
    assert backend.dead_letter_count() == 1
    depth = backend.queue_depth()
    assert (depth.waiting, depth.in_flight) == (2, None)
    assert bus.admin_requests[0].startswith("https://sb-test.servicebus.windows.net/tasks?")


def test_counts_without_manage_rights_are_unknown_with_one_note() -> None:
    # GIVEN an identity without Manage rights
    bus = FakeServiceBus(manage_allowed=False)
    notes = io.StringIO()
    backend = AzureJobBackend(bus.parts(), notes=notes)
    # WHEN counted twice / THEN unknown, one note, and the service asked only once
    assert backend.dead_letter_count() is None
    assert backend.queue_depth().waiting is None
    assert notes.getvalue().count("\n") == 1
    assert "Azure Service Bus Data Owner" in notes.getvalue()
    assert len(bus.admin_requests) == 1


def test_counts_of_a_missing_queue_are_a_config_error() -> None:
    # GIVEN a queue the namespace does not have / WHEN counted / THEN ConfigError
    backend = AzureJobBackend(FakeServiceBus(exists=False).parts())
    with pytest.raises(ConfigError) as raised:
        backend.dead_letter_count()
    assert str(raised.value).startswith(
        "Service Bus queue 'tasks' on sb-test.servicebus.windows.net does not exist ("
    )
    assert str(raised.value).endswith(f": {CHECK}")


def test_a_backend_without_a_part_says_which_setting_is_missing() -> None:
    # GIVEN a backend opened for fetch (no queue) and one for redrive (no container)
    # WHEN the missing part is used / THEN a ConfigError names its settings
    with pytest.raises(ConfigError, match="--queue"):
        AzureJobBackend().send_batch([b"{}"])
    with pytest.raises(ConfigError, match="--container"):
        list(AzureJobBackend(FakeServiceBus().parts()).list_records())
    assert AzureJobBackend().dead_letter_count() is None


def test_message_bodies_of_other_producers_become_bytes() -> None:
    # GIVEN a message whose body is an AMQP value (not data sections), as other SDKs may send
    value = ServiceBusReceivedMessage(
        Message(value="{'id': 1}", properties=Properties(message_id=b"m")), receiver=None
    )
    data = ServiceBusReceivedMessage(Message(data=[b"ab", b"c"]), receiver=None)
    # THEN both become bytes: data sections joined, a value as its text
    assert message_body(data) == b"abc"
    assert message_body(value) == b"{'id': 1}"
