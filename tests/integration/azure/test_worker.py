"""``adder work`` on Azure: Service Bus -> the worker -> Blob Storage on Azurite.

Service Bus has no emulator here: the queue is the in-memory broker of
tests/support/azure_service_bus_receiver.py, reached through the real ``ServiceBusClient`` and
``ServiceBusReceiver`` down to their AMQP receive client, with its lock expiry, abandon,
delivery count and dead-lettering (what it cannot prove is listed there: the broker's real
lock timing, the AMQP link on the wire, authorization). The results go to a real Azurite
through the worker's own ``open_worker`` (the function's BlobResultStore).

- 2,000 tasks (``$ADDER_AZURE_WORKER_MESSAGES``) drained: 0 lost, 0 wrong, checked in Azurite;
- the packed layout (``config.results_layout = "packed"``): only packs, one per receive
  call, and ``adder fetch azure`` turns them into every task's exact record;
- Blob faults (a fault proxy before Azurite): a failed write is abandoned, delivered again, and
  dead-lettered at the queue's max delivery count; blips are absorbed by the SDK's retry;
- a worker "killed" mid-run (its link and store hang, nothing settled): its locks expire and a
  second worker completes everything;
- a Scheduled Events ``Preempt`` served mid-run by a loopback metadata server: no receive after
  it, the tasks in hand finished and completed, the event approved (StartRequests); and
  ``adder work`` itself (the adapter registered for ``provider: azure``) exits 0 on it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from azure_function import servicebus_receiver
from azure_function.blob_store import default_retry
from azure_function.servicebus_receiver import MAX_BATCH, open_worker
from core.cli import main as adder
from core.errors import StoreWriteError
from core.packing import unpack
from core.ports import ResultStore
from core.worker import command
from core.worker.command import load_worker_config
from core.worker.logs import JsonLines
from core.worker.loop import StopReason, Worker, WorkerOptions
from core.worker.notices import AzureNoticePoller
from tests.integration.azure.conftest import ACCOUNT, connection_string
from tests.support.azure_service_bus_receiver import CONNECTION_STRING, FakeQueue, install
from tests.support.metadata_server import MetadataServer
from tests.support.worker import (
    HeldStore,
    Task,
    assert_fetched_exactly,
    run_to_notice,
    wait_until,
    workload,
)
from tools.fault_proxy import FaultProxy, FaultRule

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence, Set
    from pathlib import Path

    from azure.storage.blob import ContainerClient

    from core.worker.command import WorkerConfig
    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

MESSAGES_ENV = "ADDER_AZURE_WORKER_MESSAGES"
DEFAULT_MESSAGES = 2_000
WAIT = 120.0
"""The longest an event wait may take before the test fails (never reached when it works)."""
PREFIX = "out"
EVENT_ID = "602d9444-d2cd-49c7-8624-8643e7171297"
"""The Scheduled Event the loopback metadata server serves."""
NO_WAITS = {"initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0}


def worker_messages() -> int:
    value = os.environ.get(MESSAGES_ENV, "")
    return int(value) if value.strip().isdigit() else DEFAULT_MESSAGES


def records(container: ContainerClient) -> dict[str, bytes]:
    """Every record under the prefix, with its bytes."""
    names = list(container.list_blob_names(name_starts_with=f"{PREFIX}/"))

    def read(name: str) -> tuple[str, bytes]:
        return name[len(PREFIX) + 1 :], container.download_blob(name).readall()

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(read, names))


def ledger(
    container: ContainerClient, tasks: Sequence[Task], dead: Set[str] = frozenset()
) -> dict[str, int]:
    """Where each task ended: lost (no record, not dead-lettered), wrong (a result that is
    not the exact sum, an error record without ``invalid_json``, a record for a dead letter,
    or a record nobody asked for)."""
    found = records(container)
    counts = {"results": 0, "error_records": 0, "dead_lettered": 0, "lost": 0, "wrong": 0}
    for task in tasks:
        content = found.get(task.record)
        if task.task_id in dead:
            counts["dead_lettered"] += 1
            counts["wrong"] += content is not None
        elif content is None:
            counts["lost"] += 1
        elif task.expected is not None:
            counts["results"] += 1
            counts["wrong"] += content != task.expected.encode()
        else:
            counts["error_records"] += 1
            counts["wrong"] += json.loads(content).get("error") != "invalid_json"
    counts["wrong"] += len(set(found) - {task.record for task in tasks})
    return counts


def task_lines(output: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in map(json.loads, output.splitlines())
        if entry.get("outcome") in {"succeeded", "rejected", "retry"}
    ]


def dead_ids(broker: FakeQueue) -> set[str]:
    return {json.loads(stored.body)["id"] for stored in broker.dead}


@pytest.fixture
def task_queue(monkeypatch: pytest.MonkeyPatch) -> Callable[[float, int], FakeQueue]:
    """Installs the task queue with its lock (seconds) and max delivery count, reached with a
    connection string."""

    def make(lock_seconds: float, max_delivery_count: int) -> FakeQueue:
        monkeypatch.setenv("SERVICEBUS_CONNECTION_STRING", CONNECTION_STRING)
        queue = FakeQueue(lock_seconds=lock_seconds, max_delivery_count=max_delivery_count)
        return install(monkeypatch, queue)

    return make


@pytest.fixture
def broker(task_queue: Callable[[float, int], FakeQueue]) -> FakeQueue:
    """The task queue: 30 s locks, 5 deliveries."""
    return task_queue(30, 5)


@pytest.fixture
def results_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Points the worker's results at a blob endpoint (Azurite or a proxy before it)."""

    def point(blob_connection_string: str) -> None:
        monkeypatch.setenv("RESULTS_BLOB_CONNECTION_STRING", blob_connection_string)

    return point


