"""Service Bus batches as the Python worker hands them to a ``cardinality=many`` trigger.

With ``dataType: binary`` the host sends a batch's bodies as one ``collection_bytes`` datum,
and each message's properties as parallel arrays in the trigger metadata (``MessageIdArray``,
``DeliveryCountArray``, ``UserPropertiesArray``, ...). :func:`batch_of` builds that invocation
and turns it into ``list[azure.functions.ServiceBusMessage]`` through the library's own trigger
converter (``ServiceBusMessageInConverter.decode``, the code the worker runs), so bodies,
message ids and delivery counts arrive in the function as they do on Azure.

What is not exercised here (no Service Bus emulator): the host's receive loop that makes the
batches (their size, one batch at a time per instance) and that completes or abandons them.
Tests that redeliver simulate it: an abandoned message comes back in a later batch with its
delivery count + 1.
"""

from __future__ import annotations

import contextlib
import json
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.functions import meta
from azure.functions.servicebus import ServiceBusMessage, ServiceBusMessageInConverter

from azure_function import function_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import pytest
    from azure.functions.decorators.function_app import Function

PACKED = {"RESULTS_LAYOUT": "packed"}


@dataclass(frozen=True)
class Sent:
    """One message of a batch: its body, id, and how many times it was delivered."""

    body: bytes
    message_id: str
    delivery_count: int = 1


def _json(values: Sequence[Any]) -> meta.Datum:
    return meta.Datum(json.dumps(list(values)), "json")


def batch_of(messages: Sequence[Sent]) -> list[ServiceBusMessage]:
    """The list the batch trigger's function receives for these messages, in this order."""
    data = meta.Datum(types.SimpleNamespace(bytes=[m.body for m in messages]), "collection_bytes")
    metadata = {
        "MessageIdArray": _json([m.message_id for m in messages]),
        "DeliveryCountArray": _json([m.delivery_count for m in messages]),
        "UserPropertiesArray": _json([{} for _ in messages]),
        "ApplicationPropertiesArray": _json([{} for _ in messages]),
    }
    batch = ServiceBusMessageInConverter.decode(data, trigger_metadata=metadata)
    assert isinstance(batch, list) and len(batch) == len(messages)
    return batch


def batch_of_bodies(bodies: Sequence[bytes], prefix: str = "m") -> list[ServiceBusMessage]:
    """A first delivery of each body, with message ids ``{prefix}-0``, ``{prefix}-1``, ..."""
    return batch_of([Sent(body, f"{prefix}-{index}") for index, body in enumerate(bodies)])


def packed_function(environ: dict[str, str] | None = None) -> Function:
    """The one function a fresh app registers with these app settings (``packed`` by default),
    as ``app.get_functions()`` hands it to the worker at indexing."""
    (function,) = function_app.build_app(PACKED if environ is None else environ).get_functions()
    return function


def packed_user_function() -> Callable[[list[ServiceBusMessage]], object]:
    """What the worker calls with each batch when ``RESULTS_LAYOUT=packed``."""
    function: Callable[[list[ServiceBusMessage]], object] = packed_function().get_user_function()
    return function


@contextlib.contextmanager
def packed_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``RESULTS_LAYOUT=packed`` in the environment, the app's cached store rebuilt around it."""
    monkeypatch.setenv("RESULTS_LAYOUT", "packed")
    function_app.results_store.cache_clear()
    try:
        yield
    finally:
        function_app.results_store.cache_clear()
