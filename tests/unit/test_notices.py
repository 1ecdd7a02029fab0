"""The termination-notice pollers against a loopback metadata server speaking each format.

:class:`~tests.support.metadata_server.MetadataServer` serves each format and switches to "a
notice is out" when a test says so. No timing assertions: every wait is on an event, bounded
only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import io
import json
import threading
from typing import TYPE_CHECKING

import pytest

from core.worker.logs import JsonLines
from core.worker.notices import (
    GCP_PREEMPTION_WINDOW_SECONDS,
    AzureNoticePoller,
    Ec2NoticePoller,
    GceNoticePoller,
    MetadataError,
    Notice,
    NoticeWatcher,
    notice_poller,
)
from tests.support.metadata_server import WAIT, MetadataServer, fixed_clock
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    with MetadataServer() as server:
        yield server


# --- AWS ------------------------------------------------------------------------------------


def test_aws_no_notice_while_instance_action_is_404(metadata: MetadataServer) -> None:
    # GIVEN an IMDSv2 with nothing planned / WHEN polled
    poller = Ec2NoticePoller(metadata.url, clock=fixed_clock)
    # THEN no notice, and every read carried the session token from a PUT with a TTL
    assert poller.poll() is None
    puts = [r for r in metadata.requests if r[0] == "PUT"]
    assert len(puts) == 1
    assert puts[0][2]["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    gets = [r for r in metadata.requests if r[0] == "GET"]
    assert {r[1] for r in gets} == {
        "/latest/meta-data/spot/instance-action",
        "/latest/meta-data/autoscaling/target-lifecycle-state",
    }
    assert all(r[2]["x-aws-ec2-metadata-token"] == "token-1" for r in gets)


def test_aws_spot_interruption_gives_its_action_and_the_time_left(
    metadata: MetadataServer,
) -> None:
    # GIVEN a Spot interruption two minutes from the (fixed) clock
    metadata.notice("spot")
    # WHEN polled / THEN the notice has the action and exactly those two minutes
    notice = Ec2NoticePoller(metadata.url, clock=fixed_clock).poll()
    assert notice is not None
    assert (notice.source, notice.action, notice.window_seconds) == ("aws-spot", "terminate", 120)


def test_aws_autoscaling_termination_is_a_notice(metadata: MetadataServer) -> None:
    poller = Ec2NoticePoller(metadata.url, clock=fixed_clock)
    # GIVEN an instance in service / THEN no notice
    assert poller.poll() is None
    # WHEN its group takes it out / THEN a notice
    metadata.notice("autoscaling")
    notice = poller.poll()
    assert notice is not None
    assert (notice.source, notice.action) == ("aws-autoscaling", "Terminated")


def test_aws_expired_token_is_renewed_once(metadata: MetadataServer) -> None:
    # GIVEN a poller holding a token the service no longer accepts
    poller = Ec2NoticePoller(metadata.url, clock=fixed_clock)
    assert poller.poll() is None
    metadata.expire_token()
    # WHEN polled again / THEN it gets a new token and reads on
    assert poller.poll() is None
    assert metadata.tokens_issued == 2


def test_aws_unexpected_status_is_an_error_not_a_notice(metadata: MetadataServer) -> None:
    # GIVEN a service that refuses the token request (IMDS turned off, say)
    poller = Ec2NoticePoller(metadata.url + "/nothing-here", clock=fixed_clock)
    # THEN polling raises (the watcher logs it and tries again) rather than inventing one
    with pytest.raises(MetadataError):
        poller.poll()


# --- GCP ------------------------------------------------------------------------------------


def test_gcp_preemption_wakes_a_hanging_get(metadata: MetadataServer) -> None:
    # GIVEN a poller that has read the value once (FALSE) and its ETag
    poller = GceNoticePoller(metadata.url)
    assert poller.poll() is None
    # WHEN its next poll hangs on wait_for_change and the VM is preempted meanwhile
    answers: list[Notice | None] = []
    thread = threading.Thread(target=lambda: answers.append(poller.poll()))
    thread.start()
    assert metadata.served_quiet.wait(WAIT)  # the hanging GET is in (2nd quiet answer due)
    metadata.notice("gcp")
    thread.join(WAIT)
    # THEN that poll answers with the preemption, 30 seconds to go
    [notice] = answers
    assert notice is not None
    assert (notice.source, notice.window_seconds) == (
        "gcp-preemption",
        GCP_PREEMPTION_WINDOW_SECONDS,
    )
    waits = [r for r in metadata.requests if "wait_for_change=true" in r[1]]
    assert waits
    assert all(r[2]["metadata-flavor"] == "Google" and "last_etag=" in r[1] for r in waits)


def test_gcp_already_preempted_is_seen_on_the_first_read(metadata: MetadataServer) -> None:
    metadata.notice("gcp")
    notice = GceNoticePoller(metadata.url).poll()
    assert notice is not None
    assert notice.action == "preempted"


# --- Azure ----------------------------------------------------------------------------------


def test_azure_preempt_event_gives_the_time_to_not_before(metadata: MetadataServer) -> None:
    poller = AzureNoticePoller(metadata.url, clock=fixed_clock)
    # GIVEN no scheduled event / THEN no notice
    assert poller.poll() is None
    # WHEN a Preempt event is scheduled 30 s from now
    metadata.notice("azure")
    notice = poller.poll()
    # THEN the notice names the event and the 30 s to its NotBefore
    assert notice is not None
    assert (notice.source, notice.action, notice.window_seconds) == (
        "azure-scheduled-event",
        "Preempt",
        30,
    )
    assert notice.detail == "602d9444-d2cd-49c7-8624-8643e7171297"
    assert all(r[2].get("metadata") == "true" for r in metadata.requests)


def test_azure_acknowledging_the_notice_posts_start_requests(metadata: MetadataServer) -> None:
    # GIVEN a Preempt notice / WHEN acknowledged (the worker does it after draining)
    metadata.notice("azure")
    notice = AzureNoticePoller(metadata.url, clock=fixed_clock).poll()
    assert notice is not None and notice.acknowledge is not None
    notice.acknowledge()
    # THEN Azure got StartRequests with the event's id
    assert metadata.started == [{"StartRequests": [{"EventId": notice.detail}]}]


@pytest.mark.parametrize(
    ("event_type", "resources", "is_notice"),
    [
        ("Terminate", [], True),
        ("Preempt", ["this-vm"], True),
        ("Preempt", ["another-vm"], False),
        ("Reboot", [], False),
        ("Freeze", ["this-vm"], False),
    ],
)
def test_azure_only_preempt_and_terminate_of_this_vm_count(
    metadata: MetadataServer, event_type: str, resources: list[str], is_notice: bool
) -> None:
    metadata.azure_event_type = event_type
    metadata.azure_resources = resources
    metadata.notice("azure")
    notice = AzureNoticePoller(metadata.url, clock=fixed_clock).poll()
    assert (notice is not None) is is_notice


# --- the watcher ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["spot", "gcp", "azure"])
def test_watcher_hands_over_a_notice_served_mid_run(metadata: MetadataServer, kind: str) -> None:
    # GIVEN a watcher polling a service that had nothing to say at first
    provider = {"spot": "aws", "gcp": "gcp", "azure": "azure"}[kind]
    poller = notice_poller(provider, metadata.url)
    poller.interval_seconds = 0.01
    seen: list[Notice] = []
    got = threading.Event()

    def on_notice(notice: Notice) -> None:
        seen.append(notice)
        got.set()

    watcher = NoticeWatcher(poller, on_notice, JsonLines("job", io.StringIO()))
    watcher.start()
    assert metadata.served_quiet.wait(WAIT)
    # WHEN the notice goes out mid-run
    metadata.notice(kind)
    # THEN the watcher hands exactly one notice over, and stops polling
    assert got.wait(WAIT)
    watcher.stop()
    assert len(seen) == 1
    assert seen[0].source.startswith(provider)


def test_watcher_logs_an_unreadable_service_once_and_keeps_trying() -> None:
    # GIVEN nothing listening at the metadata address
    poller = Ec2NoticePoller(f"http://127.0.0.1:{free_port()}", interval_seconds=0.01)
    polls = threading.Event()
    calls = 0
    original = poller.poll

    def counting() -> Notice | None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            polls.set()
        return original()

    poller.poll = counting  # type: ignore[method-assign]
    out = io.StringIO()
    watcher = NoticeWatcher(poller, lambda n: None, JsonLines("job-7", out), retry_seconds=0.01)
    # WHEN it has tried three times
    watcher.start()
    assert polls.wait(WAIT)
    watcher.stop()
    # THEN one warning line (with the job id), not one per try
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1
    assert (lines[0]["level"], lines[0]["job_id"]) == ("WARNING", "job-7")
    assert "cannot read termination notices" in lines[0]["message"]
