"""Cloud Run function (2nd gen) entry point: ``process_task``, registered as an HTTP function.

Deployed as ``main.py`` at the root of the source zip (next to ``core/`` and
``gcp_function/``); in the repository it is ``gcp_function/main.py``. Either way it only wires
the pieces: the JSON logger, the results store named by ``RESULTS_BUCKET``/``RESULTS_PREFIX``,
the results layout (``RESULTS_LAYOUT``: per task, or packed with ``PACK_MAX_BATCH`` and
``PACK_MAX_WAIT_MS``), and :func:`gcp_function.handler.handle_request`. Without
``RESULTS_BUCKET``, or with a setting that is not valid, the import fails with a ConfigError
naming it, so a misconfigured revision never becomes ready (the deployment fails instead of
every task).

It takes the raw request rather than functions-framework's CloudEvent (the decorator wins
over ``--signature-type``/``FUNCTION_SIGNATURE_TYPE``), because the framework's CloudEvent
wrapper answers a request it cannot convert (a Pub/Sub message with attributes but no data,
a body that is not JSON) with a 400 page that quotes the request's headers, the push's
``Authorization`` token included, and its body, before the function runs: no error record,
and Pub/Sub redelivers it until it is dead-lettered. And an exception would reach Flask,
which writes a plain-text traceback to stderr. Here every POST is decoded by our code and
answered with a fixed text: 200 (acknowledged: a result or an error record was written) or
500 (redeliver: the store failed; logged once, as JSON, with the stack).
"""

from __future__ import annotations

import flask
import functions_framework

from gcp_function.gcs_store import store_from_environment
from gcp_function.handler import group_commit_from_environment, handle_request
from gcp_function.logs import configure_logging

configure_logging()
STORE = store_from_environment()
"""One store (and so one storage client, created on the first write) per instance."""
COMMIT = group_commit_from_environment(STORE)
"""Packed layout: the instance's group commit (concurrent requests, one pack); else None."""


@functions_framework.http
def process_task(request: flask.Request) -> flask.Response:
    """Handle one Pub/Sub delivery: 200 acknowledges it, 500 has Pub/Sub redeliver it."""
    if request.method != "POST":  # Pub/Sub always POSTs; there is no message to record
        return _answer("only POST is accepted", 405)
    # A body that cannot be read (the client went away) makes werkzeug answer 400 without
    # echoing anything: there is nothing to record, and nobody left to answer.
    body = request.get_data()
    try:
        handle_request(request.headers, body, STORE, COMMIT)
    except Exception:  # already logged by the handler, once, as JSON with the stack
        return _answer("not processed, will be retried", 500)
    return _answer("OK", 200)


def _answer(text: str, status: int) -> flask.Response:
    """A fixed plain-text answer: nothing of the request (headers, body) is echoed."""
    return flask.Response(text, status=status, mimetype="text/plain")
