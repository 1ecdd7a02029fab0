"""``GcsResultStore`` against gcp-storage-emulator, with the real google-cloud-storage client."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from core.errors import InvalidTaskError, StoreWriteError
from core.records import ErrorRecord
from gcp_function.gcs_store import GcsResultStore
from tests.store_contract import Reader, ResultStoreContract
from tools.servers import free_port

if TYPE_CHECKING:
    from core.ports import ResultStore

pytestmark = pytest.mark.integration

PREFIX = "contract/run-7"


class TestGcsStore(ResultStoreContract):
    """The shared ResultStore contract, on a fresh emulator bucket per test."""

    @pytest.fixture
    def store(self, new_bucket: Any, gcs_client: Any) -> ResultStore:
        return GcsResultStore(new_bucket.name, PREFIX, client=gcs_client)

    @pytest.fixture
    def read(self, new_bucket: Any) -> Reader:
        def reader(name: str) -> bytes | None:
            blob = new_bucket.get_blob(f"{PREFIX}/{name}")
            return None if blob is None else bytes(blob.download_as_bytes())

        return reader

    @pytest.fixture
    def broken_store(self) -> ResultStore:
        # a client for a loopback port where nothing listens; the SDK retries for 1 s
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[import-untyped]

        client = storage.Client(
            project="p",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": f"http://127.0.0.1:{free_port()}"},
        )
        return GcsResultStore("any-bucket", PREFIX, client=client, retry_seconds=1)


def test_objects_have_content_types_and_nothing_lands_outside_the_prefix(
    new_bucket: Any, gcs_client: Any
) -> None:
    # GIVEN a store with a prefix written with surrounding slashes
    store = GcsResultStore(new_bucket.name, "/deep/prefix/", client=gcs_client)
    # WHEN a result and an error record are written
    store.write_result("t1", "3")
    store.write_error(ErrorRecord.for_rejection(InvalidTaskError("invalid_json", "bad"), b"{"))
    # THEN both are under deep/prefix/ with the content types readers expect
    blobs = {blob.name: blob for blob in gcs_client.list_blobs(new_bucket.name)}
    names = sorted(blobs)
    assert names[0].startswith("deep/prefix/invalid-") and names[0].endswith(".err")
    assert names[1] == "deep/prefix/t1.out"
    assert blobs["deep/prefix/t1.out"].content_type == "text/plain"
    assert blobs[names[0]].content_type == "application/json"
    assert json.loads(blobs[names[0]].download_as_bytes())["raw"] == "{"


def test_empty_prefix_writes_at_the_bucket_root(new_bucket: Any, gcs_client: Any) -> None:
    store = GcsResultStore(new_bucket.name, "", client=gcs_client)
    store.write_result("root-task", "1")
    assert [blob.name for blob in gcs_client.list_blobs(new_bucket.name)] == ["root-task.out"]


def test_missing_bucket_is_a_store_write_error_caused_by_the_sdk(gcs_client: Any) -> None:
    # GIVEN a store whose bucket does not exist
    store = GcsResultStore("adder-missing-bucket", PREFIX, client=gcs_client)
    # WHEN a result is written / THEN the transient failure type is raised, SDK error chained
    where = re.escape("gs://adder-missing-bucket/contract/run-7/t.out")
    with pytest.raises(StoreWriteError, match=where):
        store.write_result("t", "1")


def test_unreachable_service_gives_up_within_the_retry_budget() -> None:
    # GIVEN a client pointed at a closed loopback port, and a 2 s retry budget
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test-project",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": f"http://127.0.0.1:{free_port()}"},
    )
    store = GcsResultStore("bucket", "p", client=client, retry_seconds=2.0, request_timeout=1.0)
    # WHEN a write is attempted
    started = time.monotonic()
    with pytest.raises(StoreWriteError) as caught:
        store.write_result("t", "1")
    elapsed = time.monotonic() - started
    # THEN the SDK retried (connection errors are retryable) until the budget ran out
    cause = caught.value.__cause__
    assert type(cause).__name__ == "RetryError"
    assert "Timeout of 2.0s exceeded" in str(cause)
    assert "Connection refused" in str(cause)
    assert 0.3 <= elapsed < 10.0


def client_of(store: GcsResultStore) -> object:
    return store._client


def test_the_client_is_created_once_and_reused(new_bucket: Any, gcs_emulator: str) -> None:
    # GIVEN a store that builds its own client (STORAGE_EMULATOR_HOST points it at the emulator)
    import os

    os.environ["STORAGE_EMULATOR_HOST"] = gcs_emulator
    store = GcsResultStore(new_bucket.name, PREFIX)
    assert client_of(store) is None  # nothing is created before the first write
    # WHEN two writes happen
    store.write_result("a", "1")
    first = client_of(store)
    store.write_result("b", "2")
    # THEN both used the one client built on the first write
    assert first is not None
    assert client_of(store) is first
    assert new_bucket.get_blob(f"{PREFIX}/b.out").download_as_bytes() == b"2"
