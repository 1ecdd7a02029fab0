"""Crashes: ``kill -9`` of the local runner at chosen points of a 50,000-task run, then resume.

The runner (``python -m core.local --tasks - --resume``, 1 and 2 workers) is killed with
SIGKILL several times: at random moments after start (during start-up, the resume's skip pass
or the first writes) and once a chosen number of results exist; the whole process group at
once, or (2 workers) the runner process alone, whose workers must then die with it. After each
kill every process of the group must be gone, every result on disk must already be whole and
right, and nothing may change any more; a temporary of a dead writer is then planted, as a
kill in the middle of a write leaves one. The last run (``--tasks FILE``) goes to the end:
every one of the 50,000 results must be present and exactly right, none empty or partial, no
temporary left, and its summary must count every task as succeeded or skipped.

Every kill point is deterministic, whatever the machine's speed or load. Each killed run reads
its tasks from a pipe the test holds open, so it can never reach the end of its input: it is
still running when the kill comes, however late that is. Run ``k`` is fed only the first
``FEEDS[k]`` tasks, a prefix that grows from kill to kill and stays below the total, so a kill
"at N results" always has an N the run can reach (more than the results already on disk, at
most the tasks fed), and the final run always has work left. After a kill the test waits,
with a generous bound, until no live process of the runner's group remains (a zombie writes
nothing), and only then checks that nothing changes.

``tests/unit/test_crash_safety.py`` kills a single writer mid-write (at a handshake, not at a
time); here whole runs are killed, the invariant is checked after every kill, and stale
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
import threading
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

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(),
    reason="needs /proc to see every process of the runner's group",
)

TOTAL = 50_000
GROUP, PARENT = "the process group", "the runner alone"
KILLS: dict[int, tuple[tuple[str, str], ...]] = {
    1: (
        ("time", GROUP),
        ("progress", GROUP),
        ("progress", GROUP),
        ("time", GROUP),
        ("progress", GROUP),
        ("progress", GROUP),
    ),
    2: (
        ("time", GROUP),
        ("progress", GROUP),
        ("progress", PARENT),
        ("time", PARENT),
        ("progress", GROUP),
        ("progress", PARENT),
    ),
}
"""The kill schedule of each variant: when (by time since start, or by results on disk) and
what (the whole process group, or only the runner, whose pool workers must die with it)."""
FEEDS = tuple(TOTAL * (k + 1) // 8 for k in range(6))
"""Tasks fed to the k-th killed run: 6,250 to 37,500 (growing, always below ``TOTAL``)."""
GONE_WITHIN = 30.0
"""Hang guard for a killed group to disappear and its pipes to close (not a speed claim)."""
REACH_WITHIN = 120.0
"""Hang guard for a run to reach its kill point."""
PIPE_WRITE = 64 * 1024
SUMMARY = re.compile(r"(\d+) tasks?: (\d+) succeeded, (\d+) failed, (\d+) skipped")


def expected_tasks(total: int = TOTAL) -> tuple[list[bytes], dict[str, str]]:
    """``total`` JSON Lines in four shapes, and the exact ``.out`` text of each id."""
    lines: list[bytes] = []
    outs: dict[str, str] = {}
    for i in range(total):
        shape = i % 4
        if shape == 0:
            task_id, out = f"t{i}", str(i + 10**40)
            line = f'{{"id": "{task_id}", "data": {{"num1": {i}, "num2": 1e40}}}}'
        elif shape == 1:
            task_id, out = f"t{i}", f"{i}.75"
            line = f'{{"task_id": "{task_id}", "num1": {i}.25, "num2": 0.50}}'
        elif shape == 2:
            task_id, out = f"t{i}", str(2 * i)
            line = f'{{"id": "{task_id}", "data": {{"num1": -{i}, "num2": {3 * i}}}}}'
        else:
            task_id, out = f"数-{i}", str(i * i - 1)
            line = f'{{"task_id": "{task_id}", "data": {{"num1": {i * i}, "num2": -1}}}}'
        lines.append(line.encode() + b"\n")
        outs[task_id] = out
    return lines, outs


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


class HeldOpenInput:
    """A pipe for the runner's standard input that the test never closes while it runs.

    A thread writes ``data`` into it (more than a pipe holds, so not all at once) and then
    stops without closing: the runner never sees the end of its input, so it cannot finish on
    its own, and a kill always finds it running. The thread ends when everything is written or
    when no reader is left (the runner's whole group is dead).
    """

    def __init__(self, data: bytes) -> None:
        self.read_fd, self._write_fd = os.pipe()
        self._thread = threading.Thread(target=self._feed, args=(data,), daemon=True)
        self._thread.start()

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        with suppress(BrokenPipeError):  # every reader is dead: the rest goes nowhere
            while view:
                view = view[os.write(self._write_fd, view[:PIPE_WRITE]) :]

    def started(self) -> None:
        """The runner holds its own copy of the read end now; drop ours."""
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def close(self) -> None:
        """Once the runner's group is gone: the writing thread has ended; close the pipe."""
        self.started()
        if self._write_fd < 0:
            return
        self._thread.join(GONE_WITHIN)
        assert not self._thread.is_alive(), "a reader of the runner's input is still alive"
        os.close(self._write_fd)
        self._write_fd = -1


def start_runner(
    command: list[str], cwd: Path, feed: HeldOpenInput, *, capture: bool = False
) -> subprocess.Popen[bytes]:
    """The runner, reading ``feed`` on stdin, as the leader of a new process group."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            command,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=cwd,
            stdin=feed.read_fd,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    finally:
        feed.started()


def group_members(pgid: int) -> list[int]:
    """Every live process of process group ``pgid`` (a zombie is dead: it writes nothing).

    Read from /proc, so it also sees workers whose parent died and which were adopted by
    init (which here may never reap them: they stay zombies, and count as gone).
    """
    members = []
    wanted = str(pgid).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_bytes()
        except OSError:  # it ended while we looked
            continue
        state, _ppid, group = stat.rpartition(b")")[2].split()[:3]
        if group == wanted and state not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def wait_group_gone(pgid: int) -> list[int]:
    """Wait (at most ``GONE_WITHIN`` seconds) until no live process of the group remains;
    return the ones still alive then (empty: all gone)."""
    deadline = time.monotonic() + GONE_WITHIN
    while (alive := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_everything(process: subprocess.Popen[bytes] | None, feed: HeldOpenInput | None) -> None:
    """Clean-up after a failure: kill what is left of the group, reap, close the input."""
    if process is not None:
        if process.poll() is None or group_members(process.pid):
            kill_group(process.pid)
        process.wait(timeout=GONE_WITHIN)
        wait_group_gone(process.pid)
    if feed is not None:
        feed.close()


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


def listing(results: Path) -> list[str]:
    return sorted(os.listdir(results)) if results.exists() else []


def time_passed(deadline: float) -> bool:
    return time.monotonic() >= deadline


def results_reach(results: Path, count: int) -> bool:
    return len(result_names(results)) >= count


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Poll until ``condition`` holds. The runner's input is still open, so it cannot have
    finished: if it ended anyway, that is a failure, not a kill point to skip."""
    deadline = time.monotonic() + REACH_WITHIN
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"the runner ended by itself (exit {process.returncode}) with its input still open"
        )
        if condition():
            return
        time.sleep(0.005)
    raise TimeoutError("the runner did not reach the kill point")


