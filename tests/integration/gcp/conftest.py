"""Real local servers for the Google Cloud edge: gcp-storage-emulator and functions-framework.

The emulator runs in memory on a free loopback port for the whole session. The function runs
in the real functions-framework server (gunicorn), started from the *deployment zip* built
by ``adder package gcp`` and unpacked: ``main.py`` at its root, as Cloud Build sees it. Both
are subprocesses (``tests.support.servers.running_server``), stopped at the end. A missing
tool skips the tests, or fails them in CI.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core.clouds import CLOUDS
from core.packaging import build_package
from tests.support import tools
from tests.support.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator

RESULTS_PREFIX = "results/run-1"
FUNCTION_BUCKET = "adder-results"
MISSING_BUCKET = "adder-no-such-bucket"


def tool(name: str) -> str | None:
    """A console script installed next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an in-memory gcp-storage-emulator."""
    executable = tool("gcp-storage-emulator")
    tools.require(executable is not None, "gcp-storage-emulator is not installed")
    assert executable is not None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    with running_server(command, f"{url}/storage/v1/b", log=log):
        yield url


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: str) -> Any:
    """A real ``google.cloud.storage.Client`` talking to the emulator (anonymous)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    return storage.Client(
        project="test-project",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_emulator},
    )


@pytest.fixture
def new_bucket(gcs_client: Any) -> Any:
    """A fresh, empty bucket for one test."""
    return gcs_client.create_bucket(f"test-{uuid.uuid4().hex[:20]}")


@pytest.fixture(scope="session")
def function_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployment zip (``adder package gcp``), unpacked: what Cloud Build receives."""
    work = tmp_path_factory.mktemp("gcp-function")
    archive = build_package(CLOUDS["gcp"], work / "gcp_function.zip")
    source = work / "source"
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(source)
    return source


@dataclass
class FunctionServer:
    """A running functions-framework server and the file its stdout and stderr go to."""

    url: str
    log: Path
    bucket: str
    prefix: str

    def log_entries(self) -> list[dict[str, Any]]:
        """Every JSON object the function printed so far (other lines are skipped)."""
        entries = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    def entry_for(self, message_id: str) -> dict[str, Any]:
        """The one log entry of ``message_id`` (waiting briefly for stdout to be flushed)."""
        return self.entry_where("message_id", message_id)

    def entry_where(self, key: str, value: object) -> dict[str, Any]:
        """The one log entry whose ``key`` is ``value`` (waiting briefly for it)."""
        deadline = time.monotonic() + 5
        while True:
            found = [e for e in self.log_entries() if e.get(key) == value]
            if found or time.monotonic() > deadline:
                assert len(found) == 1, f"expected one log entry with {key}={value!r}: {found}"
                return found[0]
            time.sleep(0.05)

    def log_size(self) -> int:
        """Bytes of output so far: pass to :meth:`lines_since` to see what a request added."""
        return self.log.stat().st_size

    def lines_since(self, offset: int) -> list[str]:
        """The non-empty lines of stdout and stderr written after ``offset``."""
        with self.log.open("rb") as output:
            output.seek(offset)
            text = output.read().decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()]


@contextmanager
def function_running(
    source: Path, emulator: str, bucket: str, prefix: str, log: Path
) -> Iterator[FunctionServer]:
    """The real functions-framework server (gunicorn) serving ``source/main.py``."""
    tools.require(
        importlib.util.find_spec("functions_framework") is not None,
        "functions-framework is not installed",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # `python -m` from the unpacked zip puts it first on sys.path: `core` and
    # `gcp_function` are the zip's copies, as on Cloud Run.
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--source",
        "main.py",
        "--target",
        "process_task",
        "--signature-type",
        "cloudevent",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {
        "STORAGE_EMULATOR_HOST": emulator,
        "RESULTS_BUCKET": bucket,
        "RESULTS_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
        "WORKERS": "1",
        "THREADS": "4",
    }
    with running_server(command, url, env=env, cwd=source, log=log):
        yield FunctionServer(url, log, bucket, prefix)


@pytest.fixture(scope="session")
def function_server(
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FunctionServer]:
    """The function, writing to ``adder-results`` under ``results/run-1``."""
    gcs_client.create_bucket(FUNCTION_BUCKET)
    log = tmp_path_factory.mktemp("function") / "stdout.log"
    with function_running(
        function_source, gcs_emulator, FUNCTION_BUCKET, RESULTS_PREFIX, log
    ) as server:
        yield server


@pytest.fixture(scope="session")
def broken_function_server(
    gcs_emulator: str, function_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionServer]:
    """The same function configured with a bucket that does not exist (every write fails)."""
    log = tmp_path_factory.mktemp("function-broken") / "stdout.log"
    with function_running(
        function_source, gcs_emulator, MISSING_BUCKET, RESULTS_PREFIX, log
    ) as server:
        yield server
