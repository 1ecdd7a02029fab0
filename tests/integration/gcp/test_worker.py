"""``adder work`` on GCP: Pub/Sub (streaming pull) -> the worker -> Cloud Storage, on the real
Pub/Sub emulator (gcloud) and gcp-storage-emulator.

- a subscription of 20,000 tasks (``$ADDER_WORKER_MESSAGES``) drained by ``adder work
  --config`` (a subprocess): 0 lost, 0 wrong, checked against the bucket;
- the packed layout (``config.results_layout = "packed"``): only packs, one per receive
  call, and ``adder fetch gcp`` turns them into every task's exact record;
- Cloud Storage refusing some results (the fault proxy, tools/fault_proxy.py, between the
  storage client and the emulator): those messages are nacked, delivered again, and moved to
  the dead-letter topic after max_delivery_attempts (the emulator implements dead-letter
  policies for streaming pull, ``delivery_attempt`` included); everything else is written;
- ``kill -9`` of a worker subprocess mid-run: a second worker finishes after the ack deadline;
  nothing lost;
- a GCE preemption notice (``instance/preempted`` turning ``TRUE``) served mid-run by a
  loopback metadata server: no receive after it, the tasks in hand finish and are
  acknowledged, the worker returns; a second worker takes exactly the rest. The same through
  ``adder work --metadata-url`` exits 0.

The storage emulator here is this module's own: the stock one rewrites the metadata of every
object it holds on each write (a write gets slower with every object stored), so it runs as
bench/gcp_concurrency.py runs it without that rewrite, threaded, storage work one request at
a time, no added latency.

Until the cloud registry names the GCP binding (``worker_binding`` in core/clouds.py), the
subprocesses add it to ``WORKER_ADAPTERS`` themselves (see :func:`work_command`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from bench.gcp_concurrency import LATENCY_EMULATOR
from core.cli import main as adder
from core.packing import unpack
from core.worker.command import WORKER_ADAPTERS, load_worker_config
from core.worker.logs import JsonLines
from core.worker.loop import StopReason, Worker, WorkerOptions
from core.worker.notices import GceNoticePoller
from core.worker.port import ReceivedMessage, Receiver
from gcp_function.pubsub_receiver import MAX_BATCH, PubsubReceiver, open_worker
from tests.conftest import REPO_ROOT
from tests.integration.gcp.conftest import PROJECT, storage_client, unique
from tests.support.metadata_server import MetadataServer
from tests.support.worker import HeldStore, Task, assert_fetched_exactly, run_to_notice, workload
from tools.fault_proxy import FaultProxy, FaultRule
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence, Set
    from pathlib import Path

    from tests.integration.gcp.conftest import PubsubAdmin

pytestmark = pytest.mark.integration

MESSAGES_ENV = "ADDER_WORKER_MESSAGES"
DEFAULT_MESSAGES = 20_000
WAIT = 120.0
"""The longest an event wait may take before the test fails (never reached when it works)."""
PREFIX = "out"
EMULATOR_ATTEMPTS = 50
"""max_delivery_attempts where the emulator's stale streams add deliveries (see :func:`finish`)."""
STALL_SECONDS = 20.0
"""No new record for this long: the rest waits on the emulator's stale streams."""
ADAPTER = "gcp_function.pubsub_receiver:open_worker"
REGISTER_AND_RUN = f"""
import sys
import core.worker.command as command
command.WORKER_ADAPTERS = {{**command.WORKER_ADAPTERS, "gcp": {ADAPTER!r}}}
from core.cli import main
sys.exit(main(["work", *sys.argv[1:]]))
"""
"""``adder work`` with the GCP adapter registered (until core.worker.command registers it)."""


def worker_messages() -> int:
    """How many messages the drain test pushes through (``$ADDER_WORKER_MESSAGES``)."""
    value = os.environ.get(MESSAGES_ENV, "")
    return int(value) if value.strip().isdigit() else DEFAULT_MESSAGES


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's gcp-storage-emulator (in memory, no per-write metadata rewrite)."""
    work = tmp_path_factory.mktemp("gcs-worker")
    script = work / "emulator.py"
    script.write_text(LATENCY_EMULATOR, encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        str(script),
        "0",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
    ]
    with running_server(command, f"{url}/storage/v1/b", log=work / "emulator.log"):
        yield url


