"""Cloud Run function (2nd gen) entry point: ``process_task``, a CloudEvent function.

Deployed as ``main.py`` at the root of the source zip (next to ``core/`` and
``gcp_function/``); in the repository it is ``gcp_function/main.py``. Either way it only wires
the pieces: the JSON logger, the results store named by ``RESULTS_BUCKET``/``RESULTS_PREFIX``,
and :func:`gcp_function.handler.handle_event`. Without ``RESULTS_BUCKET`` the import fails,
so a misconfigured revision never becomes ready (the deployment fails instead of every task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flask
import functions_framework

from gcp_function.gcs_store import store_from_environment
from gcp_function.handler import handle_event
from gcp_function.logs import configure_logging

if TYPE_CHECKING:
    from cloudevents.http import CloudEvent

configure_logging()
STORE = store_from_environment()
"""One store (and so one storage client, created on the first write) per instance."""


@functions_framework.cloud_event
def process_task(cloud_event: CloudEvent) -> None:
    """Handle one Pub/Sub message; an exception makes functions-framework answer 500."""
    handle_event(cloud_event, STORE, _push_body())


def _push_body() -> dict[str, object] | None:
    """The JSON request body, for the fields functions-framework drops from a raw push."""
    if not flask.has_request_context():
        return None
    body = flask.request.get_json(silent=True)
    return body if isinstance(body, dict) else None
