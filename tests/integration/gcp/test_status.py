"""``adder status gcp``: result counts from the GCS emulator; the dead-letter backlog reader.

Counting uses the real storage client against gcp-storage-emulator. Cloud Monitoring has no
emulator: the backlog reader is exercised against a loopback HTTP server that answers with
the documented ``timeSeries.list`` shapes (so the query it builds and the parsing are
checked, not Google's answer).
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
from gcp_function.status import BACKLOG_METRIC, dead_letter_backlog

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

SUBSCRIPTION = "projects/test-project/subscriptions/adder-tasks-dead-letter"
NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


def test_status_counts_results_and_errors_under_the_prefix(
    new_bucket: Any, gcs_client: Any, gcs_emulator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 2 results and 1 error record under results/, plus objects elsewhere
    store = GcsResultStore(new_bucket.name, "results", client=gcs_client)
    store.write_result("a", "1")
    store.write_result("b", "2")
    store.write_error(ErrorRecord.for_rejection(InvalidTaskError("empty", "empty"), b""))
    new_bucket.blob("results/notes.txt").upload_from_string("x")
    new_bucket.blob("elsewhere/c.out").upload_from_string("3")
    new_bucket.blob("results-old/d.out").upload_from_string("4")
    # WHEN status runs against the emulator
    import os

    os.environ["STORAGE_EMULATOR_HOST"] = gcs_emulator
    code = main(["status", "gcp", "--bucket", new_bucket.name, "--prefix", "results"])
    # THEN only objects under results/ are counted
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip() == (
        f"results: 2 .out, 1 .err under gs://{new_bucket.name}/results/ (1 other objects)"
    )


def test_status_of_a_missing_bucket_fails(
    gcs_emulator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    os.environ["STORAGE_EMULATOR_HOST"] = gcs_emulator
    code = main(["status", "gcp", "--bucket", "adder-status-missing"])
    assert code == 1
    assert "cannot list gs://adder-status-missing/" in capsys.readouterr().err


def test_status_without_monitoring_credentials_reports_the_backlog_as_unknown(
    new_bucket: Any, gcs_emulator: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no usable application-default credentials (so nothing leaves loopback)
    import os

    os.environ["STORAGE_EMULATOR_HOST"] = gcs_emulator
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "missing.json")
    # WHEN status is asked for the dead-letter backlog
    code = main(
        ["status", "gcp", "--bucket", new_bucket.name, "--dead-letter-subscription", SUBSCRIPTION]
    )
    # THEN counts still print, and the backlog is unknown with a way to look at it
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == f"results: 0 .out, 0 .err under gs://{new_bucket.name}/"
    assert lines[1].startswith("dead letters: unknown (no credentials for Cloud Monitoring")
    assert f"gcloud pubsub subscriptions pull {SUBSCRIPTION} --limit=10" in lines[1]


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
