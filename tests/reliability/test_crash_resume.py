"""Crashes: ``kill -9`` of the local runner at random points of a 50,000-task run, then resume.

The runner (``python -m core.local --tasks FILE --resume``, 1 and 2 workers) is killed with
SIGKILL, the whole process group at once, several times: at random moments after start (during
start-up, the resume's skip pass or the first writes) and when a random number of results exist.
After each kill every result on disk must already be whole and right, and nothing may change
any more (no writer survived); a temporary of a dead writer is then planted, as a kill in the
middle of a write leaves one. The last run goes to the end: every one of the 50,000 results
must be present and exactly right, none empty or partial, no temporary left, and its summary
must count every task as succeeded or skipped.

Unlike ``tests/unit/test_crash_safety.py`` (20,000 tasks, kills at random times only), kills
here are also placed by progress, the invariant is checked after every kill, and stale
temporaries are planted so that their removal is observed.
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT, files_outside
from tests.reliability.ledger import Row

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

TOTAL = 50_000
KILLS = ("time", "progress", "progress", "time", "progress", "progress")
"""The kill schedule of each variant: by time since start, or by results on disk."""
SUMMARY = re.compile(r"(\d+) tasks?: (\d+) succeeded, (\d+) failed, (\d+) skipped")


def expected_tasks() -> tuple[bytes, dict[str, str]]:
    """50,000 JSON Lines in four shapes, and the exact ``.out`` text of each id."""
    lines: list[str] = []
    outs: dict[str, str] = {}
    for i in range(TOTAL):
        shape = i % 4
        if shape == 0:
            task_id, out = f"t{i}", str(i + 10**40)
            lines.append(f'{{"id": "{task_id}", "data": {{"num1": {i}, "num2": 1e40}}}}')
        elif shape == 1:
            task_id, out = f"t{i}", f"{i}.75"
            lines.append(f'{{"task_id": "{task_id}", "num1": {i}.25, "num2": 0.50}}')
        elif shape == 2:
            task_id, out = f"t{i}", str(2 * i)
            lines.append(f'{{"id": "{task_id}", "data": {{"num1": -{i}, "num2": {3 * i}}}}}')
        else:
            task_id, out = f"数-{i}", str(i * i - 1)
            lines.append(f'{{"task_id": "{task_id}", "data": {{"num1": {i * i}, "num2": -1}}}}')
        outs[task_id] = out
    return ("\n".join(lines) + "\n").encode(), outs


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs (/dev/shm) when there is one, removed afterwards; else tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="adder-crash-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Crashes:
    """What the kills did."""

    kills: list[str] = field(default_factory=list)
    temporaries_found: int = 0
    planted: int = 0


def result_names(results: Path) -> list[str]:
    if not results.exists():
        return []
    return [name for name in os.listdir(results) if name.endswith(".out")]


def wrong_results(results: Path, outs: dict[str, str]) -> list[str]:
    """Every ``.out`` on disk that is not exactly its task's sum (empty, partial, other)."""
    wrong = []
    for name in result_names(results):
        content = (results / name).read_bytes()
        if content.decode("utf-8", "replace") != outs.get(name[: -len(".out")]):
            wrong.append(f"{name}: {content[:50]!r}")
    return wrong


def time_passed(deadline: float) -> bool:
    return time.monotonic() >= deadline


