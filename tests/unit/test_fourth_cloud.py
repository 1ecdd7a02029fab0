"""A made-up fourth cloud gets the edge contract by writing only its decode and its answer.

Its messages are mappings ``{"id", "attempt", "payload"}``; its platform answer is a string,
"ack" or "nack". Nothing here touches the AWS, GCP or Azure code: the whole edge is the two
functions below, and ``EdgeContract`` checks it like the real clouds' (see also
``test_a_fourth_cloud_in_the_registry_gets_a_package_command`` in test_packaging.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.cli import main
from core.clouds import CLOUDS
from core.delivery import Delivery, deliver
from core.errors import InvalidTaskError
from tests.edge_contract import EdgeContract
from tests.unit import fourth_cloud_ops
from tests.unit.fakes import InMemoryResultStore

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import pytest

    from core.ports import ResultStore

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


FOURTH = fourth_cloud_ops.REGISTRY_ENTRY


def test_a_fourth_cloud_gets_every_job_command_from_its_registry_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a registry entry whose operator module gives settings and an in-memory backend
    monkeypatch.setitem(CLOUDS, "fourth", FOURTH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ADDER_JOBS_DIR")  # manifests in .adder/jobs of the working directory
    fourth_cloud_ops.BACKENDS.clear()
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"id": "a", "data": {"num1": 1, "num2": 2}}\n'
        '{"id": "b", "data": {"num1": "x", "num2": 2}}\n'
    )
    config = tmp_path / "job.json"
    config.write_text(
        '{"provider": "fourth", "job_id": "j1", "queue_name": "q", "result_prefix": "r"}'
    )
    # WHEN the job flow runs through `adder`, the cloud named only by the config file
    assert main(["submit", "--config", str(config), str(tasks), "--no-progress"]) == 0
    backend = fourth_cloud_ops.BACKENDS["q"]
    store = InMemoryResultStore()
    store.prefix = "r"
    for body in backend.queue:  # the fourth cloud's function at work
        fourth_cloud_handler({"id": "m", "attempt": 1, "payload": body}, store)
    backend.objects.update(store.objects)
    backend.dead.append(b'{"id": "c", "data": {"num1": 1, "num2": 1}}')
    watch_code = main(["watch", "fourth", "--job", "j1", "--interval", "0", "--no-progress"])
    fetch_code = main(["fetch", "--job", "j1", "--into", "out", "--no-progress"])
    redrive_code = main(["redrive", "fourth", "--queue", "q", "--no-progress"])
    status_code = main(["status", "fourth", "--queue", "q"])
    # THEN each command worked on the fourth cloud, with the shared summaries and exit codes
    out = capsys.readouterr().out
    assert "sent 2 tasks to memory queue" in out
    assert watch_code == 1 and "1 succeeded, 1 rejected" in out  # b is a bad task
    assert fetch_code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.out",
        "b.err",
    ]
    assert redrive_code == 0 and "moved 1 dead-lettered" in out
    assert status_code == 0 and "dead letters: 0" in out
    assert (tmp_path / ".adder" / "jobs" / "j1.json").is_file()


def test_a_fourth_cloud_missing_setting_is_one_line_naming_every_way(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(CLOUDS, "fourth", FOURTH)
    monkeypatch.chdir(tmp_path)
    assert main(["status", "fourth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--queue" in err and "terraform output queue_name" in err and "queue_name" in err
