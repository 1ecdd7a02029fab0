"""The docs name every registered cloud: the README's table and docs/design.md's tables."""

from __future__ import annotations

import re

import pytest

from core.clouds import CLOUDS
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DESIGN = (REPO_ROOT / "docs" / "design.md").read_text(encoding="utf-8")


def table_rows(text: str, header: str) -> list[str]:
    """The rows of the first Markdown table after the line that starts with ``header``."""
    start = text.index(header)
    lines = text[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.mark.parametrize("name", sorted(CLOUDS))
def test_the_readme_table_has_a_row_for_each_cloud(name: str) -> None:
    cloud = CLOUDS[name]
    rows = table_rows(README, "# adder")
    assert any(f"`{cloud.package}/`" in row and f"`infra/{name}`" in row for row in rows), name


@pytest.mark.parametrize(
    "header", ["## Deployment artefacts", "## Runtime settings (environment variables"]
)
def test_the_design_tables_have_one_row_per_cloud(header: str) -> None:
    rows = table_rows(DESIGN, header)
    names = [re.match(r"\|\s*(\w+)\s*\|", row).group(1) for row in rows]  # type: ignore[union-attr]
    assert names == list(CLOUDS)


def test_the_deployment_table_names_each_zip_path() -> None:
    rows = table_rows(DESIGN, "## Deployment artefacts")
    for row, cloud in zip(rows, CLOUDS.values(), strict=True):
        assert f"`{cloud.zip_path}`" in row
