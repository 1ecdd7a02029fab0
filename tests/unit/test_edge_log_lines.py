"""What the AWS and Azure entry points log for a retry and for hostile field names.

A retry's log line names the task whose write failed (an operator must be able to tell which
task is retrying), and every log line can be written as UTF-8 whatever a bad task's field
names hold. (GCP's entry point is checked through the real functions-framework server in
tests/integration/gcp/test_function_server.py.)
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from aws_lambda.handler import handle_event
from azure_function import function_app
from core.errors import StoreWriteError
from tests.integration.azure.messages import make_message
from tests.unit.fakes import InMemoryResultStore

GOOD = b'{"id": "retry-me", "data": {"num1": 1, "num2": 2}}'
BAD_WITH_ID = b'{"id": "bad-one", "data": {"num1": true, "num2": 2}}'
BAD_WITHOUT_ID = b'{"data": {"num1": 1, "num2": 2}}'
SURROGATE_NAME = b'{"id": "sur", "data": {"num1": 1, "num2": 2, "\\ud800x": 3}}'
"""A field name that decodes to a lone surrogate, which UTF-8 cannot encode."""


RETRY_CASES = pytest.mark.parametrize(
    ("body", "failing", "task_id"),
    [
        (GOOD, "retry-me.out", "retry-me"),
        (BAD_WITH_ID, "bad-one.err", "bad-one"),
        (BAD_WITHOUT_ID, None, None),  # the store fails every write; no id to name
    ],
    ids=["result-write", "error-record-with-id", "error-record-without-id"],
)
"""A message, the object the store refuses, and the task id its retry line must name."""


def sqs_event(*bodies: bytes) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "body": body.decode(),
                "eventSource": "aws:sqs",
                "attributes": {"ApproximateReceiveCount": "2"},
            }
            for i, body in enumerate(bodies)
        ]
    }


def fields_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """Each record's structured fields (AWS: ``extra``; Azure: the JSON message)."""
    records = [r for r in caplog.records if r.name == logger]
    if logger == "azure_function":
        return [json.loads(r.getMessage()) for r in records]
    return [dict(vars(r)) for r in records]


@RETRY_CASES
def test_aws_retry_line_names_the_task_whose_write_failed(
    caplog: pytest.LogCaptureFixture, body: bytes, failing: str | None, task_id: str | None
) -> None:
    # GIVEN a store that refuses this message's object
    store = InMemoryResultStore(fail_names={failing} if failing else set(), fail_all=not failing)
    caplog.set_level(logging.INFO, logger="aws_lambda")
    # WHEN the Lambda handler gets it
    response = handle_event(sqs_event(body), context=None, store=store)
    # THEN it is retried and the retry line names the task (when it has a usable id)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    (line,) = fields_of(caplog, "aws_lambda")
    assert (line["outcome"], line["task_id"]) == ("retry", task_id)


@RETRY_CASES
def test_azure_retry_line_names_the_task_whose_write_failed(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    failing: str | None,
    task_id: str | None,
) -> None:
    # GIVEN the registered function with a store that refuses this message's object
    store = InMemoryResultStore(fail_names={failing} if failing else set(), fail_all=not failing)
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    caplog.set_level(logging.INFO, logger="azure_function")
    # WHEN a real ServiceBusMessage reaches it / THEN the host sees the failure (abandon)
    with pytest.raises(StoreWriteError):
        function_app.process_task(make_message(body, delivery_count=2))
    # AND the retry line names the task
    (line,) = fields_of(caplog, "azure_function")
    assert (line["outcome"], line["task_id"]) == ("retry", task_id)


def test_aws_log_fields_of_a_surrogate_field_name_are_utf8(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a bad task whose field name is a lone surrogate
    store = InMemoryResultStore()
    caplog.set_level(logging.INFO, logger="aws_lambda")
    # WHEN the handler rejects it
    handle_event(sqs_event(SURROGATE_NAME), context=None, store=store)
    # THEN its record is valid UTF-8 JSON, and the log line's reason can be written as UTF-8
    json.loads(store.objects["sur.err"].decode("utf-8"))
    (line,) = fields_of(caplog, "aws_lambda")
    assert line["error_code"] == "unexpected_field"
    assert "\\ud800" in line["reason"]
    line["reason"].encode("utf-8")


def test_azure_log_line_of_a_surrogate_field_name_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the registered function logging to a UTF-8 text stream (as the worker's does)
    store = InMemoryResultStore()
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("azure_function")
    logger.addHandler(handler)
    try:
        # WHEN a task with a lone-surrogate field name arrives
        function_app.process_task(make_message(SURROGATE_NAME))
        handler.flush()
    finally:
        logger.removeHandler(handler)
    # THEN one JSON line was written (no logging error) and the record is valid UTF-8 JSON
    stream.seek(0)
    (text,) = stream.read().splitlines()
    assert json.loads(text)["error_code"] == "unexpected_field"
    json.loads(store.objects["sur.err"].decode("utf-8"))
