"""``adder sandbox aws`` as a user runs it: start it, wait for "ready", run the commands it
prints from another process, stop it with Ctrl-C (SIGINT), and find nothing left behind."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

from aws_lambda.sandbox.command import Sandbox
from aws_lambda.sandbox.esm import MappingStats
from aws_lambda.sandbox.runtime import ZipRuntime
from aws_lambda.sandbox.terraform import find_plugin_dir, find_terraform
from core.clouds import CLOUDS
from core.packaging import build_package
from tests.conftest import REPO_ROOT
from tests.support.tools import require
from tools.servers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.integration, pytest.mark.infra]

READY_SECONDS = 180.0
"""terraform apply against moto takes about a minute (the provider waits ~25 s for each
SQS queue's attributes to settle, and the task queue waits for its dead-letter queue)."""


def needs_terraform() -> None:
    require(find_terraform() is not None, "terraform is not installed")
    require(find_plugin_dir() is not None, "no filesystem mirror of hashicorp/aws (TF_PLUGIN_DIR)")


def user_env() -> dict[str, str]:
    """A shell with no AWS settings at all: what the sandbox prints must be enough."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def adder(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class RunningSandbox:
    """``adder sandbox aws`` in its own session, its stdout read line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "sandbox", "aws", *args],
            cwd=cwd,
            env=user_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float) -> list[str]:
        """Every line up to and including the first one holding ``text``, then the rest of
        the block that follows it (until a pause in the output)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"sandbox exited before {text!r}: {self.seen} {stderr}")
            self.seen.append(line)
            if text in line:
                break
        block = [self.seen[-1]]
        while True:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                return block
            if line is None:
                return block
            self.seen.append(line)
            block.append(line)

    def children(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in found.split()]

    def kill_all(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def printed_commands(block: list[str]) -> dict[str, list[str]]:
    """The ``adder ...`` lines of the ready text, by command name; and the export line."""
    commands: dict[str, list[str]] = {}
    for line in block:
        words = shlex.split(line.strip()) if line.startswith("  ") else []
        if words[:1] == ["adder"]:
            commands[words[1]] = words[1:]
        elif words[:1] == ["export"]:
            commands["export"] = words[1:]
    return commands


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]  # noqa: PTH123, SIM115
    return status == "Z"


def test_the_commands_the_sandbox_prints_run_a_job_end_to_end(tmp_path: Path) -> None:
    needs_terraform()
    # GIVEN `adder sandbox aws` started in a fresh directory, ready
    port = free_port()
    state = tmp_path / "sandbox"
    sandbox = RunningSandbox(tmp_path, "--port", str(port), "--dir", str(state))
    try:
        block = sandbox.wait_for("ready", READY_SECONDS)
        commands = printed_commands(block)
        assert f"http://127.0.0.1:{port}" in block[0]
        assert set(commands) >= {"export", "submit", "watch", "fetch", "redrive", "status"}
        children = sandbox.children()
        assert len(children) == 2  # the moto server and the function's interpreter
        # AND a user shell with only what the sandbox told it to export
        env = user_env()
        env.update(dict(item.split("=", 1) for item in commands["export"]))
        good = [{"id": f"t{i}", "data": {"num1": i, "num2": 0.5}} for i in range(20)]
        (tmp_path / "tasks.jsonl").write_text(
            "".join(json.dumps(task) + "\n" for task in good) + "not json\n"
        )

        # WHEN the printed submit, watch, fetch, redrive and status commands run
        submitted = adder(*commands["submit"], "--no-progress", cwd=tmp_path, env=env)
        watched = adder(
            *commands["watch"], "--interval", "0.5", "--timeout", "60", cwd=tmp_path, env=env
        )
        fetched = adder(*commands["fetch"], "--no-progress", cwd=tmp_path, env=env)
        redriven = adder(*commands["redrive"], "--no-progress", cwd=tmp_path, env=env)
        status = adder(*commands["status"], cwd=tmp_path, env=env)

        # THEN every task was sent, processed by the packaged handler and fetched
        assert submitted.returncode == 0, submitted.stderr
        assert "sent 21 tasks" in submitted.stdout
        assert watched.returncode == 1, watched.stderr  # the bad task was rejected
        assert "20 succeeded, 1 rejected, 0 dead-lettered" in watched.stdout
        assert fetched.returncode == 0, fetched.stderr
        results = tmp_path / "results"
        assert {p.name for p in results.glob("*.out")} == {f"t{i}.out" for i in range(20)}
        assert (results / "t7.out").read_bytes() == b"7.5"
        assert len(list(results.glob("invalid-*.err"))) == 1
        assert redriven.returncode == 0, redriven.stderr
        assert "moved 0 " in redriven.stdout
        assert status.returncode == 0, status.stderr
        assert "results:      20 .out, 1 .err" in status.stdout
        assert any(
            "invoked adder-sandbox-worker with" in line for line in sandbox.wait_for("invoked", 5)
        )

        # WHEN the sandbox gets Ctrl-C
        sandbox.process.send_signal(signal.SIGINT)
        code = sandbox.process.wait(timeout=30)
        stderr = sandbox.process.stderr.read() if sandbox.process.stderr else ""
    finally:
        sandbox.kill_all()
    # THEN it stops cleanly: 130, one line, no traceback, its processes and directory gone
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped after" in stderr
    assert all(is_gone(pid) for pid in children)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not state.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--var", "no-equals-sign"], "give NAME=VALUE"),
        (["--port", "70000"], "give a TCP port"),
        (["--dir", "{foreign}", "--port", "0"], "not a sandbox's"),
        (["--port", "{busy}"], "is in use"),
    ],
    ids=["bad-var", "bad-port", "foreign-dir", "port-in-use"],
)
def test_setup_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    needs_terraform()
    # GIVEN a busy port and a directory of someone else's files
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        values = {"{foreign}": str(foreign), "{busy}": str(busy.getsockname()[1])}
        # WHEN the sandbox is started with one bad setting
        done = adder(
            "sandbox",
            "aws",
            *[values.get(arg, arg) for arg in args],
            cwd=tmp_path,
            env=user_env(),
        )
    # THEN it says why in one line, exits 2, started nothing and touched nothing
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert done.stdout == ""
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / ".adder").exists()


def test_the_function_fails_the_writes_the_fail_writes_file_matches(
    tmp_path: Path, aws_env: str, s3: S3Client, bucket: str
) -> None:
    # GIVEN the packaged handler in its own interpreter, and a fail-writes file naming "doomed"
    zip_path = build_package(CLOUDS["aws"], tmp_path / "aws_lambda.zip")
    fail = tmp_path / "fail-writes"
    fail.write_text("doomed\n")
    env = {"RESULTS_BUCKET": bucket, "RESULTS_PREFIX": "results", "AWS_ENDPOINT_URL": aws_env}
    runtime = ZipRuntime(
        zip_path, "aws_lambda.handler.lambda_handler", tmp_path, env, fail_writes=fail
    )
    event = {
        "Records": [
            {"messageId": "m1", "body": '{"id": "fine", "data": {"num1": 1, "num2": 2}}'},
            {"messageId": "m2", "body": '{"id": "doomed", "data": {"num1": 1, "num2": 1}}'},
        ]
    }
    try:
        assert runtime.code_dir in runtime.core_file.parents  # the zip's code, not the repo's
        # WHEN a batch with a matching task is invoked / THEN only that record fails
        assert runtime.invoke(event) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
        # WHEN the file is removed and the batch comes again / THEN every write succeeds
        fail.unlink()
        assert runtime.invoke(event) == {"batchItemFailures": []}
    finally:
        runtime.close()
    body = s3.get_object(Bucket=bucket, Key="results/doomed.out")["Body"].read()
    assert body == b"2"


class FakeMapping:
    """An event source mapping whose queue stays empty, or whose server is gone."""

    def __init__(self, error: Exception | None = None) -> None:
        self.stats = MappingStats()
        self.error = error
        self.polls = 0

    def poll_once(self) -> int:
        self.polls += 1
        if self.error is not None:
            raise self.error
        return 0

    def queue_is_empty(self) -> bool:
        return True


def test_the_sandbox_stops_by_itself_after_the_idle_time_it_was_given(tmp_path: Path) -> None:
    # GIVEN a sandbox whose queue stays empty / WHEN it serves with --exit-after-idle 0.3
    sandbox = Sandbox(tmp_path, "http://127.0.0.1:1", keep=False)
    mapping = FakeMapping()
    code = sandbox.serve(mapping, exit_after_idle=0.3)  # type: ignore[arg-type]
    # THEN it stops with exit code 0 after polling more than once
    assert code == 0
    assert mapping.polls >= 2


def test_the_sandbox_exits_1_in_one_line_when_its_server_goes_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from botocore.exceptions import EndpointConnectionError

    # GIVEN a mapping whose server no longer answers / WHEN the sandbox serves
    sandbox = Sandbox(tmp_path, "http://127.0.0.1:1", keep=False)
    gone = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
    code = sandbox.serve(FakeMapping(gone), exit_after_idle=None)  # type: ignore[arg-type]
    # THEN it exits 1 with one line naming the cause
    assert code == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "the moto server stopped answering" in out


def test_the_sandbox_command_is_registered_without_importing_an_sdk() -> None:
    # GIVEN a fresh interpreter / WHEN it builds the parser and prints `adder sandbox aws --help`
    script = (
        "import sys, contextlib, io\n"
        "from core.cli import build_parser\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    build_parser().parse_args(['sandbox', 'aws', '--help'])\n"
        "sdks = sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'moto'})\n"
        "print(sdks, 'adder sandbox aws' in out.getvalue())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    # THEN the command is there and no SDK was imported
    assert done.stdout.strip() == "[] True"
