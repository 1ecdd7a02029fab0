"""The whole Google Cloud job flow on real parts, through ``adder``.

The Pub/Sub emulator (gcloud) pushes every message of the task topic to the function,
served by the real functions-framework from the deployment zip, which writes to
gcp-storage-emulator; ``adder submit|watch|fetch|status|redrive gcp`` talk to both emulators
with the real client libraries. The emulator supports dead-letter policies: a message the
function answers 500 to is pushed again (redelivered, with backoff) and after 5 attempts
moved to the dead-letter topic, as on Google Cloud (which also needs IAM grants the
emulator does not check).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core.cli import main
from core.ops.target import Target
from gcp_function.job_backend import GcpJobBackend
from gcp_function.jobs import open_backend
from tests.integration.gcp.conftest import PROJECT, function_running, unique
from tests.support.terraform_state import require_terraform, write_state
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.integration.gcp.conftest import FunctionServer, PubsubAdmin

pytestmark = pytest.mark.integration

FLOW_BUCKET = "adder-flow-results"
FLOW_PREFIX = "jobs/flow"
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Flow:
    """The deployed job: topics, subscriptions, the function and its bucket."""

    topic: str
    dead_subscription: str
    broken_topic: str
    """A topic pushed to the function configured with a missing bucket (every write fails)."""
    broken_dead_subscription: str
    function: FunctionServer
    broken_function: FunctionServer


@pytest.fixture(scope="module")
def flow(
    pubsub_admin: PubsubAdmin,
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    broken_function_server: FunctionServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Flow]:
    gcs_client.create_bucket(FLOW_BUCKET)
    log = tmp_path_factory.mktemp("flow-function") / "stdout.log"
    with function_running(function_source, gcs_emulator, FLOW_BUCKET, FLOW_PREFIX, log) as server:
        topic = pubsub_admin.topic(unique("flow-tasks"))
        dead_topic = pubsub_admin.topic(unique("flow-dead"))
        dead_subscription = pubsub_admin.subscription(unique("flow-dead"), dead_topic)
        pubsub_admin.subscription(
            unique("flow-push"), topic, push_endpoint=server.url, dead_letter_topic=dead_topic
        )
        broken_topic = pubsub_admin.topic(unique("broken-tasks"))
        broken_dead_topic = pubsub_admin.topic(unique("broken-dead"))
        broken_dead_subscription = pubsub_admin.subscription(
            unique("broken-dead"), broken_dead_topic
        )
        pubsub_admin.subscription(
            unique("broken-push"),
            broken_topic,
            push_endpoint=broken_function_server.url,
            dead_letter_topic=broken_dead_topic,
            max_delivery_attempts=5,
        )
        yield Flow(
            topic,
            dead_subscription,
            broken_topic,
            broken_dead_subscription,
            server,
            broken_function_server,
        )


def write_tasks(path: Path, tasks: list[str]) -> Path:
    path.write_text("".join(task + "\n" for task in tasks), encoding="utf-8")
    return path


def good_tasks(stem: str, count: int) -> list[str]:
    """Exact decimals, big integers, non-ASCII ids and both id shapes."""
    tasks = [
        json.dumps({"id": f"{stem}-{n}", "data": {"num1": n, "num2": 10**30}}) for n in range(count)
    ]
    tasks.append(f'{{"id": "{stem}-dec", "data": {{"num1": 0.1, "num2": 0.2}}}}')
    tasks.append(f'{{"task_id": "{stem}-é-数", "num1": 1.50, "num2": 1.50}}')
    return tasks


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def run_locally(tasks: Path, results: Path) -> dict[str, bytes]:
    """What ``adder run`` writes for the same tasks file."""
    main(["run", "--tasks", str(tasks), "--results-dir", str(results), "--no-progress"])
    return files(results)


def test_submit_from_the_stack_then_watch_and_fetch_give_the_local_runners_files(
    flow: Flow, emulator_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 12 good tasks, submitted with the settings read from the stack's outputs (the
    # real terraform reading a state file named as infra/gcp/outputs.tf names them)
    require_terraform()
    stack = write_state(
        tmp_path / "stack",
        {
            "project_id": PROJECT,
            "topic_id": flow.topic,
            "dead_letter_subscription": flow.dead_subscription,
            "results_bucket": FLOW_BUCKET,
            "results_prefix": FLOW_PREFIX,
        },
    )
    tasks = write_tasks(tmp_path / "flags.jsonl", good_tasks("flags", 10))
    jobs = ["--jobs-dir", str(tmp_path / "jobs")]
    code = main(["submit", "gcp", "--stack", str(stack), *jobs, "--job", "flags", str(tasks)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith(f"sent 12 tasks to Pub/Sub topic {flow.topic} in ")
    # WHEN the job is watched (the settings come from its manifest) until it is done
    code = main(["watch", "gcp", "--job", "flags", *jobs, "--interval", "0.2", "--timeout", "90"])
    # THEN every push reached the function and every task succeeded
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip() == (
        "job flags finished: 12 succeeded, 0 rejected, 0 dead-lettered, 0 in flight, of 12"
    )
    # AND fetch gives exactly the files the local runner writes for the same tasks
    into = tmp_path / "fetched"
    assert main(["fetch", "gcp", "--job", "flags", *jobs, "--into", str(into)]) == 0
    fetched = files(into)
    assert fetched == run_locally(tasks, tmp_path / "local")
    assert fetched["flags-dec.out"] == b"0.3"
    assert fetched["flags-é-数.out"] == b"3"


def test_seed_config_job_with_a_bad_task_finishes_with_failures(
    flow: Flow, emulator_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the seed's cloud config (bare names and the project) and a tasks file with a bad task
    config = tmp_path / "gcp.json"
    config.write_text(
        json.dumps(
            {
                "provider": "gcp",
                "job_id": "seed-job",
                "queue_name": flow.topic.rsplit("/", 1)[1],
                "result_bucket": FLOW_BUCKET,
                "result_prefix": FLOW_PREFIX,
                "config": {
                    "project": PROJECT,
                    "dead_letter_subscription": flow.dead_subscription.rsplit("/", 1)[1],
                },
            }
        )
    )
    bad = '{"id": "seed-bad", "data": {"num1": true, "num2": 1}}'
    tasks = write_tasks(tmp_path / "seed.jsonl", [*good_tasks("seed", 3), bad])
    jobs = ["--jobs-dir", str(tmp_path / "jobs")]
    # WHEN it is submitted with the config alone (the cloud is the config's provider)
    assert main(["submit", "--config", str(config), *jobs, str(tasks)]) == 0
    capsys.readouterr()
    # THEN watch counts the bad task's error record and exits 1
    code = main(
        ["watch", "gcp", "--job", "seed-job", *jobs, "--interval", "0.2", "--timeout", "90"]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.strip() == (
        "job seed-job finished with failures: 5 succeeded, 1 rejected, 0 dead-lettered, "
        "0 in flight, of 6"
    )
    # AND fetch brings the .err too, byte-identical to the local runner's
    into = tmp_path / "fetched"
    assert main(["fetch", "--job", "seed-job", *jobs, "--into", str(into)]) == 0
    fetched = files(into)
    assert fetched == run_locally(tasks, tmp_path / "local")
    assert json.loads(fetched["seed-bad.err"])["error"] == "invalid_number"


def deliveries(function: FunctionServer, task_id: str) -> list[dict[str, Any]]:
    return [entry for entry in function.log_entries() if entry.get("task_id") == task_id]


def wait_for(condition: Callable[[], bool], seconds: float, what: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; fail with ``what()`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.25)


def test_store_failures_are_redelivered_dead_lettered_and_redriven_with_none_lost(
    flow: Flow, emulator_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two tasks published to the topic whose function cannot write (missing bucket)
    ids = [unique("redrive"), unique("redrive")]
    tasks = write_tasks(
        tmp_path / "broken.jsonl",
        [json.dumps({"id": task_id, "data": {"num1": 2, "num2": 3}}) for task_id in ids],
    )
    jobs = ["--jobs-dir", str(tmp_path / "jobs")]
    flags = ["--topic", flow.broken_topic, "--bucket", FLOW_BUCKET, "--prefix", FLOW_PREFIX]
    dead = ["--dead-letter-subscription", flow.broken_dead_subscription]
    assert main(["submit", "gcp", *flags, *dead, *jobs, "--job", "broken", str(tasks)]) == 0
    # WHEN the emulator pushes them: the function answers 500 each time
    status = open_backend(
        Target(
            "gcp",
            {"bucket": FLOW_BUCKET, "dead_letter_subscription": flow.broken_dead_subscription},
        ),
        "status",
    )
    assert isinstance(status, GcpJobBackend)
    wait_for(
        lambda: status.dead_letter_count() == 2,
        60,
        lambda: (
            f"both tasks to be dead-lettered: {status.dead_letter_count()} dead letters; "
            f"deliveries: {[deliveries(flow.broken_function, task_id) for task_id in ids]}"
        ),
    )
    # THEN each was delivered again and again (5 attempts, "best effort" on Google Cloud)
    for task_id in ids:
        attempts = deliveries(flow.broken_function, task_id)
        assert len(attempts) >= 2
        assert {entry["outcome"] for entry in attempts} == {"retry"}
        assert len({entry["message_id"] for entry in attempts}) == 1
    # AND watch sees them as dead-lettered: the job finished with failures
    capsys.readouterr()
    code = main(["watch", "gcp", "--job", "broken", *jobs, "--interval", "0.2", "--timeout", "30"])
    assert code == 1
    assert "0 succeeded, 0 rejected, 2 dead-lettered, 0 in flight, of 2" in capsys.readouterr().out
    # WHEN they are redriven onto the working topic
    code = main(["redrive", "gcp", "--topic", flow.topic, *dead])
    # THEN both moved, none is left behind, and the working function wrote both results
    assert code == 0
    assert capsys.readouterr().out.startswith(
        f"moved 2 dead-lettered tasks back onto Pub/Sub topic {flow.topic} in "
    )
    assert status.dead_letter_count() == 0
    blobs = gcs_blobs(flow)
    wait_for(
        lambda: {f"{i}.out" for i in ids} <= set(blobs()),
        30,
        lambda: f"the redriven results: {sorted(blobs())}",
    )
    assert all(blobs()[f"{task_id}.out"] == b"5" for task_id in ids)
    status.close()


def gcs_blobs(flow: Flow) -> Any:
    """A reader of the flow bucket's records by file name (through the backend's listing)."""
    backend = open_backend(Target("gcp", {"bucket": FLOW_BUCKET, "prefix": FLOW_PREFIX}), "fetch")

    def read() -> dict[str, bytes]:
        return {r.file_name: backend.read_record(r) for r in backend.list_records()}

    return read


def adder(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``adder ARGS`` in a subprocess; its result and how long it took."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "core", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


FIX = (
    "check --topic, --stack DIR (terraform output topic_id) or --config FILE (queue_name) "
    "(and the project and $PUBSUB_EMULATOR_HOST)"
)
"""What a missing or unreachable topic's line says to check, on the emulator."""


