"""The local runner against hostile input and a hostile environment, run as users run it.

Each test starts ``python -m core.local`` in a subprocess: signals while the input is idle,
unusable results directories, input framing (BOMs, blank prefixes, pipes that trickle),
very long lines, store failures in the summary, and what ``--resume`` counts as finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, files_outside
from tests.unit.test_local_runner import good, run_local, write_tasks

HANG_GUARD_SECONDS = 60
"""How long a stopped runner may take to exit before the test calls it hung (not a speed
claim: the fixed runner exits at once; the broken one never does)."""


def start_runner(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "core.local", *args],
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def wait_for_files(directory: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until ``directory`` holds ``count`` results (bounded; fails if the runner exits)."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        if directory.is_dir() and len(list(directory.glob("*.out"))) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    pytest.fail(f"{count} results never appeared in {directory}")


def wait_until_catching(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Wait until ``process`` has a handler for ``signum`` (its ``SigCgt`` mask says so): the
    runner is then past start-up, where the signal would still kill it the default way. From
    there on the outcome is the same whether it has reached its read or not."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(status.partition("SigCgt:")[2].split()[0], 16)
        if caught & (1 << (signum - 1)):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    pytest.fail(f"the runner never installed its {signum.name} handler")


def wait_with_stdin_open(runner: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Wait for the runner to exit while its input stays open (communicate() would close
    it, ending the input and so the run), then read what it printed."""
    assert runner.stdout is not None and runner.stderr is not None and runner.stdin is not None
    try:
        runner.wait(timeout=HANG_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.communicate()
        pytest.fail("the runner kept waiting for input after the stop signal")
    out, err = runner.stdout.read(), runner.stderr.read()
    runner.stdin.close()
    runner.stdout.close()
    runner.stderr.close()
    return out, err


def task_line(i: int) -> bytes:
    return json.dumps(good(i)).encode() + b"\n"


# --- 1. a stop signal while the input is idle ------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_ends_a_run_whose_input_is_open_but_idle(
    tmp_path: Path, workers: str, signum: signal.Signals, code: int
) -> None:
    # GIVEN a runner reading a pipe whose producer wrote three tasks and then went quiet
    runner = start_runner("--tasks", "-", "--workers", workers, "--results-dir", "r", cwd=tmp_path)
    assert runner.stdin is not None
    runner.stdin.write(b"".join(task_line(i) for i in range(3)))
    runner.stdin.flush()
    wait_for_files(tmp_path / "r", 3, runner)
    # WHEN the stop signal arrives while the pipe is still open and empty
    runner.send_signal(signum)
    out, err = wait_with_stdin_open(runner)
    # THEN it stops with 128+N, the tasks in hand finished, and says how to go on
    assert runner.returncode == code, err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "task-0.out",
        "task-1.out",
        "task-2.out",
    ]
    assert f"stopped by {signum.name}: 3 tasks: 3 succeeded" in out.decode()
    assert "--resume" in out.decode()
    assert b"Traceback" not in err


@pytest.mark.parametrize("first_write", [b"", b"  \n", b'[{"id": "a", "data": {"num1": 1, '])
def test_a_stop_signal_ends_a_run_that_has_not_seen_a_task_yet(
    tmp_path: Path, first_write: bytes
) -> None:
    # GIVEN a runner whose producer wrote nothing, only blank space, or half a JSON array
    runner = start_runner("--tasks", "-", "--results-dir", "r", cwd=tmp_path)
    assert runner.stdin is not None
    runner.stdin.write(first_write)
    runner.stdin.flush()
    wait_until_catching(runner, signal.SIGTERM)
    # WHEN SIGTERM arrives
    runner.send_signal(signal.SIGTERM)
    out, err = wait_with_stdin_open(runner)
    # THEN it exits 143 having run nothing
    assert runner.returncode == 143, err
    assert "stopped by SIGTERM: 0 tasks" in out.decode()
    assert b"Traceback" not in err


