"""The Azure function invoked through its registered FunctionApp, writing to Azurite.

Messages are ``azure.functions.servicebus.ServiceBusMessage`` objects built by the library's
trigger converter from sample host invocations (tests/events/azure_*.json). The store is the
one the app builds from its app settings, pointed at Azurite by a connection string.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING, Any

import pytest

from azure_function import function_app
from azure_function.blob_store import BlobResultStore, default_retry
from core.clouds import CLOUDS
from core.errors import StoreWriteError
from core.packaging import build_package
from tests.conftest import load_event
from tests.integration.azure.messages import (
    AZURE_EVENTS,
    app_settings_for,
    make_message,
    registered_function,
    servicebus_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

PREFIX = "jobs/2026-11-27"


@pytest.fixture
def app_settings(
    azurite: Azurite, container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The function's app settings, pointing at Azurite; the app's store is rebuilt per test."""
    with app_settings_for(
        monkeypatch, azurite.connection_string, container.container_name, PREFIX
    ) as settings:
        yield settings


def invoke() -> Callable[[Any], object]:
    """The user function the worker calls, from the app's registration."""
    function: Callable[[Any], object] = registered_function().get_user_function()
    return function


def read(container: ContainerClient, name: str) -> bytes:
    data: bytes = container.download_blob(f"{PREFIX}/{name}").readall()
    return data


@pytest.mark.parametrize("name", AZURE_EVENTS)
def test_each_sample_message_writes_its_record(
    name: str, app_settings: dict[str, str], container: ContainerClient
) -> None:
    # GIVEN a sample message
    expected = load_event(name)["expected"]
    message = servicebus_message(name)
    # WHEN the registered function handles it
    returned = invoke()(message)
    # THEN it returns normally (the host completes the message) and one record is in Azurite
    assert returned is None
    (blob,) = container.list_blob_names()
    if "content" in expected:
        assert blob == f"{PREFIX}/{expected['record']}"
        assert read(container, expected["record"]).decode() == expected["content"]
    else:
        digest = hashlib.sha256(message.get_body()).hexdigest()
        record = expected.get("record", f"invalid-{digest}.err")
        assert blob == f"{PREFIX}/{record}"
        assert json.loads(read(container, record))["error"] == expected["error"]


def test_unicode_task_id_round_trips(
    app_settings: dict[str, str], container: ContainerClient
) -> None:
    # GIVEN a task whose id is not ASCII / WHEN it is handled
    invoke()(servicebus_message("azure_servicebus_unicode.json"))
    # THEN the blob is named by that exact id
    assert list(container.list_blob_names()) == [f"{PREFIX}/tâche-数-🙂.out"]
    assert read(container, "tâche-数-🙂.out") == b"42"


def test_nothing_is_written_outside_the_prefix(
    app_settings: dict[str, str], container: ContainerClient
) -> None:
    # GIVEN every sample message, and bodies that try to escape the prefix
    messages = [servicebus_message(name) for name in AZURE_EVENTS]
    messages += [
        make_message(b'{"id": "../escape", "data": {"num1": 1, "num2": 1}}'),
        make_message(b'{"id": "a/b", "data": {"num1": 1, "num2": 1}}'),
        make_message(b'{"id": "..", "data": {"num1": 1, "num2": 1}}'),
    ]
    # WHEN all are handled
    for message in messages:
        invoke()(message)
    # THEN every blob is directly under the prefix: one per message
    names = list(container.list_blob_names())
    assert len(names) == len(messages)
    assert all(n.startswith(PREFIX + "/") and "/" not in n[len(PREFIX) + 1 :] for n in names)


def test_missing_container_raises_and_redelivery_succeeds(
    app_settings: dict[str, str],
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN the app pointed at a container that does not exist yet
    monkeypatch.setenv("RESULTS_CONTAINER", "created-later")
    function_app.results_store.cache_clear()
    body = b'{"id": "late", "data": {"num1": 2, "num2": 3}}'
    caplog.set_level(logging.INFO, "azure_function")
    # WHEN the message is delivered / THEN the function raises: the host abandons the message
    with pytest.raises(StoreWriteError):
        invoke()(make_message(body, message_id="m-late", delivery_count=1))
    # WHEN the container exists and Service Bus delivers the message again
    created = azurite.service().create_container("created-later")
    try:
        invoke()(make_message(body, message_id="m-late", delivery_count=2))
        # THEN the result is written, and both deliveries were logged
        assert created.download_blob(f"{PREFIX}/late.out").readall() == b"5"
    finally:
        created.delete_container()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "azure_function"]
    assert [(x["outcome"], x["delivery_attempt"], x["message_id"]) for x in lines] == [
        ("retry", 1, "m-late"),
        ("succeeded", 2, "m-late"),
    ]


def test_stopped_blob_service_raises(
    private_azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the app writing to an Azurite of its own (with the production retry count, short waits)
    private_azurite.service().create_container("results")
    store = BlobResultStore(
        "results",
        "p",
        connection_string=private_azurite.connection_string,
        retry=default_retry(initial_backoff=0, increment_base=0, random_jitter_range=0),
    )
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    invoke()(make_message(b'{"id": "first", "num1": 1, "num2": 1}'))
    # WHEN Azurite stops and the next message arrives / THEN the function raises
    private_azurite.stop()
    with pytest.raises(StoreWriteError):
        invoke()(make_message(b'{"id": "second", "num1": 1, "num2": 1}'))


def test_the_deployment_zip_runs_from_its_root(
    azurite: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    # GIVEN the deployment zip, unpacked as the platform does (its root is the app directory)
    archive = build_package(CLOUDS["azure"], tmp_path / "azure_function.zip")
    root = tmp_path / "wwwroot"
    with zipfile.ZipFile(archive) as unpacked:
        unpacked.extractall(root)
    script = """
import json, sys
import function_app, core, azure_function
from tests_message import message
function_app.app.get_functions()
function_app.process_task(message)
print(json.dumps([function_app.__file__, core.__file__, azure_function.__file__]))
"""
    (root / "tests_message.py").write_text(
        "from azure.functions.servicebus import ServiceBusMessage\n"
        'message = ServiceBusMessage(body=b\'{"id": "zip-1", "data": {"num1": 20, "num2": 22}}\','
        " message_id='zip-m', delivery_count=1, application_properties={}, user_properties={})\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "TASK_QUEUE_NAME": "tasks",
        "RESULTS_BLOB_CONNECTION_STRING": azurite.connection_string,
        "RESULTS_CONTAINER": container.container_name,
        "RESULTS_PREFIX": "zip",
    }
    # WHEN a fresh interpreter imports function_app from there and handles a message
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # THEN it ran the zip's own code and wrote the result
    assert run.returncode == 0, run.stderr
    files = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(path.startswith(str(root)) for path in files), files
    assert container.download_blob("zip/zip-1.out").readall() == b"42"
