"""``adder status azure`` pieces that need no service: counting names, printing counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure_function.status import QueueCounts, ResultCounts, count_records
from core.cli import main

if TYPE_CHECKING:
    import pytest


def test_count_records_counts_only_direct_records_under_the_prefix() -> None:
    # GIVEN blob names in and around the prefix
    names = [
        "runs/a.out",
        "runs/b.out",
        "runs/invalid-00ff.err",
        "runs/nested/c.out",  # not a record of this prefix: ids have no "/"
        "runs-other/d.out",
        "runs/e.out.tmp",
        "f.out",
    ]
    # WHEN they are counted under "runs" (with or without slashes)
    # THEN only the direct .out and .err names count
    assert count_records(names, "runs") == ResultCounts(results=2, errors=1)
    assert count_records(names, "/runs/") == ResultCounts(results=2, errors=1)
    # AND with no prefix, only top-level names count
    assert count_records(names, "") == ResultCounts(results=1, errors=0)


def test_lines() -> None:
    # GIVEN counts / THEN the printed lines carry them, with thousands separators
    queue = QueueCounts(active=1200, scheduled=0, dead_letter=3)
    assert queue.line("tasks", "sb-x.servicebus.windows.net") == (
        "queue tasks on sb-x.servicebus.windows.net: 1,200 active, 0 scheduled, 3 dead-lettered"
    )
    assert ResultCounts(5, 1).line("results", "") == "results in results/: 5 .out, 1 .err"
    assert ResultCounts(5, 1).line("results", "p") == "results in results/p/: 5 .out, 1 .err"


def test_status_without_anything_to_show_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no queue or container settings in the environment
    for name in ("TASK_QUEUE_NAME", "RESULTS_CONTAINER", "RESULTS_BLOB_ACCOUNT_URL"):
        monkeypatch.delenv(name, raising=False)
    # WHEN status runs with nothing / THEN it says what to give and exits 2
    assert main(["status", "azure"]) == 2
    assert "nothing to show" in capsys.readouterr().err
