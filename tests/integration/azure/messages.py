"""Service Bus messages as the Python worker builds them, from ``tests/events/azure_*.json``.

Each event holds the typed data and trigger metadata the Functions host sends for one message.
``servicebus_message`` turns them into an ``azure.functions.servicebus.ServiceBusMessage``
through the library's own trigger converter (the code the worker runs), so message_id and
delivery_count are set the way they are on Azure.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
from typing import TYPE_CHECKING, Any

from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessage, ServiceBusMessageInConverter

from tests.conftest import EVENTS_DIR, load_event

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest
    from azure.functions.decorators.function_app import Function

AZURE_EVENTS = sorted(path.name for path in EVENTS_DIR.glob("azure_servicebus_*.json"))


def _datum(spec: dict[str, Any] | None) -> meta.Datum | None:
    if spec is None:
        return None
    if "base64" in spec:
        return meta.Datum(base64.b64decode(spec["base64"]), spec["type"])
    return meta.Datum(spec["value"], spec["type"])


def message_from_event(event: dict[str, Any]) -> ServiceBusMessage:
    """The message the worker would pass to the function for this host invocation."""
    metadata = {name: _datum(spec) for name, spec in event["trigger_metadata"].items()}
    message = ServiceBusMessageInConverter.decode(
        _datum(event["data"]),  # type: ignore[arg-type]  # the worker passes None for no payload
        trigger_metadata=metadata,  # type: ignore[arg-type]
    )
    assert isinstance(message, ServiceBusMessage)
    return message


def servicebus_message(name: str) -> ServiceBusMessage:
    """The message of ``tests/events/<name>``."""
    return message_from_event(load_event(name))


def make_message(
    body: bytes | None, *, message_id: str = "m-1", delivery_count: int = 1
) -> ServiceBusMessage:
    """A message with this body (None: no payload), built the same way as the events."""
    event = {
        "data": None
        if body is None
        else {"type": "bytes", "base64": base64.b64encode(body).decode()},
        "trigger_metadata": {
            "MessageId": {"type": "string", "value": message_id},
            "DeliveryCount": {"type": "int", "value": delivery_count},
            "UserProperties": {"type": "json", "value": json.dumps({})},
        },
    }
    return message_from_event(event)


@functools.cache
def registered_function() -> Function:
    """The app's one function, as ``app.get_functions()`` hands it to the worker at indexing.

    Cached: like the worker, a process indexes the app once (a second ``get_functions()`` call
    fails the library's unique-name check).
    """
    from azure_function.function_app import app

    functions = app.get_functions()
    assert [function.get_function_name() for function in functions] == ["process_task"]
    return functions[0]


@contextlib.contextmanager
def app_settings_for(
    monkeypatch: pytest.MonkeyPatch, connection_string: str, container: str, prefix: str
) -> Iterator[dict[str, str]]:
    """The function's app settings in the environment, its blob store pointing at
    ``container`` under ``prefix``; the app's cached store is rebuilt on entry and on exit."""
    from azure_function import function_app

    settings = {
        "TASK_QUEUE_NAME": "tasks",
        "SERVICEBUS_CONNECTION__fullyQualifiedNamespace": "sb-test.servicebus.windows.net",
        "RESULTS_BLOB_CONNECTION_STRING": connection_string,
        "RESULTS_CONTAINER": container,
        "RESULTS_PREFIX": prefix,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    function_app.results_store.cache_clear()
    try:
        yield settings
    finally:
        function_app.results_store.cache_clear()
