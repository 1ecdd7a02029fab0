"""The figures every reliability test records, and where they go.

Each test ends by recording one row: what was tried, how many cases and messages, how many
faults were injected, and the ledger (results + error records + dead letters = submitted;
lost and wrong must be 0). Rows are JSON files in ``.cache/reliability/``;
``python -m tests.reliability.report`` turns the newest run into RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

RECORDS_DIR = REPO_ROOT / ".cache" / "reliability"
LOAD_MESSAGES_ENV = "ADDER_LOAD_MESSAGES"
DEFAULT_LOAD_MESSAGES = 20_000
"""The load test's size in an ordinary run (and CI); the report command runs 100,000."""


def load_messages() -> int:
    """How many messages the load test pushes through (``$ADDER_LOAD_MESSAGES``)."""
    value = os.environ.get(LOAD_MESSAGES_ENV, "")
    return int(value) if value.strip().isdigit() else DEFAULT_LOAD_MESSAGES


@dataclass
class Row:
    """One line of RELIABILITY.md."""

    area: str
    """e.g. ``bad input``, ``store faults``, ``duplicate delivery``, ``load``, ``crash``."""
    target: str
    """e.g. ``local runner``, ``aws``, ``gcp``, ``azure``."""
    what: str
    cases: int
    messages: int
    faults_injected: int = 0
    results: int = 0
    error_records: int = 0
    dead_lettered: int = 0
    lost: int = 0
    wrong: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    note: str = ""

    def check(self) -> None:
        """The ledger balances, and nothing is lost or wrong."""
        accounted = self.results + self.error_records + self.dead_lettered
        assert accounted == self.messages, f"{self.what}: {accounted} accounted of {self.messages}"
        assert self.lost == 0, f"{self.what}: {self.lost} lost"
        assert self.wrong == 0, f"{self.what}: {self.wrong} wrong"


def record(row: Row, test_id: str) -> Path:
    """Check ``row`` and save it (one file per test) for the report."""
    row.check()
    RECORDS_DIR.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("_")[:180] + ".json"
    path = RECORDS_DIR / name
    document = {"recorded_at": time.time(), "test": test_id, **asdict(row)}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path
