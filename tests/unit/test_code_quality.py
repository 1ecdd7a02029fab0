"""ruff (lint and format) and mypy are part of the suite: the tree stays clean."""

from __future__ import annotations

import ast
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


NOT_TESTS = ("core", "aws_lambda", "gcp_function", "azure_function", "bench", "tools")


@pytest.mark.parametrize("folder", NOT_TESTS)
def test_only_tests_import_from_tests(folder: str) -> None:
    # GIVEN every module outside tests/ / THEN none imports the tests package (tools that
    # tests and benchmarks share live in tools/ or in the product)
    offenders = []
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_bytes())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(REPO_ROOT)}: {n}"
                for n in names
                if n == "tests" or n.startswith("tests.")
            ]
    assert offenders == []