def kill(process: subprocess.Popen[bytes], what: str) -> None:
    """SIGKILL the runner's whole process group, or the runner process alone."""
    if what == GROUP:
        kill_group(process.pid)
    else:
        os.kill(process.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_runner_killed_at_random_points_then_resumed_has_every_result_whole(
    work_dir: Path, workers: int, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN 50,000 tasks whose exact results are known
    lines, outs = expected_tasks()
    tasks = work_dir / "tasks.jsonl"
    tasks.write_bytes(b"".join(lines))
    results = work_dir / "results"
    options = ["--resume", "--workers", str(workers), "--results-dir", str(results)]
    options += ["--no-progress"]
    schedule = KILLS[workers]
    rng = random.Random(20261127 + workers)
    crashes = Crashes()
    started = time.monotonic()
    process: subprocess.Popen[bytes] | None = None
    feed: HeldOpenInput | None = None
    try:
        for (when, what), fed in zip(schedule, FEEDS, strict=True):
            # WHEN the runner (resuming, fed the first `fed` tasks through a pipe it never sees
            # closed) is killed with SIGKILL: its whole group, or the runner alone
            done_before = len(result_names(results))
            assert done_before < fed  # earlier runs were fed fewer tasks
            feed = HeldOpenInput(b"".join(lines[:fed]))
            process = start_runner(
                [sys.executable, "-m", "core.local", "--tasks", "-", *options], work_dir, feed
            )
            if when == "time":
                delay = rng.uniform(0.05, 1.0)
                point = f"{delay:.2f}s after start"
                deadline = time.monotonic() + delay
                wait_for(functools.partial(time_passed, deadline), process)
            else:
                target = done_before + max(1, int(rng.uniform(0.05, 0.6) * (fed - done_before)))
                point = f"at {target:,} results"
                wait_for(functools.partial(results_reach, results, target), process)
            kill(process, what)
            process.wait(timeout=GONE_WITHIN)
            assert process.returncode == -signal.SIGKILL
            crashes.kills.append(f"{point} ({what})")
            # THEN every process of its group is gone: killed, or dead with the runner ...
            assert wait_group_gone(process.pid) == [], f"{what} killed; these live on"
            feed.close()
            # ... nothing changes any more (no writer survived the kill) ...
            before = listing(results)
            time.sleep(0.1)
            assert listing(results) == before
            # ... and every result already on disk is whole and exactly right
            assert wrong_results(results, outs) == []
            crashes.temporaries_found += sum(name.endswith(".tmp") for name in before)
            # AND a dead writer's half-written temporary is left, as a kill mid-write does
            missing = sorted(set(outs) - {n[: -len(".out")] for n in result_names(results)})
            if missing and results.exists():
                name = rng.choice(missing)
                stale = results / f".{name}.out.{process.pid}-{rng.randrange(10**6)}.tmp"
                stale.write_text(outs[name][: len(outs[name]) // 2])
                crashes.planted += 1
        # WHEN it is resumed once more, on the whole tasks file, and left to finish
        before_final = len(result_names(results))
        command = [sys.executable, "-m", "core.local", "--tasks", str(tasks), *options]
        final = subprocess.run(
            command,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=work_dir,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop_everything(process, feed)
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
    # AND the run was really interrupted, at every kill point, mid-way
    assert len(crashes.kills) == len(schedule), crashes.kills
    assert crashes.planted >= 1
    assert 0 < before_final <= FEEDS[-1] < TOTAL
    alone = sum(what == PARENT for _, what in schedule)
    kills = f"kill -9 of the process group {len(crashes.kills)} times"
    if alone:
        kills = (
            f"kill -9 {len(crashes.kills)} times ({len(crashes.kills) - alone} of the process "
            f"group, {alone} of the runner alone)"
        )
    reliability_row(
        Row(
            "crash",
            "local runner",
            f"{TOTAL:,} tasks, {workers} worker{'s' if workers > 1 else ''}: {kills}, "
            "each followed by --resume",
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


ALONE_TASKS = 10_000
ALONE_KILL_AT = 1_000


def test_runner_killed_alone_takes_its_workers_with_it_and_closes_its_pipes(
    work_dir: Path, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN a 2-worker runner with its stdout and stderr on pipes (as subprocess.run's
    # capture_output sets them up), fed tasks through a pipe it never sees closed
    lines, outs = expected_tasks(ALONE_TASKS)
    tasks = work_dir / "tasks.jsonl"
    tasks.write_bytes(b"".join(lines))
    results = work_dir / "results"
    options = ["--resume", "--workers", "2", "--results-dir", str(results), "--no-progress"]
    started = time.monotonic()
    feed = HeldOpenInput(b"".join(lines))
    process: subprocess.Popen[bytes] | None = None
    try:
        process = start_runner(
            [sys.executable, "-m", "core.local", "--tasks", "-", *options],
            work_dir,
            feed,
            capture=True,
        )
        wait_for(functools.partial(results_reach, results, ALONE_KILL_AT), process)
        members = group_members(process.pid)
        assert len(members) == 3, f"expected the runner and 2 workers, found {members}"
        # WHEN the runner process alone (not its group) is killed with SIGKILL mid-run
        os.kill(process.pid, signal.SIGKILL)
        # THEN its pipes reach end-of-file: no worker lives on holding them, so a
        # subprocess.run(..., capture_output=True) around the runner returns
        try:
            process.communicate(timeout=GONE_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"stdout/stderr still open {GONE_WITHIN:.0f}s after the runner was killed: "
                f"its workers outlived it ({group_members(process.pid)} alive)"
            )
        assert process.returncode == -signal.SIGKILL
        # AND no process of its group remains: the workers died with their parent
        assert wait_group_gone(process.pid) == []
        feed.close()
        # AND nothing changes any more, and every result on disk is whole and exactly right
        before = listing(results)
        time.sleep(0.1)
        assert listing(results) == before
        assert wrong_results(results, outs) == []
        done_before = len(result_names(results))
        assert ALONE_KILL_AT <= done_before < ALONE_TASKS
    finally:
        stop_everything(process, feed)
    # WHEN it is resumed on the whole file
    final = subprocess.run(
        [sys.executable, "-m", "core.local", "--tasks", str(tasks), *options],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=work_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # THEN every task is done exactly once, every result right, no temporary left
    assert final.returncode == 0, final.stderr
    counts = SUMMARY.search(final.stdout)
    assert counts is not None, final.stdout
    processed, succeeded, failed, skipped = map(int, counts.groups())
    assert (processed, failed, skipped) == (ALONE_TASKS, 0, done_before)
    assert sorted(os.listdir(results)) == sorted(f"{task_id}.out" for task_id in outs)
    assert wrong_results(results, outs) == []
    reliability_row(
        Row(
            "crash",
            "local runner",
            f"{ALONE_TASKS:,} tasks, 2 workers: kill -9 of the runner alone (not its group) "
            "mid-run, then --resume",
            cases=1,
            messages=ALONE_TASKS,
            results=ALONE_TASKS,
            faults_injected=1,
            seconds=time.monotonic() - started,
            note=f"killed at {done_before:,} results; the workers died with it (PDEATHSIG) "
            f"and its stdout/stderr pipes closed; the resume skipped {skipped:,} and wrote "
            f"{succeeded:,}",
        )
    )
