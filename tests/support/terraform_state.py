"""A terraform state file with given outputs, as ``terraform apply`` leaves one: lets a test
drive ``--stack DIR`` (the real ``terraform output -json`` reads it) for a stack that cannot
be applied here (no google or azurerm provider on these machines)."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

from tests.support import tools

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


def require_terraform() -> None:
    """Skip (locally) or fail (CI) when there is no terraform binary."""
    tools.require(shutil.which("terraform") is not None, "terraform is not installed")


def write_state(directory: Path, outputs: Mapping[str, str]) -> Path:
    """``directory/terraform.tfstate`` holding ``outputs``; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "version": 4,
        "terraform_version": "1.5.7",
        "serial": 1,
        "lineage": "8a9f3c2e-0000-4000-8000-000000000000",
        "outputs": {k: {"value": v, "type": "string"} for k, v in outputs.items()},
        "resources": [],
    }
    (directory / "terraform.tfstate").write_text(json.dumps(state))
    return directory