@pytest.fixture
def env(pubsub_emulator: str, storage_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Both emulators for this test and its subprocesses; no project or credentials leak in."""
    values = {"PUBSUB_EMULATOR_HOST": pubsub_emulator, "STORAGE_EMULATOR_HOST": storage_url}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    return values


@pytest.fixture
def gcs(storage_url: str) -> Any:
    return storage_client(storage_url)


@pytest.fixture
def bucket(gcs: Any) -> str:
    return str(gcs.create_bucket(unique("worker")).name)


class Stack:
    """What infra/gcp creates for the worker: the task topic, a pull subscription
    ``<topic>-worker`` with a 10 s ack deadline, a dead-letter policy (5 attempts) and a
    retry policy (1-2 s backoff), and the dead-letter topic with its subscription.

    The backoff is never under 1 s: the emulator raises a smaller minimum to 1 s and logs
    a warning (two lines, through gcloud's pipe) every time it computes one, which stalls
    its answers under load."""

    def __init__(
        self, admin: PubsubAdmin, max_delivery_attempts: int = 5, ack_deadline: int = 10
    ) -> None:
        self.admin = admin
        self.created = time.time()
        self.topic_name = unique("worker-tasks")
        self.topic = admin.topic(self.topic_name)
        dead_topic = admin.topic(f"{self.topic_name}-dead-letter")
        self.dead_subscription = admin.subscription(f"{self.topic_name}-dead-letter", dead_topic)
        self.subscription = f"projects/{PROJECT}/subscriptions/{self.topic_name}-worker"
        admin.subscriber.create_subscription(
            request={
                "name": self.subscription,
                "topic": self.topic,
                "ack_deadline_seconds": ack_deadline,
                "dead_letter_policy": {
                    "dead_letter_topic": dead_topic,
                    "max_delivery_attempts": max_delivery_attempts,
                },
                "retry_policy": {
                    "minimum_backoff": {"seconds": 1},
                    "maximum_backoff": {"seconds": 2},
                },
            }
        )

    def send(self, tasks: Sequence[Task]) -> None:
        self.admin.publish(self.topic, *(task.body for task in tasks))

    def seek_to_start(self) -> None:
        """Seek the worker subscription to before its messages were published: every one not
        acknowledged is delivered again (the emulator's stale streams, see :func:`finish`)."""
        start = dt.datetime.fromtimestamp(self.created - 60, dt.UTC)
        self.admin.subscriber.seek(request={"subscription": self.subscription, "time": start})

    def left(self) -> int:
        """Messages still on the worker subscription (pulled and handed straight back)."""
        return len(self.admin.pull(self.subscription, ack=False))

    def dead_letter_ids(self) -> list[str]:
        return [json.loads(body)["id"] for body in self.admin.drain(self.dead_subscription, 2)]


def listing(gcs: Any, bucket: str) -> dict[str, str]:
    """Every record name under the prefix, with the base64 MD5 of its bytes."""
    return {
        blob.name[len(PREFIX) + 1 :]: str(blob.md5_hash)
        for blob in gcs.list_blobs(bucket, prefix=f"{PREFIX}/")
    }


def md5(text: str) -> str:
    return base64.b64encode(hashlib.md5(text.encode()).digest()).decode()


def ledger(
    gcs: Any, bucket: str, tasks: Sequence[Task], dead: Set[str] = frozenset()
) -> dict[str, int]:
    """Where each task ended: lost (no record, not dead-lettered), wrong (a result whose MD5
    is not that of the exact sum, an error record without ``invalid_json``, a record for a
    dead letter, or a record nobody asked for)."""
    objects = listing(gcs, bucket)
    counts = {"results": 0, "error_records": 0, "dead_lettered": 0, "lost": 0, "wrong": 0}
    for task in tasks:
        digest = objects.get(task.record)
        if task.task_id in dead:
            counts["dead_lettered"] += 1
            counts["wrong"] += digest is not None
        elif digest is None:
            counts["lost"] += 1
        elif task.expected is not None:
            counts["results"] += 1
            counts["wrong"] += digest != md5(task.expected)
        else:
            counts["error_records"] += 1
            record = gcs.bucket(bucket).blob(f"{PREFIX}/{task.record}").download_as_bytes()
            counts["wrong"] += json.loads(record).get("error") != "invalid_json"
    counts["wrong"] += len(set(objects) - {task.record for task in tasks})
    return counts


def write_config(tmp_path: Path, stack: Stack, bucket: str, **settings: str) -> Path:
    """The seed's cloud config: the topic's bare name and the project (the subscription is
    the default ``<topic>-worker``), and any other ``config.*`` ``settings``."""
    path = tmp_path / f"cloud-config-{stack.topic_name}.json"
    document = {
        "provider": "gcp",
        "job_id": "worker-test",
        "queue_name": stack.topic_name,
        "result_bucket": bucket,
        "result_prefix": PREFIX,
        "config": {"project": PROJECT, **settings},
    }
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def work_command(config: Path, *extra: str, notices: bool = False) -> list[str]:
    """``adder work --config`` (``python -m core``, or, while ``WORKER_ADAPTERS`` has no
    ``gcp`` entry, a ``python -c`` that adds it first)."""
    args = ["--config", str(config), *([] if notices else ["--no-notices"]), *extra]
    if WORKER_ADAPTERS.get("gcp") == ADAPTER:
        return [sys.executable, "-m", "core", "work", *args]
    return [sys.executable, "-c", REGISTER_AND_RUN, *args]


def adder_work(
    config: Path,
    *extra: str,
    notices: bool = False,
    env: dict[str, str] | None = None,
    stdout: Any = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """``adder work --config`` as its own process, its stderr (and stdout) piped."""
    return subprocess.Popen(
        work_command(config, *extra, notices=notices),
        cwd=REPO_ROOT,
        env=None if env is None else {**os.environ, **env},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def task_lines(output: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in log_lines(output)
        if entry.get("outcome") in {"succeeded", "rejected", "retry"}
    ]


@pytest.mark.timeout(900 + worker_messages() // 20)
def test_adder_work_drains_a_subscription_losing_nothing_and_getting_nothing_wrong(
    tmp_path: Path, env: dict[str, str], pubsub_admin: PubsubAdmin, gcs: Any, bucket: str
) -> None:
    # GIVEN 20,000 tasks (1% bad) published to the task topic (the stack's 60 s ack deadline)
    tasks = workload(worker_messages(), "w")
    stack = Stack(pubsub_admin, ack_deadline=60)
    stack.send(tasks)
    config = write_config(tmp_path, stack, bucket)
    # WHEN `adder work --config` runs until the subscription stays empty
    started = time.monotonic()
    worker = adder_work(config, "--idle-exit", "3", "--wait-seconds", "1")
    out, err = worker.communicate(timeout=900 + len(tasks) // 20)
    seconds = time.monotonic() - started
    # THEN it exits 0, every task has its exact record, nothing is left or dead-lettered
    assert worker.returncode == 0, err
    counts = ledger(gcs, bucket, tasks)
    bad = sum(task.expected is None for task in tasks)
    assert counts == {
        "results": len(tasks) - bad,
        "error_records": bad,
        "dead_lettered": 0,
        "lost": 0,
        "wrong": 0,
    }
    assert stack.left() == 0
    assert stack.dead_letter_ids() == []
    # AND one JSON line per task, with the job id, the subscription and the delivery attempt
    lines = task_lines(out)
    assert {line["task_id"] for line in lines if line["outcome"] == "succeeded"} >= {
        task.task_id for task in tasks if task.expected is not None
    }
    assert all(line["job_id"] == "worker-test" for line in lines)
    assert {line["subscription"] for line in lines} == {stack.subscription}
    assert all(line["delivery_attempt"] >= 1 for line in lines)
    print(f"\nadder work: {len(tasks):,} tasks in {seconds:.1f}s = {len(tasks) / seconds:,.0f}/s")


def test_adder_work_packed_writes_one_pack_per_receive_that_fetch_turns_into_the_task_files(
    tmp_path: Path, env: dict[str, str], pubsub_admin: PubsubAdmin, gcs: Any, bucket: str
) -> None:
    # GIVEN 300 tasks (1% bad) and a cloud config naming the stack's packed layout
    tasks = workload(300, "q")
    stack = Stack(pubsub_admin, ack_deadline=60)
    stack.send(tasks)
    config = write_config(tmp_path, stack, bucket, results_layout="packed")
    # WHEN `adder work --config` runs until the subscription stays empty
    worker = adder_work(config, "--idle-exit", "3", "--wait-seconds", "1")
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err
    [stopped] = [e for e in log_lines(out) if e["message"].startswith("stopped (")]
    # THEN only packs were written, nothing is left on the subscription or dead-lettered
    objects = listing(gcs, bucket)
    assert objects
    assert all(name.startswith("packed/") and name.endswith(".jsonl") for name in objects)
    assert stack.left() == 0
    assert stack.dead_letter_ids() == []
    # AND each pack holds the messages of one receive call: PubsubReceiver.receive hands out
    # at least one buffered message and at most max_messages (the worker asks for at most
    # MAX_BATCH), so there are at least tasks / MAX_BATCH packs and no more than non-empty
    # receive calls; every delivered message is in exactly one pack
    blobs = gcs.bucket(bucket)
    sizes = [len(unpack(blobs.blob(f"{PREFIX}/{name}").download_as_bytes())) for name in objects]
    assert all(1 <= size <= MAX_BATCH for size in sizes), sizes
    assert sum(sizes) == stopped["received"] >= len(tasks)
    assert math.ceil(len(tasks) / MAX_BATCH) <= len(objects) <= stopped["receive_calls"]
    # AND fewer packs than tasks: the streaming pull keeps up to concurrency + MAX_BATCH
    # messages outstanding in the receiver's buffer, and receive takes every buffered one
    # (up to max_messages), so the receive calls made while the worker is busy take several
    assert len(objects) < len(tasks)
    # AND `adder fetch gcp` gives every task its exact record, as the default layout would
    into = tmp_path / "results"
    where = ["--bucket", bucket, "--prefix", PREFIX, "--into", str(into), "--no-progress"]
    assert adder(["fetch", "gcp", *where]) == 0
    assert_fetched_exactly(into, tasks)
    print(f"\npacks of {len(tasks)} tasks: {len(objects)}, sizes {sorted(sizes)}")


def gcs_error(status: int, reason: str) -> bytes:
    """A JSON API error body as Cloud Storage sends it."""
    error = {"code": status, "message": f"injected: {reason}", "errors": [{"reason": reason}]}
    return json.dumps({"error": error}).encode()


def by_name(tasks: Sequence[Task]) -> bytes:
    """An upload body pattern matching the records of ``tasks`` (the object's name is in the
    multipart upload's metadata), capturing the name."""
    names = "|".join(re.escape(f"{PREFIX}/{task.record}") for task in tasks)
    return rb'"name": ?"(' + names.encode() + rb')"'


def test_store_faults_are_nacked_redelivered_and_dead_lettered(
    tmp_path: Path,
    env: dict[str, str],
    storage_url: str,
    pubsub_admin: PubsubAdmin,
    gcs: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN 200 tasks; Cloud Storage answers 403 to every write of 5 of them and to the first
    # write of 10 others (the storage client does not retry a 403: the delivery fails)
    tasks = workload(200, "f")
    good = [task for task in tasks if task.expected is not None]
    doomed, flaky = good[:5], good[5:15]
    upload = rf"^/upload/storage/v1/b/{bucket}/o\?"
    rules = [
        FaultRule("POST", upload, by_name(doomed), 403, body=gcs_error(403, "forbidden")),
        FaultRule(
            "POST",
            upload,
            by_name(flaky),
            403,
            "first_n_per_key",
            n=1,
            body=gcs_error(403, "forbidden"),
        ),
    ]
    stack = Stack(pubsub_admin, max_delivery_attempts=5)
    stack.send(tasks)
    out = io.StringIO()
    with FaultProxy(storage_url, rules) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        config = load_worker_config(write_config(tmp_path, stack, bucket))
        receiver, store = open_worker(config, 16)
        # WHEN the worker runs until the subscription stays empty
        options = WorkerOptions(concurrency=16, wait_seconds=1, idle_exit_seconds=6)
        summary = Worker(receiver, store, JsonLines("faults", out), options=options).run()
    # THEN the doomed ones were delivered max_delivery_attempts (5) times, nacked each time,
    # and moved to the dead-letter topic; every other task has its exact record, the refused
    # ones from their second delivery
    dead = set(stack.dead_letter_ids())
    assert dead == {task.task_id for task in doomed}
    counts = ledger(gcs, bucket, tasks, dead)
    assert (counts["lost"], counts["wrong"], counts["dead_lettered"]) == (0, 0, 5)
    assert stack.left() == 0
    retries = [e for e in task_lines(out.getvalue()) if e["outcome"] == "retry"]

    def attempts(group: Sequence[Task]) -> set[int]:
        ids = {task.task_id for task in group}
        return {e["delivery_attempt"] for e in retries if e["task_id"] in ids}

    assert attempts(doomed) == {1, 2, 3, 4, 5}
    assert attempts(flaky) == {1}
    assert {e["task_id"] for e in retries} == {t.task_id for t in [*doomed, *flaky]}
    assert summary.retried == len(retries) == 5 * 5 + 10
    assert summary.released == summary.retried
    assert summary.acknowledged == len(tasks) - len(doomed)


def test_kill_9_mid_run_loses_nothing_a_second_worker_finishes(
    tmp_path: Path, env: dict[str, str], pubsub_admin: PubsubAdmin, gcs: Any, bucket: str
) -> None:
    # GIVEN 2,000 tasks on a subscription with a 10 s ack deadline
    tasks = workload(2000, "k")
    stack = Stack(pubsub_admin, max_delivery_attempts=EMULATOR_ATTEMPTS)
    stack.send(tasks)
    config = write_config(tmp_path, stack, bucket)
    # WHEN a worker is killed with SIGKILL after it has done 300 tasks
    first = adder_work(config)
    assert first.stdout is not None
    done = 0
    for line in first.stdout:
        done += '"outcome": "succeeded"' in line
        if done >= 300:
            break
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    written = len(listing(gcs, bucket))
    # AND a second worker runs until every task has its record (what the first one held
    # comes back when its lease runs out, after the 10 s ack deadline), then gets SIGTERM
    second = finish(stack, config, gcs, bucket, len(tasks), tmp_path / "second.log")
    # THEN it drains and exits 0, every task has its exact record, the subscription is empty
    assert second.returncode == 0, second.stderr
    counts = ledger(gcs, bucket, tasks)
    bad = sum(task.expected is None for task in tasks)
    assert (counts["lost"], counts["wrong"], counts["error_records"]) == (0, 0, bad)
    assert stack.left() == 0
    assert stack.dead_letter_ids() == []
    # AND the second worker got back, on their own, messages the first had received and not
    # acknowledged (the emulator sent the first one every message: it ignores flow control)
    assert second.before_seek > written
    assert any(line["delivery_attempt"] >= 2 for line in task_lines(second.stdout))


@dataclass
class Finished:
    """How a worker run by :func:`finish` ended."""

    returncode: int
    stdout: str
    stderr: str
    seeks: int
    """Times the subscription was sought back (the emulator's stale streams, see :func:`finish`)."""
    before_seek: int
    """Records written when the first seek was needed (all of them when none was)."""


def finish(stack: Stack, config: Path, gcs: Any, bucket: str, total: int, log: Path) -> Finished:
    """Run ``adder work`` until the bucket holds ``total`` records, then SIGTERM it.

    The Pub/Sub emulator (cloud-pubsub-emulator 0.8.20) never unregisters a streaming pull
    that was closed or whose client died: its gRPC close path throws NoSuchMethodError
    (see its log), so it keeps dispatching messages to that stream, where they wait for
    their ack deadline and then are dispatched again, partly to the dead stream again, some
    never coming back. When no record was added for STALL_SECONDS, the subscription is
    sought back to before the tasks were published: every message not acknowledged is
    delivered again at once (acknowledged ones are not kept, so none comes back): it shows
    that they were never acknowledged, which is what "lost nothing" means. On Google Cloud
    a closed stream's messages come back after their ack deadline.
    """
    seeks, before_seek = 0, -1
    with log.open("w", encoding="utf-8") as output:  # not a pipe: nobody reads it meanwhile
        worker = adder_work(config, "--wait-seconds", "1", stdout=output)
        count, progressed = 0, time.monotonic()
        give_up = progressed + 240
        while count < total:
            assert time.monotonic() < give_up, f"{count} of {total} records"
            time.sleep(1.0)
            now, found = time.monotonic(), len(listing(gcs, bucket))
            if found > count:
                count, progressed = found, now
            elif now - progressed > STALL_SECONDS:
                before_seek = count if seeks == 0 else before_seek
                stack.seek_to_start()
                seeks, progressed = seeks + 1, now
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=WAIT)
    print(f"\nrecords after the kill/notice: {seeks} seeks needed, first at {before_seek}")
    return Finished(
        worker.returncode,
        log.read_text(encoding="utf-8"),
        err,
        seeks,
        total if seeks == 0 else before_seek,
    )


class CountingReceiver(Receiver):
    """``receiver``, counting the receive calls made once ``after`` is set."""

    def __init__(self, receiver: PubsubReceiver, after: threading.Event) -> None:
        self.receiver = receiver
        self.after = after
        self.max_batch = receiver.max_batch
        self.lease_seconds = receiver.lease_seconds
        self.describe = receiver.describe
        self.calls_after = 0

    def receive(self, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        self.calls_after += self.after.is_set()
        return self.receiver.receive(max_messages, wait_seconds)

    def extend(self, messages: Sequence[ReceivedMessage], seconds: float) -> None:
        self.receiver.extend(messages, seconds)

    def acknowledge(self, messages: Sequence[ReceivedMessage]) -> list[ReceivedMessage]:
        return self.receiver.acknowledge(messages)

    def release(self, messages: Sequence[ReceivedMessage], delay_seconds: float = 0) -> None:
        self.receiver.release(messages, delay_seconds)

    def close(self) -> None:
        self.receiver.close()


def test_a_preemption_notice_mid_run_drains_cleanly(
    tmp_path: Path, env: dict[str, str], pubsub_admin: PubsubAdmin, gcs: Any, bucket: str
) -> None:
    # GIVEN 500 tasks and a worker (32 threads) whose writes are held after the 100th: 32
    # writing, up to one more batch waiting, and no room to receive another
    tasks = workload(500, "n")
    stack = Stack(pubsub_admin, max_delivery_attempts=EMULATOR_ATTEMPTS)
    stack.send(tasks)
    config_path = write_config(tmp_path, stack, bucket)
    receiver, gcs_store = open_worker(load_worker_config(config_path), 32)
    store = HeldStore(gcs_store, hold_from=101, hold_count=32)
    notice_out = threading.Event()
    counting = CountingReceiver(receiver, notice_out)
    out = io.StringIO()
    with MetadataServer() as metadata:
        worker = Worker(
            counting,
            store,
            JsonLines("preempted", out),
            options=WorkerOptions(concurrency=32, wait_seconds=1),
            notice_pollers=[GceNoticePoller(metadata.url, wait_seconds=5)],
        )
        # WHEN the metadata server says the instance is being preempted
        summary, in_hand = run_to_notice(worker, store, notice_out, lambda: metadata.notice("gcp"))
    # THEN the worker stopped on it in time: no receive after it, the tasks in hand written
    # and acknowledged, nothing released
    assert summary.reason is StopReason.NOTICE
    assert summary.notice is not None
    assert summary.notice.source == "gcp-preemption"
    assert counting.calls_after == 0
    assert summary.drained_in_time
    assert 32 < in_hand <= 42
    taken = 100 + in_hand
    assert (summary.received, summary.acknowledged, summary.released) == (taken, taken, 0)
    first_ids = {line["message_id"] for line in task_lines(out.getvalue())}
    assert len(first_ids) == taken
    # AND a second worker takes exactly the rest: the first one's acknowledgements all
    # reached Pub/Sub and what it had buffered came back (nothing twice, nothing lost)
    second = finish(stack, config_path, gcs, bucket, len(tasks), tmp_path / "second.log")
    assert second.returncode == 0, second.stderr
    second_ids = [line["message_id"] for line in task_lines(second.stdout)]
    assert first_ids.isdisjoint(second_ids)
    assert len(first_ids | set(second_ids)) == len(tasks)
    if not second.seeks:  # a seek may deliver again what the second worker holds
        assert len(second_ids) == len(tasks) - taken
    counts = ledger(gcs, bucket, tasks)
    assert (counts["lost"], counts["wrong"]) == (0, 0)
    assert stack.left() == 0


def test_adder_work_exits_0_on_a_preemption_notice_and_loses_nothing(
    tmp_path: Path, env: dict[str, str], pubsub_admin: PubsubAdmin, gcs: Any, bucket: str
) -> None:
    # GIVEN 3,000 tasks and `adder work` watching a loopback metadata server
    tasks = workload(3000, "p")
    stack = Stack(pubsub_admin, max_delivery_attempts=EMULATOR_ATTEMPTS)
    stack.send(tasks)
    config = write_config(tmp_path, stack, bucket)
    with MetadataServer() as metadata:
        worker = adder_work(config, "--metadata-url", metadata.url, notices=True)
        assert worker.stdout is not None
        done = 0
        # WHEN the instance is preempted after 200 tasks
        for line in worker.stdout:
            done += '"outcome": "succeeded"' in line
            if done >= 200:
                break
        metadata.notice("gcp")
        rest, err = worker.communicate(timeout=WAIT)
    # THEN it drains on the notice and exits 0
    assert worker.returncode == 0, err
    stopped = [e for e in log_lines(rest) if e["message"].startswith("stopped (")]
    assert [e["reason"] for e in stopped] == ["notice"]
    assert stopped[0]["drained_in_time"] is True
    # AND a second worker finishes the rest: every task written, exactly
    second = finish(stack, config, gcs, bucket, len(tasks), tmp_path / "second.log")
    assert second.returncode == 0, second.stderr
    counts = ledger(gcs, bucket, tasks)
    assert (counts["lost"], counts["wrong"]) == (0, 0)
    assert stack.left() == 0


@pytest.mark.parametrize("case", ["missing-subscription", "missing-bucket", "closed-port"])
def test_a_wrong_subscription_bucket_or_address_is_one_line_and_exit_2(
    case: str, tmp_path: Path, env: dict[str, str], pubsub_admin: PubsubAdmin, bucket: str
) -> None:
    # GIVEN a config whose subscription or bucket does not exist, or an emulator address
    # where nothing listens
    stack = Stack(pubsub_admin)
    config = write_config(
        tmp_path, stack, "no-such-bucket-7" if case == "missing-bucket" else bucket
    )
    if case == "missing-subscription":
        document = json.loads(config.read_text())
        document["config"]["subscription"] = "no-such-subscription"
        config.write_text(json.dumps(document))
    host = f"127.0.0.1:{free_port()}" if case == "closed-port" else env["PUBSUB_EMULATOR_HOST"]
    # WHEN adder work starts
    worker = adder_work(config, env={"PUBSUB_EMULATOR_HOST": host})
    _, err = worker.communicate(timeout=120)
    # THEN it exits 2 with one line that names what is wrong and how to fix it
    assert worker.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    subscription = f"projects/{PROJECT}/subscriptions/"
    expected = {
        "missing-subscription": (
            f"error: Pub/Sub subscription {subscription}no-such-subscription at {host}"
            " does not exist ("
        ),
        "missing-bucket": "error: bucket gs://no-such-bucket-7 at ",
        "closed-port": f"error: cannot reach Pub/Sub subscription {stack.subscription} at {host}",
    }[case]
    assert err.startswith(expected), err
    assert "config.subscription" in err or case == "missing-bucket"
    assert "result_bucket" in err or case != "missing-bucket"
