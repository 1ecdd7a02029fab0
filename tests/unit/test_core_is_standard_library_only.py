"""core/ must run anywhere Python runs: it imports the standard library and itself, nothing else."""

from __future__ import annotations

import ast
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

CORE = REPO_ROOT / "core"
CLOUD_SDKS = ("boto3", "botocore", "google", "azure", "functions_framework", "cloudevents", "moto")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_the_standard_library(path: Path) -> None:
    foreign = {
        name
        for name in imported_modules(path)
        if name != "core" and name not in sys.stdlib_module_names and name != "__future__"
    }
    assert not foreign, f"{path.relative_to(REPO_ROOT)} imports {sorted(foreign)}"


def test_the_scan_would_catch_a_cloud_sdk(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import boto3\nfrom google.cloud import storage\n")
    assert {"boto3", "google"} <= imported_modules(sample)


def test_importing_core_and_the_cli_loads_no_cloud_sdk() -> None:
    # Each provider's CLI module is imported to build `adder --help`; none may pull in its SDK.
    # (Some SDKs install .pth files that create an empty `google` namespace at start-up, so
    # only modules that appear after start-up count.)
    code = (
        "import sys; before = set(sys.modules); "
        "import core, core.local, core.cli; core.cli.build_parser(); "
        "print(sorted(m for m in set(sys.modules) - before "
        f"if m.split('.')[0] in {CLOUD_SDKS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