@pytest.mark.parametrize("case", ["missing-topic", "closed-port"])
def test_submit_errors_are_one_line_exit_2_within_seconds(
    case: str, pubsub_emulator: str, tmp_path: Path
) -> None:
    # GIVEN a topic that does not exist, or an emulator address where nothing listens
    tasks = write_tasks(tmp_path / "t.jsonl", good_tasks("err", 1))
    host = f"127.0.0.1:{free_port()}" if case == "closed-port" else pubsub_emulator
    topic = f"projects/{PROJECT}/topics/{unique('no-such-topic')}"
    # WHEN adder submit runs
    done, seconds = adder(
        ["submit", "gcp", "--topic", topic, "--jobs-dir", str(tmp_path / "jobs"), str(tasks)],
        {"PUBSUB_EMULATOR_HOST": host},
        tmp_path,
    )
    # THEN it exits 2 with one line on stderr that says what is wrong, quickly, sending nothing
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    start, end = {
        "missing-topic": (f"error: Pub/Sub topic {topic} at {host} does not exist (", FIX),
        "closed-port": (
            f"error: cannot reach Pub/Sub topic {topic} at {host} (",
            f"{FIX}, and the network",
        ),
    }[case]
    assert done.stderr.startswith(start), done.stderr
    assert done.stderr.endswith(f"): {end}\n"), done.stderr
    assert seconds < 15
    assert not (tmp_path / "jobs").exists()
