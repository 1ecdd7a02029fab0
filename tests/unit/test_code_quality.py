"""ruff (lint and format) and mypy are part of the suite: the tree stays clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.support.tools import require


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("mypy",)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: tuple[str, ...]) -> None:
    require(importlib.util.find_spec(command[0]) is not None, f"{command[0]} is not installed")
    result = run_tool(*command)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
