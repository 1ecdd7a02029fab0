"""Run a deployment zip's handler in its own interpreter, which sees only the zip (plus boto3,
which the Lambda runtime provides): a local stand-in for one Lambda execution environment.

The child is started with ``python -S`` (no site-packages, so not this repository's installed
code) and ``PYTHONPATH=<unzipped deployment>:<boto3's directory>``; it reads one JSON request
per line on stdin (``{"event": ..., "remaining_ms": ...}``) and answers one JSON line on
stdout. Its own output (the function's JSON log lines) goes to ``stderr``, a file if given.

While the file ``fail_writes`` names exists and holds a regular expression, the function's
S3 writes of keys it matches fail with S3's 500 InternalError (injected at botocore's
``before-send`` seam of the function's client), so retries, the dead-letter queue and a
redrive can be seen locally. In the packed layout a pack's write fails when one of the
per-task keys it stands for (``{prefix}/{id}.out``, ...) matches: its whole batch is retried.
Delete the file and the writes succeed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import IO, Any

HOST_FILE_NAME = "function_host.py"
"""The loop below, written next to the unzipped code and run by path (readable in ``ps``)."""

_LOOP = r"""# Written by aws_lambda/sandbox/runtime.py: serves one handler, one JSON line per call.
import importlib, json, os, re, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sandbox stops this process, in order
module_name, function_name = sys.argv[1].rsplit(".", 1)
fail_file = sys.argv[2] if len(sys.argv) > 2 else ""
module = importlib.import_module(module_name)
handler = getattr(module, function_name)

def keys_written(key, request):
    # the key, or for a pack (RESULTS_LAYOUT=packed) the per-task keys it stands for
    prefix, packed, _ = key.rpartition("packed/")
    if not packed or not key.endswith(".jsonl"):
        return [key]
    from core.packing import unpack
    body = request.body
    data = body.getvalue() if hasattr(body, "getvalue") else body
    try:
        return [prefix + record.file_name for record in unpack(bytes(data or b""))]
    except ValueError:
        return [key]

def fail_matching_writes(request, **_):
    try:
        with open(fail_file, encoding="utf-8") as file:
            pattern = file.read().strip()
    except OSError:
        return None
    from urllib.parse import unquote, urlsplit
    key = unquote(urlsplit(request.url).path.lstrip("/").partition("/")[2])
    try:
        if not pattern or not any(re.search(pattern, name) for name in keys_written(key, request)):
            return None
    except re.error:
        return None
    from botocore.awsrequest import AWSResponse
    from botocore.compat import HTTPHeaders
    class Body:
        def stream(self, **_):
            yield b"<Error><Code>InternalError</Code><Message>fail-writes</Message></Error>"
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/xml"
    return AWSResponse(request.url, 500, headers, Body())

if fail_file and hasattr(module, "default_store") and os.environ.get("RESULTS_BUCKET"):
    store = module.default_store()
    store.client.meta.events.register("before-send.s3.PutObject", fail_matching_writes)
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


class RuntimeExitedError(RuntimeError):
    """The function's interpreter is gone (it crashed or was killed)."""


class ZipRuntime:
    """One long-lived interpreter serving invocations of ``handler`` from ``zip_path``."""

    def __init__(
        self,
        zip_path: Path,
        handler: str,
        work_dir: Path,
        env: dict[str, str],
        *,
        stderr: IO[bytes] | int | None = None,
        fail_writes: Path | None = None,
    ) -> None:
        import boto3

        code_dir = (work_dir / "task").resolve()
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(code_dir)
        sdk_dir = Path(boto3.__file__).resolve().parent.parent
        child_env = {**os.environ, **env, "PYTHONPATH": f"{code_dir}{os.pathsep}{sdk_dir}"}
        self.code_dir = code_dir
        extra = [str(fail_writes.resolve())] if fail_writes is not None else []
        host = work_dir / HOST_FILE_NAME
        host.write_text(_LOOP, encoding="utf-8")
        self._process = subprocess.Popen(
            [sys.executable, "-S", str(host.resolve()), handler, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=child_env,
            cwd=work_dir,
        )
        self._lock = threading.Lock()
        hello = json.loads(self._readline())
        self.core_file = Path(hello["core_file"])

    @property
    def pid(self) -> int:
        """The interpreter's process id."""
        return self._process.pid

    def _readline(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeExitedError(
                f"the function's interpreter exited with code {self._process.wait()}"
            )
        return line

    def invoke(self, event: Any, remaining_ms: int = 30_000) -> Any:
        """Call the handler with ``event``; raise InvocationError if it raised."""
        with self._lock:  # one invocation at a time, like one Lambda execution environment
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(
                    json.dumps({"event": event, "remaining_ms": remaining_ms}) + "\n"
                )
                self._process.stdin.flush()
            except OSError as exc:  # a broken pipe: the interpreter is gone
                raise RuntimeExitedError(f"the function's interpreter is gone: {exc}") from exc
            answer = json.loads(self._readline())
        if "error" in answer:
            raise InvocationError(answer["error"])
        return answer["response"]

    def close(self) -> None:
        """Stop the interpreter (it ends when its stdin closes)."""
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