def write_config(
    tmp_path: Path, container: ContainerClient, lock: str = "PT30S", **settings: str
) -> Path:
    """The cloud config: the namespace, the queue's lock duration and any other ``config.*``
    ``settings``."""
    path = tmp_path / "cloud-config.json"
    document = {
        "provider": "azure",
        "job_id": "azure-worker-test",
        "queue_name": "tasks",
        "result_bucket": container.container_name,
        "result_prefix": PREFIX,
        "config": {"namespace": "sb-worker-test", "lock_duration": lock, **settings},
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def worker_config(tmp_path: Path, container: ContainerClient, lock: str = "PT30S") -> WorkerConfig:
    return load_worker_config(write_config(tmp_path, container, lock))


def run_worker(
    config: WorkerConfig, out: io.StringIO, **options: Any
) -> tuple[Worker, threading.Thread, list[Any]]:
    """A worker from ``open_worker``, running in a thread; the list gets its summary."""
    concurrency = options.setdefault("concurrency", 32)
    receiver, store = open_worker(config, concurrency)
    options.setdefault("wait_seconds", 1)
    worker = Worker(
        receiver, store, JsonLines(config.job_id, out), options=WorkerOptions(**options)
    )
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    return worker, thread, result


# --- drain ----------------------------------------------------------------------------------


@pytest.mark.timeout(600 + worker_messages() // 20)
def test_the_worker_drains_a_queue_losing_nothing_and_getting_nothing_wrong(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    broker: FakeQueue,
    results_at: Callable[[str], None],
) -> None:
    # GIVEN 2,000 tasks (1% bad) on the queue, and the results in Azurite
    tasks = workload(worker_messages(), "w")
    broker.send(task.body for task in tasks)
    results_at(azurite.connection_string)
    out = io.StringIO()
    # WHEN the worker (32 threads) runs until the queue stays empty
    started = time.monotonic()
    _, thread, result = run_worker(worker_config(tmp_path, container), out, idle_exit_seconds=2)
    thread.join(600 + len(tasks) // 20)
    seconds = time.monotonic() - started
    # THEN every task has its exact record; every message was completed on its first
    # delivery, and nothing is left locked, queued or dead-lettered
    [summary] = result
    assert summary.reason is StopReason.IDLE
    bad = sum(task.expected is None for task in tasks)
    assert ledger(container, tasks) == {
        "results": len(tasks) - bad,
        "error_records": bad,
        "dead_lettered": 0,
        "lost": 0,
        "wrong": 0,
    }
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 0, "completed": len(tasks)}
    assert (broker.deliveries, broker.completions) == (len(tasks), len(tasks))
    assert (summary.acknowledged, summary.not_acknowledged, summary.released) == (len(tasks), 0, 0)
    lines = task_lines(out.getvalue())
    assert len(lines) == len(tasks)
    assert {line["delivery_attempt"] for line in lines} == {1}
    assert all(line["job_id"] == "azure-worker-test" for line in lines)
    print(f"\nadder work (azure): {len(tasks):,} tasks in {seconds:.1f}s")


def test_adder_work_packed_writes_one_pack_per_receive_that_fetch_turns_into_the_task_files(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    broker: FakeQueue,
    results_at: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN 300 tasks (1% bad) on the queue, the results in Azurite, and a cloud config
    # naming the stack's packed layout
    tasks = workload(300, "q")
    broker.send(task.body for task in tasks)
    results_at(azurite.connection_string)
    path = write_config(tmp_path, container, results_layout="packed")
    # WHEN `adder work --config` runs until the queue stays empty
    argv = ["work", "--config", str(path), "--no-notices", "--idle-exit", "2"]
    assert adder([*argv, "--wait-seconds", "1"]) == 0
    [stopped] = [
        line
        for line in map(json.loads, capsys.readouterr().out.splitlines())
        if line["message"].startswith("stopped (")
    ]
    # THEN only packs were written; every message was completed on its first delivery
    found = records(container)
    assert found
    assert all(name.startswith("packed/") and name.endswith(".jsonl") for name in found)
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 0, "completed": len(tasks)}
    assert (broker.deliveries, broker.completions) == (len(tasks), len(tasks))
    # AND one pack per receive call that got messages, MAX_BATCH tasks each: a poller waits
    # for room for a whole batch and asks for MAX_BATCH, ServiceBusQueueReceiver.receive
    # passes that on as max_message_count (the link credit), and the queue, holding every
    # task from the start, hands the link its whole credit at once
    sizes = [len(unpack(content)) for content in found.values()]
    assert sizes == [MAX_BATCH] * (len(tasks) // MAX_BATCH)
    assert sum(sizes) == stopped["received"] == len(tasks)
    assert len(found) <= stopped["receive_calls"]
    # AND `adder fetch azure` gives every task its exact record, as the default layout would
    into = tmp_path / "results"
    fetch = ["fetch", "azure", "--config", str(path), "--into", str(into), "--no-progress"]
    assert adder(fetch) == 0
    assert_fetched_exactly(into, tasks)


# --- store faults ---------------------------------------------------------------------------


def test_blob_faults_are_abandoned_redelivered_and_dead_lettered_at_max_deliveries(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    task_queue: Callable[[float, int], FakeQueue],
    results_at: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN 300 tasks on a queue that dead-letters on the third delivery; Azurite behind a
    # fault proxy that refuses (403, not retried) every write of 5 records and the first
    # write of 20 others, and answers 503 ServerBusy to the first write of 20 more (the
    # SDK's own retry absorbs those; its waits shortened, its count kept)
    broker = task_queue(30, 3)
    monkeypatch.setattr(servicebus_receiver, "default_retry", lambda: default_retry(**NO_WAITS))
    tasks = workload(300, "f")
    good = [task for task in tasks if task.expected is not None]
    doomed, flaky, blips = good[:5], good[5:25], good[25:45]

    def refuse(group: Sequence[Task], status: int, name: str, *, once: bool) -> FaultRule:
        """Answer ``status`` to every write of the records of ``group``, or to the first one
        of each (``once``)."""
        names = "|".join(re.escape(f"{PREFIX}/{task.record}") for task in group)
        return FaultRule(
            "PUT",
            rf"^/{ACCOUNT}/{container.container_name}/({names})",
            status=status,
            mode="first_n_per_key" if once else "always",
            name=name,
        )

    rules = [
        refuse(doomed, 403, "doomed", once=False),
        refuse(flaky, 403, "flaky", once=True),
        refuse(blips, 503, "blips", once=True),
    ]
    broker.send(task.body for task in tasks)
    with FaultProxy(f"http://127.0.0.1:{azurite.port}", rules) as proxy:
        results_at(connection_string(proxy.port))
        out = io.StringIO()
        # WHEN the worker runs, a failed task released at once, until the queue stays empty
        _, thread, result = run_worker(
            worker_config(tmp_path, container),
            out,
            concurrency=16,
            idle_exit_seconds=2,
            retry_delay_seconds=0,
        )
        thread.join(WAIT)
    [summary] = result
    # THEN the doomed ones were delivered 3 times, abandoned each time, and dead-lettered;
    # the refused-once ones were written on their second delivery; everything else first time
    assert dead_ids(broker) == {task.task_id for task in doomed}
    assert {d.dead_letter_reason for d in broker.dead} == {"MaxDeliveryCountExceeded"}
    counts = ledger(container, tasks, dead_ids(broker))
    assert (counts["lost"], counts["wrong"], counts["dead_lettered"]) == (0, 0, 5)
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 5, "completed": 295}
    retries = [line for line in task_lines(out.getvalue()) if line["outcome"] == "retry"]

    def attempts(group: Sequence[Task]) -> set[int]:
        ids = {task.task_id for task in group}
        return {line["delivery_attempt"] for line in retries if line["task_id"] in ids}

    assert attempts(doomed) == {1, 2, 3}
    assert attempts(flaky) == {1}
    assert attempts(blips) == set()
    assert broker.abandoned == len(doomed) * 3 + len(flaky) == summary.released
    assert rules[0].injected == len(doomed) * 3
    assert rules[1].injected == len(flaky)
    assert rules[2].injected == len(blips)
    successes = [line for line in task_lines(out.getvalue()) if line["outcome"] == "succeeded"]
    flaky_ids = {task.task_id for task in flaky}
    assert {line["delivery_attempt"] for line in successes if line["task_id"] in flaky_ids} == {2}


# --- a killed worker -------------------------------------------------------------------------


class KillableStore(ResultStore):
    """The worker's store; every write after the first ``alive_for`` hangs until ``thaw``,
    then fails (a killed process writes nothing more)."""

    def __init__(self, store: ResultStore, alive_for: int) -> None:
        self.store = store
        self.prefix = store.prefix
        self.alive_for = alive_for
        self.reached = threading.Event()
        self.thawed = threading.Event()
        self.writes = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.writes += 1
            number = self.writes
        if number > self.alive_for:
            self.thawed.wait()
            raise StoreWriteError("this worker was killed")
        self.store.put(key, data, content_type)
        if number == self.alive_for:
            self.reached.set()


def test_a_killed_worker_loses_nothing_its_locks_expire_and_a_second_worker_finishes(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    task_queue: Callable[[float, int], FakeQueue],
    results_at: Callable[[str], None],
) -> None:
    # GIVEN 2,000 tasks and 5 s locks (the shortest Service Bus has)
    broker = task_queue(5, 5)
    tasks = workload(2000, "k")
    broker.send(task.body for task in tasks)
    results_at(azurite.connection_string)
    config = worker_config(tmp_path, container, "PT5S")
    receiver, blob_store = open_worker(config, 32)
    store = KillableStore(blob_store, alive_for=300)
    first = Worker(
        receiver,
        store,
        JsonLines("killed", io.StringIO()),
        options=WorkerOptions(concurrency=32, wait_seconds=1, drain_seconds=1),
    )
    thread = threading.Thread(target=first.run, daemon=True)
    thread.start()
    # WHEN it is "killed" after 300 writes: its link hangs (no receive, complete, abandon or
    # renewal ever returns) and so do its writes
    assert store.reached.wait(WAIT)
    killed_links = list(broker.links)
    for link in killed_links:
        link.freeze()
    held = broker.counts()["locked"]
    # AND a second worker runs until the queue stays empty for longer than a lock
    out = io.StringIO()
    _, second_thread, result = run_worker(config, out, idle_exit_seconds=8)
    second_thread.join(600)
    [summary] = result
    # THEN every task has its exact record, completed once by one of the workers, and
    # nothing is left
    bad = sum(task.expected is None for task in tasks)
    counts = ledger(container, tasks)
    assert (counts["lost"], counts["wrong"], counts["error_records"]) == (0, 0, bad)
    assert broker.counts() == {"active": 0, "locked": 0, "dead": 0, "completed": len(tasks)}
    # AND the messages the first worker held came back when their locks expired, to the
    # second worker, as their second delivery
    assert held > 0
    again = [line for line in task_lines(out.getvalue()) if line["delivery_attempt"] >= 2]
    assert broker.abandoned == 0
    assert len(again) == broker.expired > 0
    assert broker.completions == len(tasks)
    assert first.summary.acknowledged + summary.acknowledged == len(tasks)
    # (clean up: the first worker's calls now fail as on a dead connection, and it stops)
    first.request_stop()
    first.request_stop()
    for link in killed_links:
        link.sever()
    store.thawed.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert broker.counts()["completed"] == len(tasks)


# --- a Scheduled Events notice --------------------------------------------------------------


def _utc_in(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def test_a_preempt_event_mid_run_drains_cleanly_and_is_approved(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    broker: FakeQueue,
    results_at: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN 500 tasks and a worker (32 threads) whose writes are held after the 100th: 32
    # writing, up to one more batch waiting, and no room to receive another
    tasks = workload(500, "n")
    broker.send(task.body for task in tasks)
    results_at(azurite.connection_string)
    config = worker_config(tmp_path, container)
    receiver, blob_store = open_worker(config, 32)
    store = HeldStore(blob_store, hold_from=101, hold_count=32)
    notice_out = threading.Event()
    receives_after_notice = 0
    sdk = receiver.receiver
    real_receive = sdk.receive_messages

    def counting_receive(*args: Any, **kwargs: Any) -> Any:
        nonlocal receives_after_notice
        receives_after_notice += notice_out.is_set()
        return real_receive(*args, **kwargs)

    monkeypatch.setattr(sdk, "receive_messages", counting_receive)
    with MetadataServer(not_before=_utc_in(120)) as metadata:
        worker = Worker(
            receiver,
            store,
            JsonLines("preempt", io.StringIO()),
            options=WorkerOptions(concurrency=32, wait_seconds=1),
            notice_pollers=[AzureNoticePoller(metadata.url, interval_seconds=0.05)],
        )
        # WHEN Scheduled Events announces a Preempt of this VM
        summary, in_hand = run_to_notice(
            worker, store, notice_out, lambda: metadata.notice("azure")
        )
        # THEN the worker approved the event once it was done (StartRequests, its id)
        assert metadata.start_requests.wait(WAIT)
        started = list(metadata.started)
    assert started == [{"StartRequests": [{"EventId": EVENT_ID}]}]
    # AND it stopped on the notice in time: no receive after it, the ones in hand written
    # and completed, none abandoned
    assert summary.reason is StopReason.NOTICE
    assert summary.notice is not None
    assert (summary.notice.source, summary.notice.action) == ("azure-scheduled-event", "Preempt")
    assert receives_after_notice == 0
    assert summary.drained_in_time
    assert 32 < in_hand <= 42
    assert (summary.received, summary.acknowledged, summary.released) == (
        100 + in_hand,
        100 + in_hand,
        0,
    )
    assert broker.counts() == {
        "active": 500 - 100 - in_hand,
        "locked": 0,
        "dead": 0,
        "completed": 100 + in_hand,
    }
    assert broker.abandoned == 0
    # AND a second worker finishes the rest: every task written, exactly
    _, second, _ = run_worker(config, io.StringIO(), idle_exit_seconds=2)
    second.join(WAIT)
    counts = ledger(container, tasks)
    assert (counts["lost"], counts["wrong"]) == (0, 0)
    assert broker.counts()["completed"] == 500


def test_adder_work_on_azure_exits_0_on_a_preempt_and_approves_it(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    broker: FakeQueue,
    results_at: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the Azure adapter registered for provider azure, 1,000 tasks, and the results in
    # Azurite
    monkeypatch.setitem(
        command.WORKER_ADAPTERS, "azure", "azure_function.servicebus_receiver:open_worker"
    )
    tasks = workload(1000, "c")
    broker.send(task.body for task in tasks)
    results_at(azurite.connection_string)
    path = write_config(tmp_path, container)
    with MetadataServer(not_before=_utc_in(60)) as metadata:
        codes: list[int] = []
        argv = ["work", "--config", str(path), "--metadata-url", metadata.url]
        argv += ["--concurrency", "4", "--wait-seconds", "1"]
        thread = threading.Thread(target=lambda: codes.append(adder(argv)), daemon=True)
        thread.start()
        # WHEN a Preempt is announced once the worker has completed 100 tasks
        wait_until(lambda: broker.completions >= 100)
        metadata.notice("azure")
        thread.join(WAIT)
        approved = metadata.start_requests.wait(WAIT)
    # THEN `adder work` exited 0 after approving the event, mid-run: some tasks done, some
    # left on the queue, none left locked (finished or abandoned) and none dead-lettered
    assert codes == [0]
    assert approved
    assert metadata.started == [{"StartRequests": [{"EventId": EVENT_ID}]}]
    done = broker.counts()
    assert done["locked"] == done["dead"] == 0
    assert 100 <= done["completed"] < len(tasks)
    assert done["active"] == len(tasks) - done["completed"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["job_id"] for line in lines} == {"azure-worker-test"}
    assert any("draining (notice" in line.get("message", "") for line in lines)
    # AND `adder work` run again (no notices) finishes the rest: every task written, exactly
    again = ["work", "--config", str(path), "--no-notices", "--idle-exit", "2"]
    code = adder([*again, "--wait-seconds", "1"])
    assert code == 0
    counts = ledger(container, tasks)
    assert (counts["lost"], counts["wrong"]) == (0, 0)
    assert broker.counts()["completed"] == len(tasks)


@pytest.mark.parametrize(
    ("what", "says"),
    [
        ("queue", "Service Bus queue 'tasks' on sb-worker-test.servicebus.windows.net does not"),
        ("container", "container 'no-such-container' at http://127.0.0.1:"),
    ],
)
def test_a_missing_queue_or_container_is_one_line_and_exit_2(
    tmp_path: Path,
    azurite: Azurite,
    container: ContainerClient,
    broker: FakeQueue,
    results_at: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    what: str,
    says: str,
) -> None:
    # GIVEN the adapter registered, and a config naming a queue or a container that does not
    # exist
    monkeypatch.setitem(
        command.WORKER_ADAPTERS, "azure", "azure_function.servicebus_receiver:open_worker"
    )
    results_at(azurite.connection_string)
    path = write_config(tmp_path, container)
    if what == "queue":
        broker.exists = False
    else:
        document = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**document, "result_bucket": "no-such-container"}))
    # WHEN `adder work` starts / THEN it stops at once: exit 2, one line naming what is missing
    assert adder(["work", "--config", str(path), "--no-notices"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err
    assert "does not exist" in err
    assert len(err.splitlines()) == 1
    assert broker.deliveries == 0
