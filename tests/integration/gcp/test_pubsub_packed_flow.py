"""The Google Cloud job flow in the packed layout: the Pub/Sub emulator pushes every message of
the task topic to the function (the deployment zip in functions-framework, ``RESULTS_LAYOUT=
packed``), which writes packs to gcp-storage-emulator; ``adder submit|watch|fetch gcp`` run
as in the default layout and fetch gives the same files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from core.cli import main
from core.packing import PACKED_DIR
from tests.integration.gcp.conftest import PROJECT, unique
from tests.integration.gcp.packed import packed_function_running, packs
from tests.integration.gcp.test_pubsub_flow import files, good_tasks, run_locally, write_tasks
from tests.support.terraform_state import require_terraform, write_state

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.gcp.conftest import PubsubAdmin

pytestmark = pytest.mark.integration

BUCKET = "adder-packed-flow"
PREFIX = "jobs/packed-flow"


def test_a_packed_job_submitted_watched_and_fetched_gives_the_local_runners_files(
    pubsub_admin: PubsubAdmin,
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    emulator_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the packed function behind a push subscription (with a dead-letter policy), and
    # 12 good tasks and a bad one
    require_terraform()
    gcs_client.create_bucket(BUCKET)
    with packed_function_running(
        function_source, gcs_emulator, BUCKET, PREFIX, tmp_path / "function.log", max_wait_ms=200
    ) as server:
        topic = pubsub_admin.topic(unique("packed-tasks"))
        dead_topic = pubsub_admin.topic(unique("packed-dead"))
        dead_subscription = pubsub_admin.subscription(unique("packed-dead"), dead_topic)
        pubsub_admin.subscription(
            unique("packed-push"), topic, push_endpoint=server.url, dead_letter_topic=dead_topic
        )
        stack = write_state(
            tmp_path / "stack",
            {
                "project_id": PROJECT,
                "topic_id": topic,
                "dead_letter_subscription": dead_subscription,
                "results_bucket": BUCKET,
                "results_prefix": PREFIX,
                "results_layout": "packed",
            },
        )
        bad = json.dumps({"id": "packed-bad", "data": {"num1": "1", "num2": 2}})
        tasks = write_tasks(tmp_path / "packed.jsonl", [*good_tasks("packed", 10), bad])
        jobs = ["--jobs-dir", str(tmp_path / "jobs")]
        # WHEN the job is submitted from the stack's outputs and watched until it is done
        code = main(["submit", "gcp", "--stack", str(stack), *jobs, "--job", "packed", str(tasks)])
        assert code == 0, capsys.readouterr().out
        capsys.readouterr()
        code = main(
            ["watch", "gcp", "--job", "packed", *jobs, "--interval", "0.2", "--timeout", "90"]
        )
        # THEN every task is accounted for, the bad one as rejected (watch exits 1)
        out = capsys.readouterr().out
        assert code == 1, out
        assert out.strip().splitlines()[-1] == (
            "job packed finished with failures: 12 succeeded, 1 rejected, 0 dead-lettered, 0 in"
            " flight, of 13"
        )
    # AND the bucket holds packs only, 13 records in all
    found = packs(gcs_client, BUCKET, PREFIX)
    assert all(f"/{PACKED_DIR}/" in name for name in found)
    assert sum(len(records) for records in found.values()) == 13
    # AND fetch unpacks them into exactly the files the local runner writes for the same tasks
    into = tmp_path / "fetched"
    assert main(["fetch", "gcp", "--job", "packed", *jobs, "--into", str(into)]) == 0
    fetched = files(into)
    assert fetched == run_locally(tasks, tmp_path / "local")
    assert fetched["packed-dec.out"] == b"0.3"
    assert json.loads(fetched["packed-bad.err"])["error"] == "invalid_number"
