"""kill -9 in the middle of a write: a reader never sees an empty or partial result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest

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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_runner_killed_at_random_points_then_resumed_has_every_result_whole(
    tmp_path: Path, workers: str
) -> None:
    # GIVEN 20,000 tasks whose results have known values
    total = 20_000
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "data": {"num1": i, "num2": 10**40}}) + "\n"
            for i in range(total)
        )
    )
    results = tmp_path / "results"
    command = [sys.executable, "-m", "core.local", "--tasks", str(tasks), "--resume"]
    command += ["--workers", workers, "--results-dir", str(results)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rng = random.Random(int(workers))
    # WHEN the runner is killed with SIGKILL three times at random moments, then run to the end
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(0.5, 1.5))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    # THEN every result is present and exactly right, and no temporary is left
    assert kills >= 1
    assert final.returncode == 0, final.stderr
    names = os.listdir(results)
    assert sorted(names) == sorted(f"t{i}.out" for i in range(total))
    for i in range(total):
        assert (results / f"t{i}.out").read_text() == str(i + 10**40)
