"""Fixtures of the Terraform tests: the terraform binary and the offline provider mirror."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aws_lambda.sandbox.terraform import find_plugin_dir, find_terraform
from tests.support.tools import require

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="session")
def plugin_dir() -> Path:
    """The hashicorp/aws filesystem mirror; skips locally (fails in CI) when absent."""
    terraform = find_terraform()
    require(terraform is not None, "terraform is not installed")
    directory = find_plugin_dir()
    require(directory is not None, "no filesystem mirror of hashicorp/aws (set TF_PLUGIN_DIR)")
    assert directory is not None
    return directory
