"""kill -9 in the middle of a write: a reader never sees an empty or partial result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

# A child that writes one result, but whose os.write stores only the first half of the bytes,
# tells the parent, and then hangs: the parent kills it at exactly that point, mid-write.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    real_write = os.write
    def half_then_hang(fd, data):
        n = real_write(fd, bytes(data[: len(data) // 2]))
        print("mid-write", flush=True)
        time.sleep(600)
        return n
    os.write = half_then_hang
    results, mode = sys.argv[1], sys.argv[2]
    text = "7" * 100_000
    if mode == "store":
        from core.local_store import LocalDirectoryResultStore
        LocalDirectoryResultStore(results).write_result("victim", text)
    else:  # the naive writer, as a control: open the final name, write, close
        fd = os.open(os.path.join(results, "victim.out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, text.encode())
    """
)


def kill_mid_write(results: Path, mode: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(results), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "mid-write"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_naive_write_killed_midway_leaves_a_partial_file(results_dir: Path) -> None:
    # The control: shows the kill really lands mid-write, so the next test can fail.
    kill_mid_write(results_dir, "naive")
    assert (results_dir / "victim.out").stat().st_size == 50_000


def test_store_write_killed_midway_leaves_no_partial_result(results_dir: Path) -> None:
    # GIVEN an earlier complete result
    (results_dir / "victim.out").write_text("old")
    # WHEN a writer is killed half-way through replacing it
    kill_mid_write(results_dir, "store")
    # THEN readers still see the whole old result; the half-written bytes are in a temp file
    assert (results_dir / "victim.out").read_text() == "old"
    leftovers = [p.name for p in results_dir.iterdir() if p.name != "victim.out"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".victim.out.")
    # AND resuming removes the dead writer's temporary
    from core.local_store import LocalDirectoryResultStore

    assert LocalDirectoryResultStore(results_dir).remove_stale_temporaries() == 1
    assert [p.name for p in results_dir.iterdir()] == ["victim.out"]
