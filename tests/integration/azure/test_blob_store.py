"""BlobResultStore against Azurite: the shared contract, then what is particular to Blob."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobServiceClient

from azure_function.blob_store import BlobResultStore, default_retry, store_from_environment
from core.errors import ConfigError, InvalidTaskError, StoreWriteError
from core.pipeline import process_message
from core.records import ErrorRecord
from tests.integration.azure.conftest import connection_string
from tests.store_contract import Reader, ResultStoreContract
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

PREFIX = "runs/r1"
FAST_RETRY = {"initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0}


def reader(container: ContainerClient, prefix: str) -> Reader:
    """Read ``{prefix}/{name}`` from the container, or None when it does not exist."""

    def read(name: str) -> bytes | None:
        key = f"{prefix}/{name}" if prefix else name
        try:
            data: bytes = container.download_blob(key).readall()
        except ResourceNotFoundError:
            return None
        return data

    return read


class TestBlobStore(ResultStoreContract):
    """The ResultStore contract, on an Azurite container under a prefix."""

    @pytest.fixture
    def store(self, azurite: Azurite, container: ContainerClient) -> BlobResultStore:
        return BlobResultStore(
            container.container_name, PREFIX, connection_string=azurite.connection_string
        )

    @pytest.fixture
    def read(self, container: ContainerClient) -> Reader:
        return reader(container, PREFIX)

    @pytest.fixture
    def broken_store(self) -> BlobResultStore:
        # a loopback port where nothing listens; the production retry count, without waits
        return BlobResultStore(
            "any-container",
            PREFIX,
            connection_string=connection_string(free_port()),
            retry=default_retry(**FAST_RETRY),
        )


def test_blobs_carry_content_types(azurite: Azurite, container: ContainerClient) -> None:
    # GIVEN a store
    store = BlobResultStore(
        container.container_name, PREFIX, connection_string=azurite.connection_string
    )
    # WHEN a result and an error record are written
    store.write_result("ct", "7")
    error = InvalidTaskError("invalid_json", "not JSON")
    store.write_error(ErrorRecord.for_rejection(error, b"nope"))
    # THEN the result is text and the record JSON
    result = container.get_blob_client(f"{PREFIX}/ct.out").get_blob_properties()
    assert result.content_settings.content_type == "text/plain"
    (record_name,) = [n for n in container.list_blob_names() if n.endswith(".err")]
    record = container.get_blob_client(record_name).get_blob_properties()
    assert record.content_settings.content_type == "application/json"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("", "p1.out"), ("a/b", "a/b/p1.out"), ("/a/b/", "a/b/p1.out")],
)
def test_prefix_is_normalised_and_nothing_lands_outside_it(
    azurite: Azurite, container: ContainerClient, prefix: str, expected: str
) -> None:
    # GIVEN a store with this prefix
    store = BlobResultStore(
        container.container_name, prefix, connection_string=azurite.connection_string
    )
    # WHEN the pipeline handles a good and a bad task
    process_message(b'{"id": "p1", "data": {"num1": 1, "num2": 2}}', store)
    bad = process_message(b"[1, 2]", store)
    # THEN exactly the two records exist, under the prefix
    start = expected.removesuffix("p1.out")
    assert sorted(container.list_blob_names()) == sorted([expected, f"{start}{bad.name}.err"])


def test_service_client_is_built_once_and_reused(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a store, and a count of the clients built from a connection string
    built: list[BlobServiceClient] = []
    original = BlobServiceClient.from_connection_string.__func__  # type: ignore[attr-defined]

    def counting(
        cls: type[BlobServiceClient], /, *args: object, **kwargs: object
    ) -> BlobServiceClient:
        client: BlobServiceClient = original(cls, *args, **kwargs)
        built.append(client)
        return client

    monkeypatch.setattr(BlobServiceClient, "from_connection_string", classmethod(counting))
    store = BlobResultStore(
        container.container_name, PREFIX, connection_string=azurite.connection_string
    )
    # THEN building the store creates no client
    assert built == []
    # WHEN it writes several times, from several threads
    threads = [
        threading.Thread(target=store.write_result, args=(f"t{i}", str(i))) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN one client was built, and every write landed
    assert len(built) == 1
    assert store.client is built[0]
    assert len(list(container.list_blob_names())) == 8


def test_an_injected_client_is_used(azurite: Azurite, container: ContainerClient) -> None:
    # GIVEN a client built by the caller
    client = azurite.service()
    store = BlobResultStore(container.container_name, client=client)
    # WHEN a result is written / THEN it went through that client
    store.write_result("inj", "1")
    assert store.client is client
    assert container.download_blob("inj.out").readall() == b"1"


def test_missing_container_is_a_store_write_error(azurite: Azurite) -> None:
    # GIVEN a store for a container that does not exist
    store = BlobResultStore("no-such-container", connection_string=azurite.connection_string)
    # WHEN a result is written / THEN the SDK's error becomes a StoreWriteError
    with pytest.raises(StoreWriteError, match="no-such-container") as caught:
        store.write_result("t1", "1")
    assert isinstance(caught.value.__cause__, ResourceNotFoundError)


def test_stopped_emulator_is_a_store_write_error(private_azurite: Azurite) -> None:
    # GIVEN a store that has written once to a running Azurite
    private_azurite.service().create_container("results")
    store = BlobResultStore(
        "results",
        connection_string=private_azurite.connection_string,
        retry=default_retry(**FAST_RETRY),
    )
    store.write_result("before", "1")
    # WHEN Azurite stops and the store writes again
    private_azurite.stop()
    with pytest.raises(StoreWriteError) as caught:
        store.write_result("after", "2")
    # THEN the connection failure is reported as a transient store failure
    assert isinstance(caught.value.__cause__, ServiceRequestError)


class _Unavailable(BaseHTTPRequestHandler):
    """Answers every request with 503 and counts them."""

    requests: list[str]

    def do_PUT(self) -> None:
        self.requests.append(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        body = (
            b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
            b"<Message>The server is busy.</Message></Error>"
        )
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-error-code", "ServerBusy")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unavailable_endpoint() -> Iterator[tuple[int, list[str]]]:
    """A loopback blob endpoint that is always busy, and the requests it saw."""
    seen: list[str] = []
    handler = type("Handler", (_Unavailable,), {"requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_sdk_retry_policy_retries_three_times_then_gives_up(
    unavailable_endpoint: tuple[int, list[str]],
) -> None:
    # GIVEN a store whose endpoint always answers 503 (the production policy, with short waits)
    port, requests = unavailable_endpoint
    store = BlobResultStore(
        "results", connection_string=connection_string(port), retry=default_retry(**FAST_RETRY)
    )
    # WHEN a result is written
    with pytest.raises(StoreWriteError, match="results"):
        store.write_result("busy", "1")
    # THEN the SDK tried 1 + 3 times, and nothing retried on top of it
    assert requests == ["/devstoreaccount1/results/busy.out"] * 4


def test_configuration_errors() -> None:
    # GIVEN no endpoint at all / THEN the store refuses to be built
    with pytest.raises(ConfigError, match="RESULTS_BLOB_ACCOUNT_URL"):
        BlobResultStore("results")
    # GIVEN app settings without a container / THEN store_from_environment names the setting
    with pytest.raises(ConfigError, match="RESULTS_CONTAINER"):
        store_from_environment({"RESULTS_BLOB_ACCOUNT_URL": "https://a.blob.core.windows.net"})


def test_from_environment_reads_the_app_settings(
    azurite: Azurite, container: ContainerClient
) -> None:
    # GIVEN the app settings of docs/design.md, with a connection string for Azurite
    settings = {
        "RESULTS_BLOB_CONNECTION_STRING": azurite.connection_string,
        "RESULTS_CONTAINER": container.container_name,
        "RESULTS_PREFIX": "env-prefix",
    }
    # WHEN the store writes an error record
    store = store_from_environment(settings)
    store.write_error(ErrorRecord.for_rejection(InvalidTaskError("empty", "empty", "e1"), b""))
    # THEN it is in the container, under the prefix
    stored = reader(container, "env-prefix")("e1.err")
    assert stored is not None and json.loads(stored)["error"] == "empty"
