"""``adder status gcp`` on the emulators, and the Cloud Monitoring backlog reader.

Counts come from gcp-storage-emulator and, on the Pub/Sub emulator, the dead letters are
counted by pulling them and handing them back. Cloud Monitoring has no emulator: the
backlog reader (what ``dead_letter_count`` uses on Google Cloud) is exercised against a
loopback HTTP server that answers with the documented ``timeSeries.list`` shapes, so the
query it builds and the parsing are checked, not Google's answer.
"""

from __future__ import annotations

import datetime
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import requests

from core.cli import main
from core.errors import InvalidTaskError
from core.records import ErrorRecord
from gcp_function.gcs_store import GcsResultStore
from gcp_function.job_backend import GcpJobBackend
from gcp_function.job_backlog import BACKLOG_METRIC, dead_letter_backlog
from tests.integration.gcp.conftest import PROJECT, unique

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.integration.gcp.conftest import PubsubAdmin

pytestmark = pytest.mark.integration

SUBSCRIPTION = "projects/test-project/subscriptions/adder-tasks-dead-letter"
NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


def test_status_counts_results_errors_and_dead_letters(
    new_bucket: Any,
    gcs_client: Any,
    pubsub_admin: PubsubAdmin,
    emulator_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN 2 results and 1 error record under results/, objects elsewhere, 2 dead letters
    store = GcsResultStore(new_bucket.name, "results", client=gcs_client)
    store.write_result("a", "1")
    store.write_result("b", "2")
    store.write_error(ErrorRecord.for_rejection(InvalidTaskError("empty", "empty"), b""))
    new_bucket.blob("results/notes.txt").upload_from_string("x")
    new_bucket.blob("elsewhere/c.out").upload_from_string("3")
    new_bucket.blob("results-old/d.out").upload_from_string("4")
    dead_topic = pubsub_admin.topic(unique("dead"))
    dead = pubsub_admin.subscription(unique("dead"), dead_topic)
    pubsub_admin.publish(dead_topic, b"x", b"y")
    # WHEN status runs, with bare names and the project
    code = main(
        [
            "status",
            "gcp",
            "--project",
            PROJECT,
            "--topic",
            "adder-tasks",
            "--dead-letter-subscription",
            dead.rsplit("/", 1)[1],
            "--bucket",
            new_bucket.name,
            "--prefix",
            "results",
        ]
    )
    # THEN only records under results/ are counted, and both dead letters (still there)
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "task queue:   unknown waiting, unknown in flight "
        f"(Pub/Sub topic projects/{PROJECT}/topics/adder-tasks)",
        "dead letters: 2",
        f"results:      2 .out, 1 .err in gs://{new_bucket.name}/results/",
    ]
    assert sorted(pubsub_admin.drain(dead)) == [b"x", b"y"]


def test_status_of_a_missing_bucket_is_one_line_exit_2(
    emulator_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "gcp", "--bucket", "adder-status-missing"])
    err = capsys.readouterr().err
    assert code == 2
    emulator = emulator_env["STORAGE_EMULATOR_HOST"]
    assert err.startswith(f"error: bucket gs://adder-status-missing at {emulator} does not exist (")
    assert err.endswith(
        "): check --bucket, --stack DIR (terraform output results_bucket) or --config FILE"
        " (result_bucket) (and $STORAGE_EMULATOR_HOST)\n"
    )
    assert len(err.splitlines()) == 1


def test_status_without_monitoring_credentials_reports_dead_letters_as_unknown(
    new_bucket: Any,
    gcs_emulator: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN Google's Pub/Sub (no emulator) and no usable credentials, so nothing leaves loopback
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    # WHEN status is asked for the dead letters
    code = main(
        ["status", "gcp", "--bucket", new_bucket.name, "--dead-letter-subscription", SUBSCRIPTION]
    )
    # THEN counts still print, and the dead letters are unknown (Cloud Monitoring unreadable)
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[1:] == [
        "dead letters: unknown",
        f"results:      0 .out, 0 .err in gs://{new_bucket.name}/",
    ]


class _Monitoring(BaseHTTPRequestHandler):
    answer: ClassVar[tuple[int, dict[str, Any]]] = (200, {})
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        status, body = type(self).answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def monitoring() -> Iterator[str]:
    _Monitoring.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Monitoring)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def point(end: str, value: str) -> dict[str, Any]:
    return {"interval": {"startTime": end, "endTime": end}, "value": {"int64Value": value}}


def test_backlog_is_the_latest_monitoring_sample(monitoring: str) -> None:
    # GIVEN Monitoring holds two samples of the metric
    series = {"points": [point("2026-11-27T11:58:00Z", "7"), point("2026-11-27T11:59:00Z", "3")]}
    _Monitoring.answer = (200, {"timeSeries": [series]})
    # WHEN the backlog is read
    backlog = dead_letter_backlog(SUBSCRIPTION, requests.Session(), endpoint=monitoring, now=NOW)
    # THEN it is the newest sample, and the query named the metric and the subscription
    assert backlog.count == 3
    assert "2026-11-27T11:59:00Z" in backlog.detail
    [path] = _Monitoring.seen
    url = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(url.query)
    assert url.path == "/v3/projects/test-project/timeSeries"
    assert query["filter"] == [
        f'metric.type="{BACKLOG_METRIC}" AND '
        'resource.labels.subscription_id="adder-tasks-dead-letter"'
    ]
    assert query["interval.endTime"] == ["2026-11-27T12:00:00Z"]
    assert query["interval.startTime"] == ["2026-11-27T11:45:00Z"]


def test_off_the_emulator_the_backend_counts_dead_letters_with_monitoring(
    monitoring: str,
) -> None:
    # GIVEN a backend on Google Cloud (not the emulator) and a Monitoring sample of 4
    _Monitoring.answer = (200, {"timeSeries": [{"points": [point("2026-11-27T11:59:00Z", "4")]}]})
    backend = GcpJobBackend(
        dead_letter_subscription=SUBSCRIPTION,
        on_emulator=False,
        monitoring_session=requests.Session,
        monitoring_endpoint=monitoring,
    )
    # WHEN the dead letters are counted / THEN Monitoring's sample is the count (no pull)
    assert backend.dead_letter_count() == 4
    assert len(_Monitoring.seen) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((200, {}), "no pubsub.googleapis.com/subscription/num_undelivered_messages sample"),
        (
            (403, {"error": {"message": "Permission monitoring.timeSeries.list denied"}}),
            "Cloud Monitoring answered 403: Permission monitoring.timeSeries.list denied",
        ),
        ((200, {"timeSeries": [{"points": [{"value": {}}]}]}), "unexpected Cloud Monitoring"),
    ],
    ids=["no-samples", "forbidden", "malformed"],
)
def test_backlog_is_unknown_when_monitoring_cannot_say(
    monitoring: str, answer: tuple[int, dict[str, Any]], expected: str
) -> None:
    _Monitoring.answer = answer
    backlog = dead_letter_backlog(SUBSCRIPTION, requests.Session(), endpoint=monitoring, now=NOW)
    assert backlog.count is None
    assert backlog.detail.startswith(expected)
    backend = GcpJobBackend(
        dead_letter_subscription=SUBSCRIPTION,
        on_emulator=False,
        monitoring_session=requests.Session,
        monitoring_endpoint=monitoring,
    )
    assert backend.dead_letter_count() is None