def results_reach(results: Path, count: int) -> bool:
    return len(result_names(results)) >= count


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> bool:
    """Poll until ``condition`` holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.005)
    raise TimeoutError("the runner neither reached the kill point nor finished")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_runner_killed_at_random_points_then_resumed_has_every_result_whole(
    work_dir: Path, workers: int, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN 50,000 tasks whose exact results are known
    data, outs = expected_tasks()
    tasks = work_dir / "tasks.jsonl"
    tasks.write_bytes(data)
    results = work_dir / "results"
    command = [sys.executable, "-m", "core.local", "--tasks", str(tasks), "--resume"]
    command += ["--workers", str(workers), "--results-dir", str(results), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    rng = random.Random(20261127 + workers)
    crashes = Crashes()
    started = time.monotonic()
    process: subprocess.Popen[bytes] | None = None
    try:
        for kind in KILLS:
            # WHEN the runner (resuming) is killed with SIGKILL, the whole group at once
            done_before = len(result_names(results))
            process = subprocess.Popen(
                command,
                env=env,
                cwd=work_dir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if kind == "time":
                delay = rng.uniform(0.05, 1.0)
                point = f"{delay:.2f}s after start"
                deadline = time.monotonic() + delay
                reached = wait_for(functools.partial(time_passed, deadline), process)
            else:
                target = done_before + max(1, int(rng.uniform(0.05, 0.35) * (TOTAL - done_before)))
                point = f"at {target:,} results"
                reached = wait_for(functools.partial(results_reach, results, target), process)
            kill_group(process)
            process.wait(timeout=60)
            if reached:
                assert process.returncode == -signal.SIGKILL
                crashes.kills.append(point)
            # THEN nothing changes any more (no writer survived the kill) ...
            listing = sorted(os.listdir(results)) if results.exists() else []
            time.sleep(0.2)
            assert (sorted(os.listdir(results)) if results.exists() else []) == listing
            # ... and every result already on disk is whole and exactly right
            assert wrong_results(results, outs) == []
            crashes.temporaries_found += sum(name.endswith(".tmp") for name in listing)
            # AND a dead writer's half-written temporary is left, as a kill mid-write does
            missing = sorted(set(outs) - {n[: -len(".out")] for n in result_names(results)})
            if missing and results.exists():
                name = rng.choice(missing)
                stale = results / f".{name}.out.{process.pid}-{rng.randrange(10**6)}.tmp"
                stale.write_text(outs[name][: len(outs[name]) // 2])
                crashes.planted += 1
        # WHEN it is resumed once more and left to finish
        before_final = len(result_names(results))
        final = subprocess.run(
            command, env=env, cwd=work_dir, capture_output=True, text=True, timeout=300
        )
    finally:
        if process is not None and process.poll() is None:
            kill_group(process)
            process.wait(timeout=60)
    # THEN it succeeds, and its summary counts every task: skipped (already done) or succeeded
    assert final.returncode == 0, final.stderr
    counts = SUMMARY.search(final.stdout)
    assert counts is not None, final.stdout
    processed, succeeded, failed, skipped = map(int, counts.groups())
    assert (processed, failed) == (TOTAL, 0)
    assert succeeded + skipped == TOTAL
    assert skipped == before_final
    # AND every one of the 50,000 results is there, exactly right; no temporary is left
    names = os.listdir(results)
    assert sorted(names) == sorted(f"{task_id}.out" for task_id in outs)
    assert wrong_results(results, outs) == []
    assert files_outside(work_dir, results) == [tasks]
    # AND the run was really interrupted, several times, mid-way
    assert len(crashes.kills) >= len(KILLS) - 1, crashes.kills
    assert crashes.planted >= 1
    assert 0 < before_final < TOTAL
    reliability_row(
        Row(
            "crash",
            "local runner",
            f"{TOTAL:,} tasks, {workers} worker{'s' if workers > 1 else ''}: kill -9 of the "
            f"process group {len(crashes.kills)} times, each followed by --resume",
            cases=len(crashes.kills),
            messages=TOTAL,
            results=TOTAL,
            faults_injected=len(crashes.kills),
            seconds=time.monotonic() - started,
            note=f"kills {', '.join(crashes.kills)}; {crashes.temporaries_found} temporaries "
            f"left by the kills and {crashes.planted} planted half-written ones, all removed "
            f"by --resume; the final run skipped {skipped:,} and wrote {succeeded:,}",
        )
    )
