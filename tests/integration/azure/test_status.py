"""``adder status azure``: result counts from Azurite; queue counts through the real
administration client on a canned HTTP transport (no Service Bus emulator exists here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.servicebus.management import ServiceBusAdministrationClient

from azure_function import status
from core.cli import main

if TYPE_CHECKING:
    from azure.core.pipeline.transport import HttpRequest
    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

SB_CONNECTION_STRING = (
    "Endpoint=sb://sb-test.servicebus.windows.net/;SharedAccessKeyName=manage;"
    "SharedAccessKey=bm90LWEtcmVhbC1rZXk="
)
QUEUE_ENTRY = b"""<entry xmlns="http://www.w3.org/2005/Atom">
<id>https://sb-test.servicebus.windows.net/tasks</id><title type="text">tasks</title>
<content type="application/xml"><QueueDescription
 xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
 xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<CountDetails xmlns:d2p1="http://schemas.microsoft.com/netservices/2011/06/servicebus">
<d2p1:ActiveMessageCount>1204</d2p1:ActiveMessageCount>
<d2p1:DeadLetterMessageCount>3</d2p1:DeadLetterMessageCount>
<d2p1:ScheduledMessageCount>0</d2p1:ScheduledMessageCount>
<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>
<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount>
</CountDetails></QueueDescription></content></entry>"""
UNAUTHORIZED = b"<Error><Code>401</Code><Detail>Manage claims required.</Detail></Error>"


class CannedTransport(HttpTransport[Any, Any]):
    """Answers every request of the administration client with one fixed response."""

    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body
        self.urls: list[str] = []

    def __enter__(self) -> CannedTransport:
        return self

    def __exit__(self, *args: object) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: HttpRequest, **kwargs: Any) -> RequestsTransportResponse:
        self.urls.append(request.url)
        response = requests.Response()
        response.status_code = self.status_code
        response.reason = "canned"
        response._content = self.body
        response.headers["Content-Type"] = "application/atom+xml;type=entry;charset=utf-8"
        return RequestsTransportResponse(request, response)


def use_transport(monkeypatch: pytest.MonkeyPatch, transport: CannedTransport) -> None:
    def admin_client(args: Any, credential: object) -> ServiceBusAdministrationClient:
        return ServiceBusAdministrationClient.from_connection_string(
            args.connection_string, transport=transport, retry_total=0
        )

    monkeypatch.setattr(status, "_admin_client", admin_client)


@pytest.fixture
def records(container: ContainerClient) -> ContainerClient:
    """A container with 3 results and 1 error record under ``p``, and noise around them."""
    for name in ("p/a.out", "p/b.out", "p/c.out", "p/invalid-1.err", "p/x/d.out", "e.out"):
        container.upload_blob(name, b"1")
    return container


def test_status_shows_queue_and_result_counts(
    azurite: Azurite,
    records: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a queue with 1,204 active and 3 dead-lettered messages, and records under "p"
    transport = CannedTransport(200, QUEUE_ENTRY)
    use_transport(monkeypatch, transport)
    # WHEN status runs
    code = main([
        "status", "azure", "--connection-string", SB_CONNECTION_STRING, "--queue", "tasks",
        "--blob-connection-string", azurite.connection_string,
        "--container", records.container_name, "--prefix", "p",
    ])  # fmt: skip
    # THEN it prints both, read from the queue's runtime properties and the blob listing
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == [
        "queue tasks on sb-test.servicebus.windows.net: 1,204 active, 0 scheduled, 3 dead-lettered",
        f"results in {records.container_name}/p/: 3 .out, 1 .err",
    ]
    assert transport.urls[0].startswith("https://sb-test.servicebus.windows.net/tasks?")


def test_queue_counts_without_manage_rights_are_reported_unavailable(
    azurite: Azurite,
    records: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN an identity that may send but not manage (the service answers 401)
    use_transport(monkeypatch, CannedTransport(401, UNAUTHORIZED))
    # WHEN status runs
    code = main([
        "status", "azure", "--connection-string", SB_CONNECTION_STRING, "--queue", "tasks",
        "--blob-connection-string", azurite.connection_string,
        "--container", records.container_name, "--prefix", "p",
    ])  # fmt: skip
    # THEN the results are still counted, the queue part says why it is missing, exit 1
    captured = capsys.readouterr()
    assert code == 1
    assert "queue tasks: counts unavailable" in captured.err
    assert captured.out.strip() == f"results in {records.container_name}/p/: 3 .out, 1 .err"


def test_results_of_a_missing_container_are_unavailable(
    azurite: Azurite, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a container that does not exist / WHEN status runs on it
    code = main([
        "status", "azure", "--blob-connection-string", azurite.connection_string,
        "--container", "does-not-exist",
    ])  # fmt: skip
    # THEN it says the results are unavailable and exits 1
    assert code == 1
    assert "results: unavailable" in capsys.readouterr().err
