"""A made-up fourth cloud gets the edge contract by writing only its decode and its answer.

Its messages are mappings ``{"id", "attempt", "payload"}``; its platform answer is a string,
"ack" or "nack". Nothing here touches the AWS, GCP or Azure code: the whole edge is the two
functions below, and ``EdgeContract`` checks it like the real clouds' (see also
``test_a_fourth_cloud_in_the_registry_gets_a_package_command`` in test_packaging.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.delivery import Delivery, deliver
from core.errors import InvalidTaskError
from tests.edge_contract import EdgeContract

if TYPE_CHECKING:
    from collections.abc import Mapping

    from core.ports import ResultStore
    from tests.unit.fakes import InMemoryResultStore

LOGGER = logging.getLogger("fourth_cloud")


def fourth_cloud_handler(message: Mapping[str, object], store: ResultStore) -> str:
    """The fourth cloud's whole runtime edge: decode, deliver, answer."""
    payload = message.get("payload")
    attempt = message.get("attempt")
    delivery = Delivery(
        payload if isinstance(payload, bytes) else dict(message),
        str(message.get("id") or "") or None,
        attempt if isinstance(attempt, int) else None,
        undecodable=None
        if isinstance(payload, bytes)
        else InvalidTaskError("invalid_envelope", "message has no payload"),
    )
    handled = deliver(
        delivery, store, lambda level, text, fields: LOGGER.log(level, text, extra={"f": fields})
    )
    return "nack" if handled.retry else "ack"


class TestFourthCloudEdge(EdgeContract):
    logger_name = "fourth_cloud"

    def deliver(
        self, body: bytes, store: InMemoryResultStore, *, message_id: str, attempt: int
    ) -> bool:
        message = {"id": message_id, "attempt": attempt, "payload": body}
        return fourth_cloud_handler(message, store) == "ack"

    def deliver_undecodable(self, store: InMemoryResultStore) -> bool:
        return fourth_cloud_handler({"id": "m-empty", "attempt": 1}, store) == "ack"

    def fields_of(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = record.f  # type: ignore[attr-defined]
        return fields
