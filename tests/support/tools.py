"""Tools a test needs (terraform, node, ...): skip with the reason locally, fail in CI.

``.ci/run`` sets ``ADDER_REQUIRE_TOOLS=1`` (and CI systems set ``CI=true``), so a missing tool
there is a failure, never a silently skipped test.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "ADDER_REQUIRE_TOOLS"


def tools_required() -> bool:
    """True when a missing tool must fail the run (CI)."""
    required = os.environ.get(REQUIRE_ENV, "") not in ("", "0", "false")
    return required or os.environ.get("CI", "").lower() == "true"


def require(available: bool, reason: str) -> None:
    """Skip (locally) or fail (CI) the calling test when ``available`` is false."""
    if available:
        return
    if tools_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set, so this is a failure)")
    pytest.skip(reason)
