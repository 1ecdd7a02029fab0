"""RELIABILITY.md's generator and the ledger rows it is made of."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import pytest

from tests.reliability import report
from tests.reliability.ledger import Row, record

if TYPE_CHECKING:
    from pathlib import Path


def write_rows(directory: Path, *rows: Row) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for number, row in enumerate(rows):
        (directory / f"row-{number}.json").write_text(json.dumps(asdict(row)), encoding="utf-8")


def test_rows_are_ordered_by_area_and_totalled() -> None:
    # GIVEN rows recorded out of order, one with a pipe in its description
    rows = [
        Row("security", "repository", "credential scan", cases=120, messages=0),
        Row("load", "aws", "20,000 tasks | 4 pollers", 200, 20_000, 350, 19_800, 200),
        Row("bad input", "local runner", "corpus", 93, 93, error_records=93, note="all handled"),
    ]
    # WHEN they are rendered
    text = report.render(sorted_rows(rows), "python -m tests.reliability.report")
    # THEN bad input comes first, security last, the pipe is escaped, the totals add up
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| bad input", "| load", "| security"]
    assert "20,000 tasks \\| 4 pollers" in text
    assert "In all: 20,093 messages, 350 faults injected, **0 lost, 0 wrong**." in text
    assert "- **local runner / corpus**: all handled" in text


def sorted_rows(rows: list[Row]) -> list[dict[str, object]]:
    return sorted(
        (asdict(row) for row in rows),
        key=lambda row: (report.AREA_ORDER.index(str(row["area"])), str(row["what"])),
    )


def test_load_rows_reads_what_was_recorded(tmp_path: Path) -> None:
    # GIVEN two rows saved in a records directory
    write_rows(
        tmp_path,
        Row("crash", "local runner", "kill -9", 5, 50_000, results=50_000),
        Row("store faults", "gcp", "proxy", 20, 200, 40, 186, 10, 4),
    )
    # WHEN they are loaded / THEN in the report's order
    assert [row["area"] for row in report.load_rows(tmp_path)] == ["store faults", "crash"]


def test_a_row_whose_ledger_does_not_balance_is_refused() -> None:
    # GIVEN a row where one message is neither a result, an error record nor a dead letter
    row = Row("load", "aws", "one missing", cases=1, messages=10, results=9)
    # WHEN it is recorded / THEN it is refused
    with pytest.raises(AssertionError, match="9 accounted of 10"):
        record(row, "test_x")


def test_a_row_with_a_wrong_result_is_refused() -> None:
    row = Row("load", "aws", "one wrong", cases=1, messages=10, results=10, wrong=1)
    with pytest.raises(AssertionError, match="1 wrong"):
        row.check()
