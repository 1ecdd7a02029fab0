"""Azurite (the Blob emulator, installed from npm into tests/azurite) for the Azure tests.

``npm ci --prefix tests/azurite --no-audit --no-fund`` installs it. Without it these tests are
skipped, except under ``CI=true``, where a missing emulator is a failure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT
from tests.support import tools
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from azure.storage.blob import BlobServiceClient, ContainerClient

AZURITE_DIR = REPO_ROOT / "tests" / "azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
INSTALL = "npm ci --prefix tests/azurite --no-audit --no-fund"

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT_SECONDS = 60.0


def connection_string(port: int) -> str:
    """The Azurite connection string for a blob endpoint on ``port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    """One azurite-blob process on a loopback port, in-memory."""

    port: int
    process: subprocess.Popen[bytes]
    stopped: bool = field(default=False)

    @property
    def connection_string(self) -> str:
        """Connection string for the emulator's well-known account."""
        return connection_string(self.port)

    def service(self) -> BlobServiceClient:
        """A client for the emulator (no retries: a failure shows at once)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, retry_total=0)

    def stop(self) -> None:
        """Stop the process (and so close its port)."""
        if self.stopped:
            return
        self.stopped = True
        self.process.terminate()
        try:
            # Azurite waits for idle keep-alive connections before it exits; it holds nothing
            # worth waiting for (in-memory), so it is killed after a short grace period.
            self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def azurite_missing_reason() -> str | None:
    """Why Azurite cannot be started here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Azurite runs on Node.js)"
    if not AZURITE_BIN.exists():
        return f"Azurite is not installed: run `{INSTALL}`"
    return None


def require_azurite() -> None:
    """Skip the test without Azurite; fail instead when CI=true."""
    reason = azurite_missing_reason()
    tools.require(reason is None, reason or "")


def start_azurite(attempts: int = 3) -> Azurite:
    """Start azurite-blob on a free loopback port and wait until it answers HTTP."""
    last_error = ""
    for _ in range(attempts):
        port = free_port()
        process = subprocess.Popen(
            [
                str(AZURITE_BIN),
                "--blobHost", "127.0.0.1",
                "--blobPort", str(port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--silent",
            ],
            cwd=AZURITE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        if _wait_until_answering(port, process):
            return Azurite(port, process)
        process.kill()
        _, stderr = process.communicate(timeout=10)
        last_error = stderr.decode(errors="replace").strip()[-2000:]
    raise RuntimeError(f"Azurite did not start: {last_error}")


def _wait_until_answering(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    request = b"GET /devstoreaccount1?comp=list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(request)
                if conn.recv(12).startswith(b"HTTP/1.1"):
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _running_azurite() -> Iterator[Azurite]:
    require_azurite()
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """The session's Azurite, stopped at the end."""
    yield from _running_azurite()


@pytest.fixture
def private_azurite() -> Iterator[Azurite]:
    """An Azurite of this test's own, which the test may stop."""
    yield from _running_azurite()


@pytest.fixture
def container(azurite: Azurite) -> Iterator[ContainerClient]:
    """A new, empty container, deleted after the test."""
    client = azurite.service().create_container(f"test-{uuid.uuid4().hex[:16]}")
    try:
        yield client
    finally:
        client.delete_container()
