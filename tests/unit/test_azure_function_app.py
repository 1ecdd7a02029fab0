"""The Azure function without the host or the network: its registration, as the Python worker
indexes it, and the decode -> pipeline -> log path with an in-memory store."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import subprocess
import sys
import typing
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessageInConverter

from azure_function import function_app
from azure_function.handler import decode_servicebus_message, handle_message
from core.delivery import Delivery
from core.errors import ConfigError, StoreWriteError
from core.outcome import OutcomeKind
from tests.conftest import REPO_ROOT, load_event
from tests.integration.azure.messages import (
    AZURE_EVENTS,
    make_message,
    registered_function,
    servicebus_message,
)
from tests.unit.fakes import InMemoryResultStore

LOGGER_NAME = "azure_function"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]


# --- registration -------------------------------------------------------------------------


def test_trigger_binding_reads_queue_and_connection_from_app_settings() -> None:
    # GIVEN the registered function / WHEN its function.json is generated
    document = json.loads(registered_function().get_function_json())
    # THEN it is one Service Bus queue trigger, named by app settings
    assert document["scriptFile"] == "function_app.py"
    assert document["bindings"] == [
        {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "msg",
            "connection": "SERVICEBUS_CONNECTION",
            "queueName": "%TASK_QUEUE_NAME%",
        }
    ]


def test_the_worker_can_index_the_function() -> None:
    # GIVEN the function the worker receives at indexing
    function = registered_function()
    user_function = function.get_user_function()
    # WHEN its signature is checked the way the worker does (typing.get_type_hints)
    hints = typing.get_type_hints(user_function)
    parameters = list(inspect.signature(user_function).parameters)
    # THEN every binding has its parameter, the trigger's annotation is accepted, it is sync
    assert parameters == [binding.name for binding in function.get_bindings()] == ["msg"]
    assert ServiceBusMessageInConverter.check_input_type_annotation(hints["msg"])
    assert hints["return"] is type(None)
    assert not inspect.iscoroutinefunction(user_function)


def test_importing_the_app_needs_no_settings_and_no_storage_sdk() -> None:
    # GIVEN a fresh interpreter with none of the app settings
    code = (
        "import sys; import azure_function.function_app as m; "
        "print(sorted(n for n in sys.modules if n.startswith(('azure.storage', 'azure.identity'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    # WHEN the function app is imported
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    # THEN the import succeeds (no "0 functions loaded") and the storage SDKs wait for a message
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AZURE_EVENTS)
def test_decode_takes_body_id_and_delivery_count_from_the_message(name: str) -> None:
    # GIVEN a message built by the worker's converter from a sample invocation
    event = load_event(name)
    message = servicebus_message(name)
    # WHEN it is decoded
    delivery = decode_servicebus_message(message)
    # THEN the body is the exact bytes, and the metadata is the host's
    metadata = event["trigger_metadata"]
    assert delivery.body == message.get_body()
    assert delivery.message_id == metadata["MessageId"]["value"]
    assert delivery.attempt == metadata["DeliveryCount"]["value"]


def test_decode_of_a_message_without_metadata() -> None:
    # GIVEN the public constructor, which leaves every property empty
    message = func.ServiceBusMessage(body=b"{}")
    # WHEN it is decoded / THEN the missing properties are None, not errors
    assert decode_servicebus_message(message) == Delivery(b"{}", None, None)


class _UnreadableBody(func.ServiceBusMessage):
    def get_body(self) -> bytes:
        raise ValueError("the binding could not read the body")


def test_an_unreadable_body_is_recorded_as_a_bad_task(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a message whose body cannot be read, and a store
    store = InMemoryResultStore()
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN it is handled
    outcome = handle_message(_UnreadableBody(), lambda: store)
    # THEN it is rejected, with an error record named by the hash of what was there (nothing)
    assert outcome.kind is OutcomeKind.REJECTED
    name = f"invalid-{hashlib.sha256(b'').hexdigest()}.err"
    assert json.loads(store.objects[name])["error"] == "empty"
    assert log_lines(caplog)[0]["outcome"] == "rejected"


# --- handling -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AZURE_EVENTS)
def test_each_sample_message_ends_as_expected(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a sample message, and the app's store replaced by an empty in-memory one
    expected = load_event(name)["expected"]
    message = servicebus_message(name)
    store = InMemoryResultStore()
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    # WHEN the registered function handles it
    returned = registered_function().get_user_function()(message)
    # THEN it returns normally (the host completes the message) after writing one record
    assert returned is None
    (record,) = store.objects
    if "content" in expected:
        assert (record, store.objects[record].decode()) == (expected["record"], expected["content"])
    else:
        digest = hashlib.sha256(message.get_body()).hexdigest()
        assert record == expected.get("record", f"invalid-{digest}.err")
        assert json.loads(store.objects[record])["error"] == expected["error"]


def test_success_rejection_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN an in-memory store and captured logs
    store = InMemoryResultStore()
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a good and a bad message are handled
    good = handle_message(servicebus_message("azure_servicebus_string_body.json"), lambda: store)
    bad = handle_message(servicebus_message("azure_servicebus_bad_task.json"), lambda: store)
    # THEN the result and the error record are written
    assert good.kind is OutcomeKind.SUCCEEDED
    assert store.objects["az-task-2.out"] == b"12345678901234567891.5"
    assert bad.kind is OutcomeKind.REJECTED
    assert json.loads(store.objects["az-bad-1.err"])["error"] == "invalid_number"
    # AND each message logged one JSON line with the outcome and the Service Bus metadata
    first, second = log_lines(caplog)
    assert first["task_id"] == "az-task-2"
    assert first["message_id"] == "1e6f3b4c0d8a5f2bb2c3d4e5f6071829"
    assert first["delivery_attempt"] == 3
    assert first["outcome"] == "succeeded"
    assert second["outcome"] == "rejected"
    assert second["error_code"] == "invalid_number"
    assert [r.levelno for r in caplog.records if r.name == LOGGER_NAME] == [
        logging.INFO,
        logging.WARNING,
    ]


def test_a_store_failure_is_raised_and_logged_as_retry(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a store that fails every write
    store = InMemoryResultStore(fail_all=True)
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a good message is handled / THEN the failure reaches the host (message abandoned)
    with pytest.raises(StoreWriteError):
        handle_message(
            make_message(b'{"id": "t1", "num1": 1, "num2": 2}', delivery_count=4), lambda: store
        )
    # AND the log line says it will be retried
    (line,) = log_lines(caplog)
    assert line["outcome"] == "retry"
    assert line["error_type"] == "StoreWriteError"
    assert line["delivery_attempt"] == 4
    assert caplog.records[-1].levelno == logging.ERROR


def test_an_unconfigured_store_is_raised_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a store factory that cannot configure the store
    def no_store() -> InMemoryResultStore:
        raise ConfigError("set RESULTS_CONTAINER")

    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a message is handled / THEN the error is raised (redelivery, then dead letter) and logged
    with pytest.raises(ConfigError):
        handle_message(make_message(b"{}"), no_store)
    assert log_lines(caplog)[0]["error_type"] == "ConfigError"


def test_the_decorated_function_is_callable_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the module's store replaced by an in-memory one
    store = InMemoryResultStore()
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    # WHEN the decorated name itself is called (azure-functions >= 1.21)
    function_app.process_task(servicebus_message("azure_servicebus_task.json"))
    # THEN the message was handled through the same code
    assert store.objects == {"az-task-1.out": b"0.3"}
