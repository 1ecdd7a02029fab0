"""The edge contract (tests/edge_contract.py) on each cloud's real entry point."""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import functions_framework
import pytest

from aws_lambda.handler import handle_event
from azure_function import function_app
from tests.conftest import REPO_ROOT
from tests.edge_contract import EdgeContract
from tests.integration.azure.messages import make_message

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterator

    from tests.unit.fakes import InMemoryResultStore


class TestAwsLambdaEdge(EdgeContract):
    """``aws_lambda.handler.handle_event`` with one-record SQS events."""

    logger_name = "aws_lambda"

    def deliver(
        self, body: bytes, store: InMemoryResultStore, *, message_id: str, attempt: int
    ) -> bool:
        record = {
            "messageId": message_id,
            "body": body.decode(),
            "eventSource": "aws:sqs",
            "attributes": {"ApproximateReceiveCount": str(attempt)},
        }
        response = handle_event({"Records": [record]}, context=None, store=store)
        return response == {"batchItemFailures": []}

    def deliver_undecodable(self, store: InMemoryResultStore) -> bool:
        record = {"messageId": "m-no-body", "eventSource": "aws:sqs"}  # no body at all
        response = handle_event({"Records": [record]}, context=None, store=store)
        return response == {"batchItemFailures": []}

    def fields_of(self, record: logging.LogRecord) -> dict[str, object]:
        return dict(vars(record))  # Lambda's JSON format writes ``extra`` at the top level


class TestGcpFunctionEdge(EdgeContract):
    """gcp_function/main.py in functions-framework's own app, posted raw Pub/Sub pushes."""

    logger_name = "gcp_function"

    @pytest.fixture(autouse=True)
    def app(self, store: InMemoryResultStore) -> Iterator[None]:
        os.environ["RESULTS_BUCKET"] = "edge-contract"
        self.client = functions_framework.create_app(  # type: ignore[no-untyped-call]
            "process_task", str(REPO_ROOT / "gcp_function" / "main.py")
        ).test_client()
        module: Any = sys.modules["main"]
        module.STORE = store
        try:
            yield
        finally:
            sys.modules.pop("main", None)

    def post(self, message: dict[str, object], attempt: int) -> bool:
        body = {
            "message": message,
            "subscription": "projects/p/subscriptions/edge",
            "deliveryAttempt": attempt,
        }
        status = self.client.post("/", json=body).status_code
        assert status in (200, 500), status
        return bool(status == 200)

    def deliver(
        self, body: bytes, store: InMemoryResultStore, *, message_id: str, attempt: int
    ) -> bool:
        data = base64.b64encode(body).decode()
        return self.post({"data": data, "messageId": message_id}, attempt)

    def deliver_undecodable(self, store: InMemoryResultStore) -> bool:
        return self.post({"attributes": {"k": "v"}, "messageId": "m-no-data"}, 1)

    def fields_of(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = record.fields  # type: ignore[attr-defined]
        return fields


class TestAzureFunctionEdge(EdgeContract):
    """The registered Azure function, given real ``azure.functions`` ServiceBusMessages."""

    logger_name = "azure_function"

    @pytest.fixture(autouse=True)
    def app(self, store: InMemoryResultStore, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(function_app, "results_store", lambda: store)

    def call(self, body: bytes | None, message_id: str, attempt: int) -> bool:
        try:
            function_app.process_task(
                make_message(body, message_id=message_id, delivery_count=attempt)
            )
        except Exception:  # the host abandons the message: Service Bus redelivers it
            return False
        return True

    def deliver(
        self, body: bytes, store: InMemoryResultStore, *, message_id: str, attempt: int
    ) -> bool:
        return self.call(body, message_id, attempt)

    def deliver_undecodable(self, store: InMemoryResultStore) -> bool:
        return self.call(None, "m-no-body", 1)  # a message with no payload

    def fields_of(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = json.loads(record.getMessage())
        return fields
