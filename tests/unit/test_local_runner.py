"""The local runner as users run it: ``python -m core.local`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT, files_outside

if TYPE_CHECKING:
    from pathlib import Path


def run_local(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "core.local", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def write_tasks(path: Path, tasks: list[object]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    return path


def good(i: int) -> dict[str, object]:
    return {"id": f"task-{i}", "data": {"num1": i, "num2": 1}}


@pytest.mark.parametrize("name", ["config.json", "cloud-config.json", "adapted-config.json"])
def test_each_seed_config_shape_writes_the_sample_result(tmp_path: Path, name: str) -> None:
    # GIVEN a fresh directory / WHEN the runner runs the example config
    result = run_local("--config", str(REPO_ROOT / "examples" / name), cwd=tmp_path)
    # THEN results/test-task.out holds exactly 100
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results" / "test-task.out").read_bytes() == b"100"
    assert "1 task: 1 succeeded, 0 failed, 0 skipped" in result.stdout
    assert result.stderr == ""


def test_results_dir_from_flag_and_from_environment(tmp_path: Path) -> None:
    config = str(REPO_ROOT / "examples" / "config.json")
    assert run_local("--config", config, "--results-dir", "out1", cwd=tmp_path).returncode == 0
    env = {"ADDER_RESULTS_DIR": str(tmp_path / "out2")}
    assert run_local("--config", config, cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "out1" / "test-task.out").read_text() == "100"
    assert (tmp_path / "out2" / "test-task.out").read_text() == "100"


def test_mixed_task_file_counts_failures_and_exits_1(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            [
                json.dumps(good(1)),
                '{"id": "bad-num", "data": {"num1": "x", "num2": 1}}',
                "this is not json",
                "",
                '{"id": "../../escape", "data": {"num1": 1, "num2": 1}}',
                json.dumps({"task_id": "flat", "num1": 0.1, "num2": 0.2}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = run_local("--tasks", str(tasks), cwd=tmp_path)
    assert result.returncode == 1
    assert "5 tasks: 2 succeeded, 3 failed, 0 skipped" in result.stdout
    results = tmp_path / "results"
    assert (results / "task-1.out").read_text() == "2"
    assert (results / "flat.out").read_text() == "0.3"
    assert json.loads((results / "bad-num.err").read_text())["error"] == "invalid_number"
    assert len(list(results.glob("invalid-*.err"))) == 2
    assert "Traceback" not in result.stderr
    assert "task 2: data.num1 must be a JSON number" in result.stderr
    assert files_outside(tmp_path, results) == [tasks]


def test_json_array_and_stdin_inputs(tmp_path: Path) -> None:
    array = tmp_path / "tasks.json"
    array.write_text(json.dumps([good(1), good(2)], indent=2), encoding="utf-8")
    assert run_local("--tasks", str(array), cwd=tmp_path).returncode == 0
    stdin = "".join(json.dumps(good(i)) + "\n" for i in (3, 4))
    assert run_local("--tasks", "-", cwd=tmp_path, stdin=stdin).returncode == 0
    outs = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert outs == ["task-1.out", "task-2.out", "task-3.out", "task-4.out"]


def test_json_array_keeps_exact_decimals(tmp_path: Path) -> None:
    array = tmp_path / "tasks.json"
    array.write_text('[{"id": "d", "data": {"num1": 0.1000000000000000000000001, "num2": 0.2}}]')
    assert run_local("--tasks", str(array), cwd=tmp_path).returncode == 0
    assert (tmp_path / "results" / "d.out").read_text() == "0.3000000000000000000000001"


def test_two_workers_give_the_same_results_as_one(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "t.jsonl", [good(i) for i in range(3000)] + ["bad"])
    one = run_local("--tasks", str(tasks), "--results-dir", "one", cwd=tmp_path)
    two = run_local("--tasks", str(tasks), "--results-dir", "two", "--workers", "2", cwd=tmp_path)
    assert one.returncode == two.returncode == 1
    assert "3001 tasks: 3000 succeeded, 1 failed" in two.stdout
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_resume_skips_finished_tasks(tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path / "t.jsonl", [good(i) for i in range(10)])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "task-3.out").write_text("sentinel")
    result = run_local("--tasks", str(tasks), "--resume", cwd=tmp_path)
    assert result.returncode == 0
    assert "10 tasks: 9 succeeded, 0 failed, 1 skipped" in result.stdout
    assert (tmp_path / "results" / "task-3.out").read_text() == "sentinel"


def test_bad_sample_task_gets_an_error_record_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"sample_task": {"id": "s", "data": {"num1": true, "num2": 1}}}')
    result = run_local("--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert json.loads((tmp_path / "results" / "s.err").read_text())["error"] == "invalid_number"


def test_credentials_in_config_print_a_warning_and_still_run(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps(
            {
                "provider": "gcp",
                "config": {"service_account_private_key": "-----BEGIN"},
                "sample_task": good(1),
            }
        )
    )
    result = run_local("--config", str(config), cwd=tmp_path)
    assert result.returncode == 0
    assert "warning:" in result.stderr and "Application Default Credentials" in result.stderr


@pytest.mark.parametrize(
    ("args", "files", "words"),
    [
        (["--config", "missing.json"], {}, "config file not found: missing.json"),
        (["--config", "c.json"], {"c.json": "{not json"}, "is not valid JSON"),
        (["--config", "c.json"], {"c.json": '{"provider": "aws"}'}, "has no sample_task"),
        (["--config", "c.json"], {"c.json": '{"sample_task": 5}'}, "must be an object"),
        ([], {}, "nothing to run"),
        (["--tasks", "nope.jsonl"], {}, "tasks file not found: nope.jsonl"),
        (["--tasks", "t.json"], {"t.json": '[{"id": "a"}, '}, "not a valid JSON array"),
        (["--tasks", "t.json"], {"t.json": "[1] 2"}, "extra data after the array"),
    ],
)
def test_unusable_input_gives_one_line_and_exit_2(
    tmp_path: Path, args: list[str], files: dict[str, str], words: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    result = run_local(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert words in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    result = run_local("--workers", "-3", cwd=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_help_explains_options_and_exit_codes(tmp_path: Path) -> None:
    result = run_local("--help", cwd=tmp_path)
    assert result.returncode == 0
    for words in ("--tasks", "--workers", "--resume", "--results-dir", "exit codes", "130/143"):
        assert words in result.stdout


def test_adder_run_is_the_same_runner(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "run",
            "--config",
            str(REPO_ROOT / "examples" / "config.json"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results" / "test-task.out").read_text() == "100"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_signal_stops_cleanly_with_a_summary_and_resume_finishes(
    tmp_path: Path, signum: int, code: int, workers: str
) -> None:
    # GIVEN a long run
    total = 30_000
    tasks = write_tasks(tmp_path / "t.jsonl", [good(i) for i in range(total)])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-m", "core.local", "--tasks", str(tasks), "--workers", workers]
    process = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    results = tmp_path / "results"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not results.exists() or len(os.listdir(results)) < 300):
        time.sleep(0.05)
    # WHEN it is signalled (the whole process group, as a terminal or a container stop does)
    os.killpg(process.pid, signum)
    stdout, stderr = process.communicate(timeout=60)
    # THEN it stops early with the signal's exit code, prints the summary, leaves no temporaries
    assert process.returncode == code, stderr
    assert "stopped by" in stdout and "rerun with --resume" in stdout
    assert "Traceback" not in stderr
    done = len(os.listdir(results))
    assert 0 < done < total
    assert not [name for name in os.listdir(results) if name.endswith(".tmp")]
    # AND a resumed run finishes the rest
    resumed = run_local("--tasks", str(tasks), "--resume", "--workers", workers, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{total - done} succeeded, 0 failed, {done} skipped" in resumed.stdout
    assert len(os.listdir(results)) == total
