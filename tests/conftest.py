"""Fixtures shared by every test tier."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = Path(__file__).resolve().parent / "events"


@pytest.fixture(autouse=True)
def isolate_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Restore ``os.environ`` after every test, whatever the test changed; job manifests go
    to a directory of the test's own (``$ADDER_JOBS_DIR``), never the repository's."""
    saved = dict(os.environ)
    os.environ["ADDER_JOBS_DIR"] = str(tmp_path_factory.mktemp("jobs"))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_event(name: str) -> Any:
    """A sample event from ``tests/events/``."""
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """An empty results directory inside a test-private parent (so escapes are detectable)."""
    directory = tmp_path / "results"
    directory.mkdir()
    return directory


def files_outside(parent: Path, allowed: Path) -> list[Path]:
    """Every file under ``parent`` that is not under ``allowed``."""
    return [
        path
        for path in parent.rglob("*")
        if path.is_file() and allowed not in path.parents and path != allowed
    ]