# --- 3. an unusable results directory -----------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("file", "exists and is not a directory"),
        ("file/below", "cannot open results directory"),
        ("/proc/adder-results", "cannot open results directory"),
        ("/proc/self", "cannot write in results directory"),
    ],
)
def test_an_unusable_results_directory_is_one_line_and_exit_2(
    tmp_path: Path, workers: str, layout: str, words: str
) -> None:
    # GIVEN a results path that is a regular file, below one, or somewhere nothing can be
    # written (root can write almost anywhere else)
    (tmp_path / "file").write_text("not a directory")
    tasks = write_tasks(tmp_path / "tasks.jsonl", [good(i) for i in range(5)])
    # WHEN the runner is pointed at it
    result = run_local(
        "--tasks", str(tasks), "--workers", workers, "--results-dir", layout, cwd=tmp_path
    )
    # THEN one line on stderr names the problem, exit 2, nothing was written anywhere
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "file").read_text() == "not a directory"


# --- 6. framing: BOMs, blank prefixes, trickling pipes ----------------------------------

ARRAY = b'[{"id": "a", "data": {"num1": 1, "num2": 2}}, {"task_id": "b", "num1": 3, "num2": 4}]'
LINES = b'{"id": "a", "data": {"num1": 1, "num2": 2}}\n{"task_id": "b", "num1": 3, "num2": 4}\n'


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbf" + ARRAY,
        b"\xef\xbb\xbf\n\n  " + ARRAY,
        b" " * 5000 + ARRAY,
        b"\n" * 3000 + b"\t" * 3000 + ARRAY,
        b"\xef\xbb\xbf" + LINES,
        b"\xef\xbb\xbf\r\n\r\n" + LINES,
        b" " * 70_000 + b"\n" + LINES,
    ],
    ids=[
        "bom-array",
        "bom-blank-array",
        "5k-spaces-array",
        "blank-lines-tabs-array",
        "bom-lines",
        "bom-crlf-lines",
        "70k-blank-line-lines",
    ],
)
def test_the_format_is_read_from_the_first_character_that_is_not_blank_or_a_bom(
    tmp_path: Path, content: bytes
) -> None:
    # GIVEN a tasks file with a BOM or a long blank prefix before an array or JSON Lines
    tasks = tmp_path / "tasks"
    tasks.write_bytes(content)
    # WHEN the runner reads it
    result = run_local("--tasks", str(tasks), "--results-dir", "r", cwd=tmp_path)
    # THEN both tasks ran, and nothing else was made of the file
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["a.out", "b.out"]
    assert (tmp_path / "r" / "b.out").read_text() == "7"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_array_on_stdin_whose_first_write_is_blank_is_still_an_array(
    tmp_path: Path, workers: str
) -> None:
    # GIVEN a producer whose first write is only blank space, the array coming later
    runner = start_runner("--tasks", "-", "--workers", workers, "--results-dir", "r", cwd=tmp_path)
    assert runner.stdin is not None
    runner.stdin.write(b"  \n\t")
    runner.stdin.flush()
    time.sleep(0.3)  # the runner sees the blank write alone (it must work either way)
    runner.stdin.write(ARRAY)
    # WHEN the input ends
    out, err = runner.communicate(timeout=HANG_GUARD_SECONDS)
    # THEN it was read as the array of two tasks
    assert runner.returncode == 0, err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["a.out", "b.out"]
    assert b"2 tasks: 2 succeeded" in out


