"""Real local servers for the Google Cloud edge: gcp-storage-emulator, the Pub/Sub emulator
and functions-framework.

The emulators run in memory on free loopback ports for the whole session: the storage one
from pip, the Pub/Sub one from the gcloud SDK (``gcloud beta emulators pubsub start``, Java).
The function runs in the real functions-framework server (gunicorn), started from the
*deployment zip* built by ``adder package gcp`` and unpacked: ``main.py`` at its root, as
Cloud Build sees it. All are subprocesses (``tools.servers.running_server``),
stopped at the end. A missing tool skips the tests, or fails them in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator

PROJECT = "test-project"
RESULTS_PREFIX = "results/run-1"
FUNCTION_BUCKET = "adder-results"
MISSING_BUCKET = "adder-no-such-bucket"


def tool(name: str) -> str | None:
    """A console script installed next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


@contextmanager
def storage_emulator(workdir: Path) -> Iterator[str]:
    """Run an in-memory gcp-storage-emulator; its ``http://127.0.0.1:<port>``."""
    executable = tool("gcp-storage-emulator")
    tools.require(executable is not None, "gcp-storage-emulator is not installed")
    assert executable is not None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    with running_server(command, f"{url}/storage/v1/b", log=workdir / "emulator.log"):
        yield url


def storage_client(emulator: str) -> Any:
    """A real ``google.cloud.storage.Client`` talking to ``emulator`` (anonymous)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    return storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": emulator},
    )


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of an in-memory gcp-storage-emulator."""
    with storage_emulator(tmp_path_factory.mktemp("gcs-emulator")) as url:
        yield url


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: str) -> Any:
    """A real ``google.cloud.storage.Client`` talking to the emulator (anonymous)."""
    return storage_client(gcs_emulator)


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


def pubsub_emulator_installed() -> bool:
    """True when gcloud, its Pub/Sub emulator component and Java are all here."""
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        return False
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent
    return (sdk_root / "platform" / "pubsub-emulator").is_dir()


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of the real Pub/Sub emulator, for the whole session.

    gcloud starts a Java server as its child: both are in the server's own process group,
    which is stopped as a whole. gcloud's configuration goes to a temporary directory (never
    the user's), and ``--quiet`` keeps it from ever prompting.
    """
    tools.require(
        pubsub_emulator_installed(),
        "the Pub/Sub emulator is not installed (gcloud, google-cloud-cli-pubsub-emulator, Java)",
    )
    gcloud = shutil.which("gcloud")
    assert gcloud is not None
    port = free_port()
    work = tmp_path_factory.mktemp("pubsub-emulator")
    (work / "data").mkdir()
    command = [
        gcloud,
        "--quiet",
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port=127.0.0.1:{port}",
        f"--project={PROJECT}",
        f"--data-dir={work / 'data'}",
    ]
    env = {"CLOUDSDK_CONFIG": str(work / "gcloud-config"), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    with running_server(command, f"http://127.0.0.1:{port}/", env=env, log=work / "emulator.log"):
        yield f"127.0.0.1:{port}"


@dataclass
class PubsubAdmin:
    """Clients of the Pub/Sub emulator for setting up and inspecting topics in tests."""

    host: str
    publisher: Any
    subscriber: Any

    def topic(self, name: str) -> str:
        """Create ``projects/test-project/topics/<name>``; its path."""
        path = f"projects/{PROJECT}/topics/{name}"
        self.publisher.create_topic(name=path)
        return path

    def subscription(
        self,
        name: str,
        topic: str,
        *,
        push_endpoint: str | None = None,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
    ) -> str:
        """Create a pull (or push) subscription, with a dead-letter policy if asked; its path."""
        path = f"projects/{PROJECT}/subscriptions/{name}"
        request: dict[str, Any] = {"name": path, "topic": topic, "ack_deadline_seconds": 10}
        if push_endpoint is not None:
            request["push_config"] = {"push_endpoint": push_endpoint}
        if dead_letter_topic is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": dead_letter_topic,
                "max_delivery_attempts": max_delivery_attempts,
            }
            request["retry_policy"] = {
                "minimum_backoff": {"nanos": 100_000_000},
                "maximum_backoff": {"seconds": 1},
            }
        self.subscriber.create_subscription(request=request)
        return path

    def publish(self, topic: str, *bodies: bytes) -> None:
        """Publish ``bodies`` and wait until the emulator has them."""
        for future in [self.publisher.publish(topic, body) for body in bodies]:
            future.result(timeout=30)

    def pull(self, subscription: str, *, ack: bool = True, max_messages: int = 1000) -> list[bytes]:
        """One pull's message bodies (acknowledged unless ``ack`` is False). The emulator holds
        an empty pull open until a second before its deadline: a 1 s deadline answers at once."""
        from google.api_core.exceptions import DeadlineExceeded

        request = {"subscription": subscription, "max_messages": max_messages}
        try:
            response = self.subscriber.pull(request=request, timeout=1.0, retry=None)
        except DeadlineExceeded:
            return []
        ack_ids = [received.ack_id for received in response.received_messages]
        if ack and ack_ids:
            self.subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
        return [bytes(received.message.data) for received in response.received_messages]

    def drain(self, subscription: str, seconds: float = 5.0) -> list[bytes]:
        """Every body on ``subscription`` (acknowledged), waiting up to ``seconds`` for the first
        and stopping at the first empty pull after that."""
        bodies: list[bytes] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pulled = self.pull(subscription)
            bodies += pulled
            if bodies and not pulled:
                break
            if not pulled:
                time.sleep(0.1)
        return bodies


@pytest.fixture(scope="session")
def pubsub_admin(pubsub_emulator: str) -> Iterator[PubsubAdmin]:
    """Publisher and subscriber clients of the emulator (made with ``PUBSUB_EMULATOR_HOST``
    set only while they are built: it does not leak into other tests)."""
    from google.cloud import pubsub_v1

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
        admin = PubsubAdmin(
            pubsub_emulator, pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        )
    try:
        yield admin
    finally:
        admin.publisher.stop()
        admin.subscriber.close()


@pytest.fixture
def emulator_env(
    pubsub_emulator: str, gcs_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """``PUBSUB_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST`` set for one test (and its
    subprocesses, via the returned mapping), with no project or credentials leaking in."""
    env = {"PUBSUB_EMULATOR_HOST": pubsub_emulator, "STORAGE_EMULATOR_HOST": gcs_emulator}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    return env


def unique(stem: str) -> str:
    """A fresh resource name (topics, subscriptions, buckets)."""
    return f"{stem}-{uuid.uuid4().hex[:12]}"
