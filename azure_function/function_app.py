"""Azure Functions entry point (Python v2 model): Service Bus queue -> core pipeline -> Blob.

Deployed as ``function_app.py`` at the root of dist/azure_function.zip, next to ``core/`` and
``azure_function/``; in the repository it is ``azure_function/function_app.py``. Only imports
that exist in both layouts, and nothing that can fail on a missing setting, run at import time:
an exception here is "1 functions found, 0 functions loaded".
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import azure.functions as func

from azure_function.blob_store import store_from_environment
from azure_function.handler import handle_message

if TYPE_CHECKING:
    from core.ports import ResultStore

app = func.FunctionApp()


@functools.cache
def results_store() -> ResultStore:
    """The results store, configured from the app settings on first use, then reused."""
    return store_from_environment()


@app.service_bus_queue_trigger(
    arg_name="msg", queue_name="%TASK_QUEUE_NAME%", connection="SERVICEBUS_CONNECTION"
)
def process_task(msg: func.ServiceBusMessage) -> None:
    """Handle one task; raising abandons the message (redelivered, then dead-lettered)."""
    handle_message(msg, results_store)
