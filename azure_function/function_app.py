"""Azure Functions entry point (Python v2 model): Service Bus queue -> core pipeline -> Blob.

Deployed as ``function_app.py`` at the root of dist/azure_function.zip, next to ``core/`` and
``azure_function/``; in the repository it is ``azure_function/function_app.py``. Only imports
that exist in both layouts, and nothing that can fail on a missing setting, run at import time:
an exception here is "1 functions found, 0 functions loaded".

The app registers exactly one Service Bus trigger, chosen when the worker indexes it (imports
this module) from the ``RESULTS_LAYOUT`` app setting. App settings are environment variables
by then: the Python worker reloads them before it indexes a specialized placeholder
(azure-functions-python-worker, ``Dispatcher._handle__function_environment_reload_request``),
and changing an app setting restarts the app, so the trigger always matches the setting.

- ``process_task`` (``per_task``, the default): one message per call, one blob per task.
- ``process_batch`` (``packed``): a batch of messages per call (``cardinality=many``), one pack
  blob per batch (:mod:`core.packing`).
- A ``RESULTS_LAYOUT`` that is no layout registers ``process_task``, whose every call fails on
  the results store with the ConfigError that names the fix: each message is logged, retried
  and finally dead-lettered (``adder redrive azure`` brings it back once the setting is fixed),
  instead of an app that loads no function and leaves the queue unexplained.
"""

from __future__ import annotations

import functools
import typing

import azure.functions as func

from azure_function.blob_store import store_from_environment
from azure_function.handler import handle_batch, handle_message
from core.errors import ConfigError
from core.packing import ResultsLayout, results_layout_from_environment

if typing.TYPE_CHECKING:
    from collections.abc import Mapping

    from core.ports import ResultStore

QUEUE_NAME = "%TASK_QUEUE_NAME%"
CONNECTION = "SERVICEBUS_CONNECTION"

ServiceBusBatch = typing.List[func.ServiceBusMessage]  # noqa: UP006
"""The batch trigger's annotation. ``typing.List``, not ``list[...]``: the worker checks it
with ``ServiceBusMessageInConverter.check_input_type_annotation``, which accepts
``typing.List[ServiceBusMessage]`` and refuses ``list[ServiceBusMessage]`` (azure-functions
1.26: ``meta.is_iterable_type_annotation`` relies on ``typing_inspect.is_generic_type``)."""


@functools.cache
def results_store() -> ResultStore:
    """The results store, configured from the app settings on first use, then reused.

    A ``RESULTS_LAYOUT`` that is no layout is refused here too, so that it is logged and
    retried with every message rather than silently treated as the default.
    """
    results_layout_from_environment()
    return store_from_environment()


def process_task(msg: func.ServiceBusMessage) -> None:
    """Handle one task; raising abandons the message (redelivered, then dead-lettered)."""
    handle_message(msg, results_store)


def process_batch(msgs: ServiceBusBatch) -> None:
    """Handle a batch into one pack; raising abandons the whole batch (each message is
    redelivered, then dead-lettered), returning completes it."""
    handle_batch(msgs, results_store)


def indexed_layout(environ: Mapping[str, str] | None = None) -> ResultsLayout:
    """The layout whose trigger the app registers; never raises (see the module's doc)."""
    try:
        return results_layout_from_environment(environ)
    except ConfigError:
        return ResultsLayout.PER_TASK


def build_app(environ: Mapping[str, str] | None = None) -> func.FunctionApp:
    """A FunctionApp with the one trigger of the layout ``environ`` (the process's environment
    by default) asks for.

    The batch trigger takes the bodies as bytes (``dataType: binary``, so the host hands over
    ``collection_bytes``): without it the host binds a batch through Json.NET, which changes
    the bytes of a task (azure-functions-python-worker #1401) and fails the whole batch on a
    body that is not JSON ("The JSON parser failed", azure-functions-host #6487), where a bad
    task must get its error record.
    """
    app = func.FunctionApp()
    if indexed_layout(environ) is ResultsLayout.PACKED:
        batch_trigger = app.service_bus_queue_trigger(
            arg_name="msgs",
            queue_name=QUEUE_NAME,
            connection=CONNECTION,
            cardinality=func.Cardinality.MANY,
            data_type=func.DataType.BINARY,
        )
        batch_trigger(process_batch)
    else:
        trigger = app.service_bus_queue_trigger(
            arg_name="msg", queue_name=QUEUE_NAME, connection=CONNECTION
        )
        trigger(process_task)
    return app


app = build_app()
