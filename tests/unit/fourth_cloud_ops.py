"""The operator module of a made-up fourth cloud: its settings and an in-memory backend.

This is all a new cloud writes to get ``adder submit|watch|fetch|redrive|status``: the
registry entry points at it (see test_fourth_cloud.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.clouds import Cloud
from core.ops.target import Setting
from tests.unit.fakes import InMemoryJobBackend

if TYPE_CHECKING:
    from core.ops.target import Target

REGISTRY_ENTRY = Cloud(
    name="fourth",
    title="Fourth Cloud",
    package="fourth_cloud",
    runtime_modules=("edge.py",),
    operator_module=__name__,
    extra="fourth",
    credential_chain="the fourth cloud's default chain",
    store_factory="tests.unit.fakes:InMemoryResultStore",
)
"""The fourth cloud's entry in the registry (tests put it in CLOUDS with monkeypatch)."""

SETTINGS = (
    Setting("queue", "the fourth cloud's queue", output="queue_name", config="queue_name"),
    Setting("prefix", "the results prefix", output="results_prefix", config="result_prefix"),
)

BACKENDS: dict[str, InMemoryJobBackend] = {}
"""One backend per queue name, kept between commands like a real cloud would."""


def open_backend(target: Target, command: str) -> InMemoryJobBackend:
    """The in-memory job named by the ``queue`` setting."""
    queue = target.require("queue", SETTINGS, f"adder {command} fourth")
    return BACKENDS.setdefault(queue, InMemoryJobBackend(prefix=target.get("prefix") or ""))
