"""The Azure job backend and ``adder submit|watch|fetch|redrive|status azure``.

Results run on Azurite (the real Blob API). No Service Bus emulator exists on this machine:
the queue side runs on ``tests/support/azure_service_bus.py``'s double (real SDK batches,
received messages and administration client; in-memory links), which that module's doc
says exactly what it does not exercise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from azure_function import jobs
from azure_function.blob_store import BlobResultStore
from azure_function.job_backend import AzureJobBackend, ServiceBusParts
from azure_function.job_errors import LOGIN
from azure_function.jobs import container_client
from core.cli import main
from core.pipeline import process_message
from tests.conftest import REPO_ROOT
from tests.integration.azure.conftest import connection_string
from tests.job_backend_contract import JobBackendContract, PlantDeadLetter, PlantRecord, Queued
from tests.support.azure_service_bus import CONNECTION_STRING, NAMESPACE, FakeServiceBus
from tests.support.terraform_state import require_terraform, write_state
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

PREFIX = "jobs/run-1"
NO_CREDENTIALS_SECONDS = 15
NAMESPACE_HOST = "sb-adder-1a2b3c.servicebus.windows.net"


@pytest.fixture
def bus() -> FakeServiceBus:
    """An empty queue and dead-letter sub-queue (the double)."""
    return FakeServiceBus()


class TestAzureJobBackend(JobBackendContract):
    """The shared contract: the queue on the double, the results on Azurite."""

    @pytest.fixture
    def backend(
        self, bus: FakeServiceBus, azurite: Azurite, container: ContainerClient
    ) -> Iterator[AzureJobBackend]:
        client = container_client(
            container.container_name, connection_string=azurite.connection_string
        )
        backend = AzureJobBackend(bus.parts(), client, PREFIX)
        yield backend
        backend.close()

    @pytest.fixture
    def queued(self, bus: FakeServiceBus) -> Queued:
        return bus.take_queued

    @pytest.fixture
    def plant_record(self, container: ContainerClient) -> PlantRecord:
        def plant(file_name: str, data: bytes) -> None:
            container.upload_blob(f"{PREFIX}/{file_name}", data, overwrite=True)

        return plant

    @pytest.fixture
    def plant_dead_letter(self, bus: FakeServiceBus) -> PlantDeadLetter:
        return bus.dead_letter

    @pytest.fixture
    def missing_backend(self, azurite: Azurite) -> Iterator[AzureJobBackend]:
        gone = FakeServiceBus(exists=False)
        client = container_client("no-such-container", connection_string=azurite.connection_string)
        backend = AzureJobBackend(gone.parts(), client, PREFIX)
        yield backend
        backend.close()


def test_records_outside_the_prefix_are_not_listed(
    bus: FakeServiceBus, azurite: Azurite, container: ContainerClient
) -> None:
    # GIVEN records under the prefix, a nested one, a neighbour prefix, and other names
    for name in (f"{PREFIX}/a.out", f"{PREFIX}/x/b.out", "jobs/run-10/c.out", f"{PREFIX}/d.tmp"):
        container.upload_blob(name, b"1")
    client = container_client(container.container_name, connection_string=azurite.connection_string)
    backend = AzureJobBackend(bus.parts(), client, PREFIX)
    # WHEN they are listed / THEN only the direct record of the prefix is, with its MD5
    (record,) = backend.list_records()
    assert (record.key, record.size) == (f"{PREFIX}/a.out", 1)
    assert record.md5 == "c4ca4238a0b923820dcc509a6f75849b"  # md5(b"1")
    assert backend.results_label == f"{client.url}/{PREFIX}/"


# --- the commands, through core.cli.main ------------------------------------------------------

TASKS = [
    b'{"id": "t-1", "data": {"num1": 42, "num2": 58}}',
    b'{"id": "t-2", "data": {"num1": 0.1, "num2": 0.2}}',
    '{"id": "t\u00e2che-\u6570", "data": {"num1": 1e3, "num2": -1.5}}'.encode(),
    b'{"id": "t-4", "data": {"num1": true, "num2": 1}}',
    b"not json at all",
]


@pytest.fixture
def use_bus(bus: FakeServiceBus, monkeypatch: pytest.MonkeyPatch) -> FakeServiceBus:
    """Every backend the commands open talks to ``bus`` for Service Bus."""

    def parts(queue: str, **kwargs: object) -> ServiceBusParts:
        assert queue == bus.queue_name
        return bus.parts(admin=bool(kwargs.get("admin")))

    monkeypatch.setattr(jobs, "service_bus_parts", parts)
    monkeypatch.setenv("SERVICEBUS_CONNECTION_STRING", CONNECTION_STRING)
    return bus


def test_submit_from_the_stack_then_watch_fetch_give_the_local_runners_files(
    use_bus: FakeServiceBus,
    azurite: Azurite,
    container: ContainerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a tasks file with good and bad tasks, submitted to the queue with the settings read
    # from the stack's outputs (the real terraform reading a state file named as
    # infra/azure/outputs.tf names them; the connection strings come from the environment)
    require_terraform()
    stack = write_state(
        tmp_path / "stack",
        {
            "servicebus_namespace": NAMESPACE,
            "queue_name": "tasks",
            "results_container": container.container_name,
            "results_prefix": PREFIX,
        },
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"\n".join(TASKS) + b"\n")
    monkeypatch.setenv("RESULTS_BLOB_CONNECTION_STRING", azurite.connection_string)
    jobs_dir = str(tmp_path / "jobs")
    code = main(["submit", "azure", "--stack", str(stack), "--jobs-dir", jobs_dir,
                 "--no-progress", str(tasks)])  # fmt: skip
    assert code == 0
    assert f"sent 5 tasks to Service Bus queue tasks on {NAMESPACE}" in capsys.readouterr().out
    # AND the function's pipeline handled each message into the real Blob store
    store = BlobResultStore(
        container.container_name, PREFIX, connection_string=azurite.connection_string
    )
    for body in use_bus.take_queued():
        process_message(body, store)
    # WHEN the job is watched (settings from its manifest, secrets from the environment)
    code = main(["watch", "azure", "--jobs-dir", jobs_dir, "--interval", "0.1", "--timeout",
                 "10", "--no-progress"])  # fmt: skip
    # THEN it is finished, with the failures counted
    out = capsys.readouterr().out
    assert code == 1
    assert "job tasks finished with failures: 3 succeeded, 2 rejected, 0 dead-lettered" in out
    # WHEN the results are fetched, and the same tasks run locally
    fetched, local = tmp_path / "fetched", tmp_path / "local"
    assert main(["fetch", "azure", "--job", "tasks", "--jobs-dir", jobs_dir,
                 "--into", str(fetched), "--no-progress"]) == 0  # fmt: skip
    assert "fetched 3 .out and 2 .err" in capsys.readouterr().out
    main(["run", "--tasks", str(tasks), "--results-dir", str(local), "--no-progress"])
    # THEN both directories hold the same files, byte for byte
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in local.iterdir())
    for path in local.iterdir():
        assert (fetched / path.name).read_bytes() == path.read_bytes(), path.name
    assert len(list(local.iterdir())) == 5


def test_status_prints_queue_dead_letters_and_results(
    use_bus: FakeServiceBus,
    azurite: Azurite,
    container: ContainerClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN 2 queued messages, 1 dead letter, and 2 results and 1 error record under the prefix
    use_bus.queued += [("m1", b"{}"), ("m2", b"{}")]
    use_bus.dead_letter(b"{}")
    for name in ("a.out", "b.out", "c.err"):
        container.upload_blob(f"{PREFIX}/{name}", b"1")
    # WHEN status runs
    where = ["--container", container.container_name, "--prefix", PREFIX]
    code = main(["status", "azure", "--queue", "tasks", *where,
                 "--blob-connection-string", azurite.connection_string])  # fmt: skip
    # THEN it prints the counts the administration client read, and the listing's
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("task queue:   2 waiting, unknown in flight (Service Bus queue tasks")
    assert out[1] == "dead letters: 1"
    assert out[2].startswith("results:      2 .out, 1 .err in http://127.0.0.1:")
    assert use_bus.admin_requests


def test_status_without_manage_rights_says_unknown_once(
    use_bus: FakeServiceBus,
    azurite: Azurite,
    container: ContainerClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN an identity that may send and listen but not manage
    use_bus.manage_allowed = False
    # WHEN status runs
    code = main(["status", "azure", "--queue", "tasks", "--container", container.container_name,
                 "--blob-connection-string", azurite.connection_string])  # fmt: skip
    # THEN the counts are unknown, the results still counted, and the reason said once
    captured = capsys.readouterr()
    assert code == 0
    assert "unknown waiting" in captured.out
    assert "dead letters: unknown" in captured.out
    assert captured.err.count("need Manage rights") == 1
    assert len(use_bus.admin_requests) == 1


def test_redrive_moves_dead_letters_back_onto_the_queue(
    use_bus: FakeServiceBus, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN three dead letters and one too large for any message
    bodies = [b'{"id": "d-%d", "data": {"num1": 1, "num2": 2}}' % i for i in range(3)]
    for body in bodies:
        use_bus.dead_letter(body)
    huge = b'{"id": "huge", "pad": "' + b"x" * use_bus.max_message_size + b'"}'
    use_bus.dead_letter(huge)
    # WHEN redrive runs
    code = main(["redrive", "azure", "--queue", "tasks", "--no-progress"])
    # THEN the three are on the task queue, byte for byte, with new message ids
    assert sorted(use_bus.take_queued()) == sorted(bodies)
    # AND the large one is back in the dead-letter queue (released, not lost), and exit 1
    assert [body for _, body in use_bus.dead] == [huge]
    assert use_bus.locked == {}
    out = capsys.readouterr()
    assert code == 1
    assert "moved 3 dead-lettered tasks back onto Service Bus queue tasks" in out.out
    assert "refused by the queue, left in the dead-letter queue" in out.out


# --- one-line errors -------------------------------------------------------------------------


def test_no_credentials_is_one_line_within_seconds(tmp_path: Path) -> None:
    # GIVEN an environment with no Azure credentials at all (no az, no variables, no identity)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    started = time.monotonic()
    # WHEN a command needs Entra ID (the real DefaultAzureCredential, as built by the backend)
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "status", "azure", "--namespace", "sb-adder-1a2b3c",
         "--queue", "tasks", "--account-url", "https://adder.blob.core.windows.net/",
         "--container", "results"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    # THEN it fails at once, with exit 2 and one line naming the fixes, no credential report
    assert seconds < NO_CREDENTIALS_SECONDS
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: no usable credentials for Service Bus namespace {NAMESPACE_HOST}: {LOGIN}"
    ]
    assert "az login" in done.stderr


def test_a_missing_container_is_one_line(
    azurite: Azurite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a container name that does not exist / WHEN results are fetched from it
    into = str(tmp_path / "out")
    code = main(["fetch", "azure", "--container", "no-such-container", "--into", into,
                 "--blob-connection-string", azurite.connection_string])  # fmt: skip
    # THEN one line says so and names the setting, exit 2
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: container 'no-such-container' at http://127.0.0.1:")
    assert "does not exist" in err
    assert err.endswith(": check --container and --account-url (or --blob-connection-string)\n")


def test_an_unreachable_account_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a storage endpoint on a closed port
    closed = connection_string(free_port())
    # WHEN status lists the results there
    code = main(["status", "azure", "--container", "results", "--blob-connection-string", closed])
    # THEN one line says the account cannot be reached, exit 2
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: cannot reach container 'results' at http://127.0.0.1:")
    assert "Connection refused" in err
    assert err.endswith(": check --container and --account-url (or --blob-connection-string), "
                        "and the network\n")  # fmt: skip


def test_results_only_commands_need_no_queue(
    azurite: Azurite, container: ContainerClient, tmp_path: Path
) -> None:
    # GIVEN results but no Service Bus settings anywhere
    container.upload_blob("r.out", b"3")
    env = {k: v for k, v in os.environ.items() if "SERVICEBUS" not in k and "QUEUE" not in k}
    # WHEN fetch runs with only the results' settings / THEN it fetches
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", "fetch", "azure", "--container",
         container.container_name, "--into", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={**env, "RESULTS_BLOB_CONNECTION_STRING": azurite.connection_string,
             "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "r.out").read_bytes() == b"3"
    assert json.dumps(done.stderr) == '""'
