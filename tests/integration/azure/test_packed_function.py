"""The packed layout on Azure: the batch trigger's function, writing packs to Azurite.

Batches are ``list[ServiceBusMessage]`` built by the library's trigger converter from the
invocation the host sends for ``cardinality=many`` with ``dataType: binary``
(tests/integration/azure/batches.py). The store is the one the app builds from its app
settings, or a production-configured BlobResultStore behind a fault proxy. The host's batch
dispatch itself (batch sizes, completing or abandoning a batch) needs Service Bus and is not
run here: a test that redelivers hands the same messages over again, as the host would after
an abandon.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest

from azure_function import function_app
from azure_function.blob_store import RETRIES, BlobResultStore, default_retry
from core.clouds import CLOUDS
from core.errors import StoreWriteError
from core.packaging import build_package
from core.packing import PACK_CONTENT_TYPE, is_pack_name, pack_key, unpack
from tests.integration.azure.batches import (
    Sent,
    batch_of,
    packed_settings,
    packed_user_function,
)
from tests.integration.azure.conftest import ACCOUNT, connection_string
from tests.integration.azure.messages import (
    AZURE_EVENTS,
    app_settings_for,
    registered_function,
    servicebus_message,
)
from tools.fault_proxy import FaultProxy, FaultRule

if TYPE_CHECKING:
    from pathlib import Path

    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

PER_TASK_PREFIX = "jobs/per-task"
PACKED_PREFIX = "jobs/packed"
NO_WAITS = {"initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0}

BAD_BODIES = [
    b'{"id": "b-number", "data": {"num1": true, "num2": 1}}',
    b'{"id": "b-missing", "data": {"num1": 1}}',
    b'{"id": "a/b", "data": {"num1": 1, "num2": 1}}',
    b'{"id": "..", "data": {"num1": 1, "num2": 1}}',
    b"not json \xff",
    b"",
    b"[" * 5000,
]
BAD_CODES = [
    "invalid_number",
    "missing_field",
    "invalid_id",
    "invalid_id",
    "invalid_encoding",
    "empty",
    "too_deep",
]


def sent_messages() -> list[Sent]:
    """Every sample message, the bad bodies, and a few good ones, each a first delivery."""
    bodies = [servicebus_message(name).get_body() for name in AZURE_EVENTS] + BAD_BODIES
    bodies += [
        f'{{"id": "g-{i}", "data": {{"num1": {10**30 + i}, "num2": -0.5}}}}'.encode()
        for i in range(5)
    ]
    unique = dict.fromkeys(bodies)  # one record each (an empty sample is also a bad body)
    return [Sent(body, f"sb-{index}") for index, body in enumerate(unique)]


def blobs_under(container: ContainerClient, prefix: str) -> dict[str, bytes]:
    """Every blob under ``prefix/``, by name relative to it."""
    return {
        name.removeprefix(prefix + "/"): container.download_blob(name).readall()
        for name in container.list_blob_names(name_starts_with=prefix + "/")
    }


def the_pack(container: ContainerClient, prefix: str) -> tuple[str, bytes]:
    """The one blob under ``prefix/``, which must be a pack: its name and bytes."""
    ((name, body),) = blobs_under(container, prefix).items()
    assert name.startswith("packed/") and is_pack_name(name.removeprefix("packed/")), name
    return name, body


def test_a_packed_batch_is_one_blob_that_unpacks_to_the_per_task_blobs(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = sent_messages()
    # GIVEN the messages handled one by one by the default app under one prefix
    with app_settings_for(
        monkeypatch, azurite.connection_string, container.container_name, PER_TASK_PREFIX
    ):
        single = registered_function().get_user_function()
        for message in batch_of(messages):
            assert single(message) is None
    per_task = blobs_under(container, PER_TASK_PREFIX)
    # WHEN the same messages arrive as one batch at the packed app, under another prefix
    with (
        app_settings_for(
            monkeypatch, azurite.connection_string, container.container_name, PACKED_PREFIX
        ),
        packed_settings(monkeypatch),
    ):
        returned = packed_user_function()(batch_of(messages))
    # THEN it returns normally (the host completes the batch), having written one blob: a
    # pack named by its content, of the pack content type
    assert returned is None
    name, body = the_pack(container, PACKED_PREFIX)
    assert f"{PACKED_PREFIX}/{name}" == pack_key(PACKED_PREFIX, body)
    properties = container.get_blob_client(f"{PACKED_PREFIX}/{name}").get_blob_properties()
    assert properties.content_settings.content_type == PACK_CONTENT_TYPE
    # AND unpacked, it is exactly the per-task blobs, name for name and byte for byte
    unpacked = {record.file_name: record.content for record in unpack(body)}
    assert unpacked == per_task
    assert len(unpacked) == len(messages)


def test_bad_messages_in_a_batch_get_their_error_records_in_the_pack(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a batch of bad messages between two good ones
    good = [b'{"id": "first", "data": {"num1": 1, "num2": 2}}']
    good.append(b'{"id": "last", "data": {"num1": 0.1, "num2": 0.2}}')
    bodies = [good[0], *BAD_BODIES, good[1]]
    with (
        app_settings_for(
            monkeypatch, azurite.connection_string, container.container_name, PACKED_PREFIX
        ),
        packed_settings(monkeypatch),
    ):
        # WHEN the packed function handles it
        packed_user_function()(batch_of([Sent(b, f"m-{i}") for i, b in enumerate(bodies)]))
    # THEN the container holds the one pack, and nothing else anywhere
    _, body = the_pack(container, PACKED_PREFIX)
    assert len(list(container.list_blob_names())) == 1
    records = unpack(body)
    # AND the pack holds both results and one error record per bad message, with its code
    # and the message's bytes (a name that is no task id is named by the hash)
    results = {r.name: r.content for r in records if r.suffix == ".out"}
    assert results == {"first": b"3", "last": b"0.3"}
    errors = [json.loads(r.content) for r in records if r.suffix == ".err"]
    assert sorted(e["error"] for e in errors) == sorted(BAD_CODES)
    names = [r.name for r in records if r.suffix == ".err"]
    assert all(re.fullmatch(r"b-\w+|invalid-[0-9a-f]{64}", name) for name in names), names


def fault_store(proxy: FaultProxy, container: ContainerClient) -> BlobResultStore:
    """The production store (its retry count, no waits) writing through ``proxy``."""
    return BlobResultStore(
        container.container_name,
        PACKED_PREFIX,
        connection_string=connection_string(proxy.port),
        retry=default_retry(**NO_WAITS),
    )


def pack_rule(container: ContainerClient, status: int, **kwargs: object) -> FaultRule:
    """Fail the PUTs of packs under PACKED_PREFIX with ``status`` (keyed by the pack's name)."""
    path = rf"^/{ACCOUNT}/{container.container_name}/({re.escape(PACKED_PREFIX)}/packed/[^?]+)"
    return FaultRule("PUT", path, status=status, **kwargs)  # type: ignore[arg-type]


def test_a_blob_fault_fails_the_whole_batch_and_leaves_nothing_behind(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the packed function writing through a fault proxy whose first 4 PUTs of each pack
    # answer 503 ServerBusy: the SDK's 3 retries of one write all fail
    messages = sent_messages()
    rule = pack_rule(container, 503, mode="first_n_per_key", n=1 + RETRIES, name="busy")
    with FaultProxy(f"http://127.0.0.1:{azurite.port}", [rule]) as proxy:
        store = fault_store(proxy, container)
        monkeypatch.setattr(function_app, "results_store", lambda: store)
        function = packed_user_function()
        # WHEN the batch is delivered / THEN the function raises: the host abandons every
        # message of the batch, the good ones too
        with pytest.raises(StoreWriteError):
            function(batch_of(messages))
        # AND the batch was one write, tried 1 + RETRIES times, and nothing is visible
        ((key, attempts),) = rule.attempts.items()
        assert attempts == 1 + RETRIES
        assert list(container.list_blob_names()) == []
        # WHEN Service Bus delivers the same messages again (delivery count 2)
        again = [Sent(m.body, m.message_id, delivery_count=2) for m in messages]
        returned = function(batch_of(again))
    # THEN they are completed, and the one blob is the pack that failed before, whole
    assert returned is None
    name, body = the_pack(container, PACKED_PREFIX)
    assert f"{PACKED_PREFIX}/{name}" == key
    assert len(unpack(body)) == len(messages)


def test_a_write_reported_failed_after_it_landed_is_rewritten_with_the_same_bytes(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a proxy that forwards the first PUT of each pack, then tells the client it failed
    # with 403 (which the SDK does not retry)
    messages = sent_messages()
    rule = pack_rule(container, 403, mode="first_n_per_key", n=1, when="after", name="late")
    with FaultProxy(f"http://127.0.0.1:{azurite.port}", [rule]) as proxy:
        store = fault_store(proxy, container)
        monkeypatch.setattr(function_app, "results_store", lambda: store)
        function = packed_user_function()
        # WHEN the batch is delivered / THEN the function raises although the pack landed
        with pytest.raises(StoreWriteError):
            function(batch_of(messages))
        first = blobs_under(container, PACKED_PREFIX)
        # WHEN the batch is delivered again, in another order
        again = [Sent(m.body, m.message_id, delivery_count=2) for m in reversed(messages)]
        assert function(batch_of(again)) is None
    # THEN the second write replaced the pack with the same bytes under the same name: one
    # blob, no duplicate record
    assert rule.attempts == {f"{PACKED_PREFIX}/{name}": 2 for name in first}
    assert blobs_under(container, PACKED_PREFIX) == first
    (_, body) = the_pack(container, PACKED_PREFIX)
    assert len(unpack(body)) == len(messages)


def test_the_deployment_zip_runs_the_batch_trigger_from_its_root(
    azurite: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    # GIVEN the deployment zip, unpacked as the platform does, and RESULTS_LAYOUT=packed
    archive = build_package(CLOUDS["azure"], tmp_path / "azure_function.zip")
    root = tmp_path / "wwwroot"
    with zipfile.ZipFile(archive) as unpacked:
        unpacked.extractall(root)
    script = """
import json
import function_app
from azure.functions.servicebus import ServiceBusMessage
names = [f.get_function_name() for f in function_app.app.get_functions()]
batch = [
    ServiceBusMessage(body=body, message_id=f"zip-{i}", delivery_count=1,
                      application_properties={}, user_properties={})
    for i, body in enumerate([b'{"id": "zip-1", "data": {"num1": 20, "num2": 22}}', b"{"])
]
function_app.process_batch(batch)
print(json.dumps([names, function_app.__file__]))
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "TASK_QUEUE_NAME": "tasks",
        "RESULTS_LAYOUT": "packed",
        "RESULTS_BLOB_CONNECTION_STRING": azurite.connection_string,
        "RESULTS_CONTAINER": container.container_name,
        "RESULTS_PREFIX": "zip",
    }
    # WHEN a fresh interpreter indexes function_app from there and handles a batch
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # THEN it registered the batch trigger only, ran the zip's own code, and wrote one pack
    assert run.returncode == 0, run.stderr
    names, path = json.loads(run.stdout.strip().splitlines()[-1])
    assert names == ["process_batch"]
    assert path.startswith(str(root))
    _, body = the_pack(container, "zip")
    records = {record.file_name: record.content for record in unpack(body)}
    assert records["zip-1.out"] == b"42"
    assert len(records) == 2
