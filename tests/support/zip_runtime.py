"""Run a deployment zip's handler in a separate interpreter that sees only the zip (plus
boto3, which the Lambda runtime provides): a local stand-in for the Lambda runtime loop.

The child is started with ``python -S`` (no site-packages, so no editable install of this
repository) and ``PYTHONPATH=<unzipped deployment>:<boto3's directory>``; it reads one JSON
request per line from stdin (``{"event": ..., "remaining_ms": ...}``) and answers one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

_LOOP = r"""
import importlib, json, sys, time
module_name, function_name = sys.argv[1].rsplit(".", 1)
handler = getattr(importlib.import_module(module_name), function_name)
print(json.dumps({"ready": True, "core_file": sys.modules["core"].__file__}), flush=True)

class Context:
    def __init__(self, remaining_ms):
        self._deadline = time.monotonic() + remaining_ms / 1000
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

for line in sys.stdin:
    request = json.loads(line)
    try:
        answer = {"response": handler(request["event"], Context(request["remaining_ms"]))}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
"""


class InvocationError(RuntimeError):
    """The handler raised: Lambda would count the whole invocation as failed."""


class ZipRuntime:
    """One long-lived interpreter serving invocations of ``handler`` from ``zip_path``."""

    def __init__(self, zip_path: Path, handler: str, work_dir: Path, env: dict[str, str]) -> None:
        import boto3

        code_dir = work_dir / "task"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(code_dir)
        sdk_dir = Path(boto3.__file__).resolve().parent.parent
        child_env = {**os.environ, **env, "PYTHONPATH": f"{code_dir}{os.pathsep}{sdk_dir}"}
        self.code_dir = code_dir
        self._process = subprocess.Popen(
            [sys.executable, "-S", "-c", _LOOP, handler],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env,
            cwd=work_dir,
        )
        self._lock = threading.Lock()
        hello = json.loads(self._readline())
        self.core_file = Path(hello["core_file"])

    def _readline(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"zip runtime exited with code {self._process.wait()}")
        return line

    def invoke(self, event: Any, remaining_ms: int = 30_000) -> Any:
        """Call the handler with ``event``; raise InvocationError if it raised."""
        with self._lock:  # one invocation at a time, like one Lambda execution environment
            assert self._process.stdin is not None
            self._process.stdin.write(
                json.dumps({"event": event, "remaining_ms": remaining_ms}) + "\n"
            )
            self._process.stdin.flush()
            answer = json.loads(self._readline())
        if "error" in answer:
            raise InvocationError(answer["error"])
        return answer["response"]

    def close(self) -> None:
        """Stop the interpreter."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