@pytest.mark.parametrize(
    ("bom", "name"), [(b"\xff\xfe", "UTF-16 (little-endian)"), (b"\xfe\xff", "UTF-16 (big-endian)")]
)
def test_a_utf16_tasks_file_is_refused_in_one_line(tmp_path: Path, bom: bytes, name: str) -> None:
    tasks = tmp_path / "tasks.json"
    codec = "utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"
    tasks.write_bytes(bom + ARRAY.decode().encode(codec))
    result = run_local("--tasks", str(tasks), "--results-dir", "r", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: tasks file {tasks} is {name}; save it as UTF-8\n"


def test_a_config_file_with_a_bom_is_read(tmp_path: Path) -> None:
    # GIVEN the example config saved by an editor that writes a BOM
    config = tmp_path / "config.json"
    config.write_bytes(b"\xef\xbb\xbf" + (REPO_ROOT / "examples" / "config.json").read_bytes())
    # WHEN the runner runs it THEN the sample task ran
    result = run_local("--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results" / "test-task.out").read_text() == "100"


# --- 8. a very long line ----------------------------------------------------------------

LONG_LINE_BYTES = 64 * 1024 * 1024


def test_a_very_long_line_is_refused_without_being_held(tmp_path: Path) -> None:
    # GIVEN a 64 MiB line (ending in CRLF) between two good tasks
    long_line = b'{"id": "huge", "pad": "' + b"x" * LONG_LINE_BYTES + b'"}'
    tasks = tmp_path / "tasks.jsonl"
    with tasks.open("wb") as out:
        out.write(task_line(1) + long_line + b"\r\n" + task_line(2))
    # WHEN the runner (one process) runs the file, reporting its own peak memory
    # (VmHWM: this process's own high-water mark; ru_maxrss would carry pytest's across exec)
    report_peak = (
        "import re, sys\n"
        "from core.local import main\n"
        "code = main(sys.argv[1:])\n"
        "status = open('/proc/self/status').read()\n"
        "print('peak_kib=' + re.search(r'VmHWM:\\s*(\\d+)', status).group(1), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", report_peak, "--tasks", str(tasks), "--results-dir", "r"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    peak_kib = int(result.stderr.rpartition("peak_kib=")[2])
    # THEN the good tasks ran and the long one has its too_large record, named and hashed
    # as if the whole line had been kept
    assert result.returncode == 1
    digest = hashlib.sha256(long_line).hexdigest()
    record = json.loads((tmp_path / "r" / f"invalid-{digest}.err").read_bytes())
    assert record["error"] == "too_large"
    assert record["raw_bytes"] == len(long_line) and record["raw_sha256"] == digest
    assert record["raw_truncated"] is True
    assert record["raw"].encode() == long_line[: 64 * 1024]
    assert (tmp_path / "r" / "task-2.out").read_text() == "3"
    assert "failed: task 2: task message is 67108889 bytes" in result.stderr
    # AND the runner's peak memory stayed far below the line's size (it never held it)
    assert peak_kib * 1024 < LONG_LINE_BYTES / 2, f"peak {peak_kib} KiB"


# --- 11, 12. store failures in the summary; what --resume counts as finished ------------


def test_store_failures_are_reported_as_not_written_not_as_records(tmp_path: Path) -> None:
    # GIVEN results where two names are taken by directories (the store cannot write them)
    # and one bad task
    results = tmp_path / "r"
    (results / "task-1.out").mkdir(parents=True)
    (results / "task-2.out").mkdir()
    tasks = write_tasks(tmp_path / "tasks.jsonl", [good(0), good(1), good(2), {"id": "bad"}])
    # WHEN the runner runs them
    result = run_local("--tasks", str(tasks), "--results-dir", "r", cwd=tmp_path)
    # THEN the summary tells the kinds apart: 1 rejected with a record, 2 not written
    assert result.returncode == 1
    assert "4 tasks: 1 succeeded, 3 failed" in result.stdout
    assert "1 task rejected as bad: each has its .err record" in result.stderr
    assert "2 tasks not written: the results directory failed" in result.stderr
    assert "each bad task has its .err record" not in result.stderr
    assert (results / "bad.err").is_file() and not (results / "task-1.err").exists()


def test_resume_counts_only_a_regular_file_as_a_finished_result(tmp_path: Path) -> None:
    # GIVEN results where x.out is a directory and y.out a link to a file outside them
    results = tmp_path / "r"
    (results / "x.out").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (results / "y.out").symlink_to(outside)
    (results / "z.out").write_text("5")
    tasks = write_tasks(
        tmp_path / "tasks.jsonl",
        [{"id": name, "data": {"num1": 2, "num2": 3}} for name in ("x", "y", "z")],
    )
    # WHEN the run is resumed
    result = run_local("--tasks", str(tasks), "--results-dir", "r", "--resume", cwd=tmp_path)
    # THEN only z (a regular file) was skipped; y was written as a regular file over the
    # link (the file outside is untouched); x could not be written and is counted as such
    assert "3 tasks: 1 succeeded, 1 failed, 1 skipped" in result.stdout, result.stderr
    assert result.returncode == 1
    assert (results / "y.out").is_file() and not (results / "y.out").is_symlink()
    assert (results / "y.out").read_text() == "5"
    assert outside.read_text() == "keep me"
    assert set(files_outside(tmp_path, results)) == {tasks, outside}
