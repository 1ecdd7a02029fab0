"""One contract for every cloud's function boundary; each cloud's tests subclass it.

Like tests/store_contract.py for stores: the same deliveries go through each cloud's real
entry point (the Lambda handler, the functions-framework app, the registered Azure function)
with an in-memory store, and the same things must come out: what is written, whether the
platform is told to acknowledge or retry, and one log line with the same fields and level.

A subclass sets ``logger_name`` and implements ``deliver`` (one message through the entry
point; True when the platform would acknowledge it), ``deliver_undecodable`` (an envelope
that holds no task, in the platform's own way) and ``fields_of`` (a log record's structured
fields as the platform writes them).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import pytest

from tests.support.logs import handler_on
from tests.unit.fakes import InMemoryResultStore

if TYPE_CHECKING:
    from collections.abc import Iterator

GOOD = b'{"id": "edge-good", "data": {"num1": 0.1, "num2": 0.2}}'
BAD = b'{"id": "edge-bad", "data": {"num1": true, "num2": 2}}'
COMMON_FIELDS = {"task_id", "message_id", "outcome", "duration_ms", "delivery_attempt"}
"""Fields every cloud's log line carries, under the same names."""


class CapturedLogs(logging.Handler):
    """Every record of one logger (the edge's own loggers may not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class EdgeContract:
    """Behaviour every cloud's function boundary must have."""

    logger_name: ClassVar[str]

    def deliver(
        self, body: bytes, store: InMemoryResultStore, *, message_id: str, attempt: int
    ) -> bool:
        """Send one message through the entry point; True when it is acknowledged."""
        raise NotImplementedError

    def deliver_undecodable(self, store: InMemoryResultStore) -> bool:
        """Send an envelope that holds no task; True when it is acknowledged."""
        raise NotImplementedError

    def fields_of(self, record: logging.LogRecord) -> dict[str, object]:
        """The structured fields of one log record, as the platform writes them."""
        raise NotImplementedError

    @pytest.fixture
    def store(self) -> InMemoryResultStore:
        return InMemoryResultStore()

    @pytest.fixture
    def logs(self) -> Iterator[CapturedLogs]:
        handler = CapturedLogs()
        with handler_on(self.logger_name, handler):
            yield handler

    def lines(self, logs: CapturedLogs) -> list[tuple[int, dict[str, object]]]:
        return [(record.levelno, self.fields_of(record)) for record in logs.records]

    def test_a_good_task_is_written_acknowledged_and_logged_once(
        self, store: InMemoryResultStore, logs: CapturedLogs
    ) -> None:
        # GIVEN a good task / WHEN it is delivered
        acknowledged = self.deliver(GOOD, store, message_id="m-good", attempt=1)
        # THEN its result is written and the message acknowledged
        assert acknowledged
        assert store.objects == {"edge-good.out": b"0.3"}
        # AND one INFO line names the task, the message and the delivery attempt
        [(level, fields)] = self.lines(logs)
        assert level == logging.INFO
        assert set(fields) >= COMMON_FIELDS
        assert (fields["task_id"], fields["message_id"], fields["outcome"]) == (
            "edge-good",
            "m-good",
            "succeeded",
        )
        assert fields["delivery_attempt"] == 1

    def test_a_bad_task_gets_its_record_and_is_acknowledged(
        self, store: InMemoryResultStore, logs: CapturedLogs
    ) -> None:
        acknowledged = self.deliver(BAD, store, message_id="m-bad", attempt=1)
        assert acknowledged
        assert list(store.objects) == ["edge-bad.err"]
        [(level, fields)] = self.lines(logs)
        assert level == logging.WARNING
        assert (fields["outcome"], fields["error_code"], fields["record"]) == (
            "rejected",
            "invalid_number",
            "edge-bad.err",
        )

    def test_an_envelope_without_a_task_is_recorded_and_acknowledged(
        self, store: InMemoryResultStore, logs: CapturedLogs
    ) -> None:
        acknowledged = self.deliver_undecodable(store)
        assert acknowledged
        [name] = store.objects
        assert name.startswith("invalid-") and name.endswith(".err")
        [(level, fields)] = self.lines(logs)
        assert (level, fields["outcome"], fields["task_id"]) == (logging.WARNING, "rejected", None)

    def test_a_store_failure_is_retried_and_logged_once_with_its_stack(
        self, store: InMemoryResultStore, logs: CapturedLogs
    ) -> None:
        # GIVEN a store that fails every write
        store.fail_all = True
        # WHEN a good task is delivered / THEN the platform is told to retry, nothing written
        assert not self.deliver(GOOD, store, message_id="m-retry", attempt=3)
        assert store.objects == {}
        # AND one ERROR line names the task and carries the stack as a field
        [(level, fields)] = self.lines(logs)
        assert level == logging.ERROR
        assert (fields["outcome"], fields["task_id"], fields["error_type"]) == (
            "retry",
            "edge-good",
            "StoreWriteError",
        )
        assert fields["delivery_attempt"] == 3
        assert "Traceback" in str(fields["stack_trace"])

    def test_a_duplicate_delivery_writes_the_same_content_again(
        self, store: InMemoryResultStore, logs: CapturedLogs
    ) -> None:
        assert self.deliver(GOOD, store, message_id="m-dup", attempt=1)
        first = dict(store.objects)
        assert self.deliver(GOOD, store, message_id="m-dup", attempt=2)
        assert store.objects == first
        attempts = [fields["delivery_attempt"] for _, fields in self.lines(logs)]
        assert attempts == [1, 2]
