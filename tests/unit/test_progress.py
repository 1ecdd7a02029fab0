"""The progress bar: drawn on a terminal, silent in pipes and logs."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from typing import TYPE_CHECKING

from core.progress import ProgressBar
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path


def test_bar_shows_count_percentage_and_rate() -> None:
    stream = io.StringIO()
    bar = ProgressBar(200, stream=stream, enabled=True)
    bar.advance(50)
    bar.close()
    out = stream.getvalue()
    assert "50/200" in out and "25%" in out and "tasks/s" in out
    assert out.endswith("\n")


def test_disabled_bar_writes_nothing() -> None:
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, enabled=False)
    bar.advance(10)
    bar.close()
    assert stream.getvalue() == ""


def _tasks(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 1}}) + "\n" for i in range(count)
        )
    )
    return path


def test_runner_draws_the_bar_on_a_terminal(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path, 2000)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "core.local", "--tasks", str(tasks)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    process.wait(timeout=60)
    os.close(controller)
    assert process.returncode == 0
    assert b"2,000/2,000" in drawn and b"100%" in drawn


def test_runner_is_quiet_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path, 500)
    result = subprocess.run(
        [sys.executable, "-m", "core.local", "--tasks", str(tasks)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode == 0
    assert result.stderr == ""
