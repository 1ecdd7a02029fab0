"""Termination notices: the instance metadata services say the machine is about to go.

One poller per metadata format, all plain HTTP on the standard library (``urllib``, proxies
ignored: the metadata address is link-local), and a :class:`NoticeWatcher` thread that polls
one of them and hands the first notice to the worker. ``--metadata-url`` replaces the base URL
(the tests serve each format from a loopback server).

AWS (:class:`Ec2NoticePoller`), IMDSv2: a session token from ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds``, sent back as ``X-aws-ec2-metadata-token``; then
``GET /latest/meta-data/spot/instance-action``: 404 while nothing is planned, else
``{"action": "terminate"|"stop"|"hibernate", "time": "2025-01-05T18:02:00Z"}`` about two minutes
ahead (AWS advises checking every 5 seconds), and
``GET /latest/meta-data/autoscaling/target-lifecycle-state``: ``Terminated`` when an Auto Scaling
group is taking the instance out (``GET /latest/meta-data/instance-id`` and, with instance
metadata tags on, ``.../tags/instance/aws:autoscaling:groupName`` name it, for completing the
group's lifecycle action: :meth:`Ec2NoticePoller.instance_metadata`). Sources:
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html,
https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html,
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html,
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/work-with-tags-in-IMDS.html.

GCP (:class:`GceNoticePoller`): ``GET /computeMetadata/v1/instance/preempted`` with
``Metadata-Flavor: Google`` answers ``TRUE`` once a preemptible or Spot VM is being preempted
(the guest then has 30 seconds); ``?wait_for_change=true&last_etag=...`` makes it a hanging
GET that answers when the value changes. Sources:
https://cloud.google.com/compute/docs/instances/create-use-preemptible (detecting preemption),
https://cloud.google.com/compute/docs/metadata/querying-metadata (waiting for changes).

Azure (:class:`AzureNoticePoller`), Scheduled Events:
``GET /metadata/scheduledevents?api-version=2020-07-01`` with ``Metadata: true`` answers
``{"DocumentIncarnation": n, "Events": [{"EventId", "EventType", "Resources", "NotBefore",
...}]}``; ``Preempt`` (a Spot VM evicted, at least 30 seconds ahead) and ``Terminate`` end the
VM. ``NotBefore`` (RFC 1123, empty once started) is when. After draining, the worker approves
the event so Azure need not wait: ``POST`` the same URL with
``{"StartRequests": [{"EventId": "..."}]}``. Source:
https://learn.microsoft.com/en-us/azure/virtual-machines/linux/scheduled-events.

What needs a cloud SDK to tell the source the worker is done (AWS: Auto Scaling's
``CompleteLifecycleAction``) is registered by the cloud's binding with
:meth:`NoticePoller.acknowledge_with`; core never imports an SDK.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import email.utils
import functools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from core.errors import AdderError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from email.message import Message

    from core.worker.logs import JsonLines

AWS_METADATA_URL = "http://169.254.169.254"
GCP_METADATA_URL = "http://metadata.google.internal"
AZURE_METADATA_URL = "http://169.254.169.254"

AWS_AUTOSCALING_SOURCE = "aws-autoscaling"
"""The :attr:`Notice.source` of an Auto Scaling termination (``target-lifecycle-state``)."""

AWS_SPOT_WINDOW_SECONDS = 120.0
"""A Spot interruption notice comes two minutes ahead (used when its ``time`` is unreadable)."""
AWS_AUTOSCALING_WINDOW_SECONDS = 120.0
"""An Auto Scaling group waits for a termination lifecycle hook up to its heartbeat timeout;
give the hook at least this much (the worker drains within it)."""
GCP_PREEMPTION_WINDOW_SECONDS = 30.0
"""Compute Engine stops a preempted VM 30 seconds after the notice."""
AZURE_WINDOW_SECONDS = 30.0
"""A Preempt event's minimum notice (used when ``NotBefore`` is empty or unreadable)."""

IMDS_TOKEN_TTL_SECONDS = 21600
HTTP_TIMEOUT_SECONDS = 2.0
AZURE_FIRST_CALL_TIMEOUT_SECONDS = 120.0
"""The first Scheduled Events call turns the service on and can take up to two minutes."""
GCP_WAIT_SECONDS = 60
"""How long one hanging GET on the GCP metadata server waits for a change."""
ERROR_RETRY_SECONDS = 5.0


class MetadataError(AdderError):
    """The metadata service answered something unusable."""


@dataclass(frozen=True)
class Notice:
    """The machine is going away: stop taking work and finish within ``window_seconds``."""

    source: str
    """``aws-spot``, ``aws-autoscaling``, ``gcp-preemption``, ``azure-scheduled-event`` or
    ``signal``."""
    action: str
    """What will happen, in the source's words (``terminate``, ``Preempt``, ``SIGTERM``...)."""
    window_seconds: float
    """Seconds left when the notice was seen."""
    seen_at: float = field(default_factory=time.monotonic)
    detail: str = ""
    """E.g. the Scheduled Event's id, the time the source gave."""
    acknowledge: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    """Tells the source the worker is done (Azure's StartRequests, Auto Scaling's
    CompleteLifecycleAction); None when there is none. It may raise: the worker logs one line."""

    @property
    def deadline(self) -> float:
        """When the machine goes, on :func:`time.monotonic`'s clock."""
        return self.seen_at + self.window_seconds


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxy: the metadata services answer only on the instance's own link."""


class _Answer:
    def __init__(self, status: int, body: bytes, headers: Message[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def _http(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = HTTP_TIMEOUT_SECONDS,
) -> _Answer:
    """One request; any HTTP status is an answer, a network failure raises OSError."""
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return _Answer(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return _Answer(error.code, error.read(), error.headers)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _seconds_until(when: dt.datetime | None, now: dt.datetime, default: float) -> float:
    if when is None:
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


class NoticePoller(abc.ABC):
    """One metadata format: :meth:`poll` checks once and returns a notice, or None."""

    name: str
    base_url: str
    interval_seconds: float = 5.0
    """Seconds between checks."""

    _acknowledgers: Mapping[str, Callable[[Notice], None]] = MappingProxyType({})

    @abc.abstractmethod
    def poll(self) -> Notice | None:
        """Check once; raise OSError or MetadataError when the service cannot be read."""

    def acknowledge_with(self, source: str, acknowledge: Callable[[Notice], None]) -> None:
        """After draining, call ``acknowledge(notice)`` for a notice from ``source`` that has
        no acknowledgement of its own (how a cloud binding adds an SDK call, e.g. AWS's
        CompleteLifecycleAction, to a notice core reads)."""
        self._acknowledgers = MappingProxyType({**self._acknowledgers, source: acknowledge})

    def with_acknowledgement(self, notice: Notice) -> Notice:
        """``notice``, acknowledged by what :meth:`acknowledge_with` registered for its source."""
        acknowledge = self._acknowledgers.get(notice.source)
        if acknowledge is None or notice.acknowledge is not None:
            return notice
        return dataclasses.replace(notice, acknowledge=functools.partial(acknowledge, notice))


class Ec2NoticePoller(NoticePoller):
    """AWS IMDSv2: Spot interruption (``spot/instance-action``) and Auto Scaling termination
    (``autoscaling/target-lifecycle-state`` = ``Terminated``)."""

    name = "aws"

    def __init__(
        self,
        base_url: str = AWS_METADATA_URL,
        *,
        interval_seconds: float = 5.0,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._token: str | None = None
        self._token_until = 0.0

    def _session_token(self) -> str:
        if self._token is None or time.monotonic() >= self._token_until:
            answer = _http(
                f"{self.base_url}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_SECONDS)},
            )
            if answer.status != 200 or not answer.body.strip():
                raise MetadataError(f"IMDSv2 token request answered HTTP {answer.status}")
            self._token = answer.body.decode("ascii", "replace").strip()
            self._token_until = time.monotonic() + IMDS_TOKEN_TTL_SECONDS * 0.8
        return self._token

    def _get(self, path: str) -> _Answer:
        for _ in range(2):
            answer = _http(
                f"{self.base_url}{path}",
                headers={"X-aws-ec2-metadata-token": self._session_token()},
            )
            if answer.status != 401:  # 401: the token expired; get another once
                return answer
            self._token = None
        return answer

    def poll(self) -> Notice | None:
        answer = self._get("/latest/meta-data/spot/instance-action")
        if answer.status == 200:
            return self._spot_notice(answer.body)
        if answer.status != 404:
            raise MetadataError(f"spot/instance-action answered HTTP {answer.status}")
        answer = self._get("/latest/meta-data/autoscaling/target-lifecycle-state")
        if answer.status == 200 and answer.body.strip() == b"Terminated":
            return Notice(AWS_AUTOSCALING_SOURCE, "Terminated", AWS_AUTOSCALING_WINDOW_SECONDS)
        if answer.status not in (200, 404):  # 404: not in an Auto Scaling group
            raise MetadataError(f"autoscaling/target-lifecycle-state answered HTTP {answer.status}")
        return None

    def instance_metadata(self, path: str) -> str | None:
        """``/latest/meta-data/<path>`` as text (e.g. ``instance-id``), read with this
        poller's session token; None when the instance has no such entry (404). Raise OSError
        or MetadataError when the service cannot be read."""
        answer = self._get(f"/latest/meta-data/{path.lstrip('/')}")
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise MetadataError(f"{path} answered HTTP {answer.status}")
        return answer.body.decode("utf-8", "replace").strip()

    def _spot_notice(self, body: bytes) -> Notice:
        """An interruption is planned: its action and time (an unreadable document still
        means one is planned, two minutes ahead)."""
        try:
            document = json.loads(body)
            action = str(document.get("action") or "terminate")
            when = str(document.get("time") or "")
            at = dt.datetime.fromisoformat(when) if when else None
        except (ValueError, AttributeError):
            return Notice("aws-spot", "terminate", AWS_SPOT_WINDOW_SECONDS, detail="unreadable")
        window = _seconds_until(at, self._clock(), AWS_SPOT_WINDOW_SECONDS)
        return Notice("aws-spot", action, window, detail=when)


class GceNoticePoller(NoticePoller):
    """GCP: ``instance/preempted`` turns ``TRUE``; watched with hanging GETs."""

    name = "gcp"
    path = "/computeMetadata/v1/instance/preempted"

    def __init__(
        self,
        base_url: str = GCP_METADATA_URL,
        *,
        interval_seconds: float = 0.0,
        wait_seconds: int = GCP_WAIT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.interval_seconds = interval_seconds
        self.wait_seconds = wait_seconds
        self._etag: str | None = None

    def poll(self) -> Notice | None:
        url = f"{self.base_url}{self.path}"
        timeout = HTTP_TIMEOUT_SECONDS
        if self._etag is not None:  # the first read takes the value and its ETag at once
            url += f"?wait_for_change=true&timeout_sec={self.wait_seconds}&last_etag={self._etag}"
            timeout += self.wait_seconds
        answer = _http(url, headers={"Metadata-Flavor": "Google"}, timeout=timeout)
        if answer.status != 200:
            raise MetadataError(f"instance/preempted answered HTTP {answer.status}")
        self._etag = answer.headers.get("ETag") or "0"
        if answer.body.strip().upper() == b"TRUE":
            return Notice("gcp-preemption", "preempted", GCP_PREEMPTION_WINDOW_SECONDS)
        return None


class AzureNoticePoller(NoticePoller):
    """Azure Scheduled Events: a ``Preempt`` or ``Terminate`` event for this VM."""

    name = "azure"
    path = "/metadata/scheduledevents?api-version=2020-07-01"
    event_types = frozenset({"Preempt", "Terminate"})

    def __init__(
        self,
        base_url: str = AZURE_METADATA_URL,
        *,
        interval_seconds: float = 1.0,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._called = False
        self._vm_name: str | None = None
        self._vm_name_read = False

    def poll(self) -> Notice | None:
        timeout = HTTP_TIMEOUT_SECONDS if self._called else AZURE_FIRST_CALL_TIMEOUT_SECONDS
        answer = _http(f"{self.base_url}{self.path}", headers={"Metadata": "true"}, timeout=timeout)
        self._called = True
        if answer.status != 200:
            raise MetadataError(f"scheduledevents answered HTTP {answer.status}")
        try:
            events = json.loads(answer.body).get("Events") or []
        except (ValueError, AttributeError) as exc:
            raise MetadataError(
                f"scheduledevents answered a document that is not JSON: {exc}"
            ) from None
        for event in events:
            if not isinstance(event, dict) or event.get("EventType") not in self.event_types:
                continue
            if not self._concerns_this_vm(event.get("Resources")):
                continue
            event_id = str(event.get("EventId") or "")
            not_before = str(event.get("NotBefore") or "")
            window = _seconds_until(_rfc1123(not_before), self._clock(), AZURE_WINDOW_SECONDS)
            return Notice(
                "azure-scheduled-event",
                str(event["EventType"]),
                window,
                detail=event_id,
                acknowledge=functools.partial(self.start_event, event_id) if event_id else None,
            )
        return None

    def start_event(self, event_id: str) -> None:
        """Approve the event: the worker is done, Azure may go ahead now."""
        body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
        answer = _http(
            f"{self.base_url}{self.path}",
            method="POST",
            headers={"Metadata": "true", "Content-Type": "application/json"},
            data=body,
        )
        if answer.status != 200:
            raise MetadataError(f"approving scheduled event {event_id} answered {answer.status}")

    def _concerns_this_vm(self, resources: object) -> bool:
        """An event lists the VMs it affects; one for other VMs of a set is not ours. When
        the list or this VM's name is unknown, it is taken as ours (draining is safe)."""
        if not isinstance(resources, list) or not resources:
            return True
        name = self._this_vm_name()
        return name is None or name in resources

    def _this_vm_name(self) -> str | None:
        if not self._vm_name_read:
            self._vm_name_read = True
            try:
                answer = _http(
                    f"{self.base_url}/metadata/instance/compute/name"
                    "?api-version=2021-02-01&format=text",
                    headers={"Metadata": "true"},
                )
            except OSError:
                return None
            if answer.status == 200 and answer.body.strip():
                self._vm_name = answer.body.decode("utf-8", "replace").strip()
        return self._vm_name


def _rfc1123(text: str) -> dt.datetime | None:
    if not text.strip():
        return None
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None


POLLERS: dict[str, type[Ec2NoticePoller | GceNoticePoller | AzureNoticePoller]] = {
    "aws": Ec2NoticePoller,
    "gcp": GceNoticePoller,
    "azure": AzureNoticePoller,
}
"""Each cloud's metadata format, by the config's ``provider``."""


def notice_poller(provider: str, base_url: str | None = None) -> NoticePoller:
    """The poller of ``provider``'s metadata service (at ``base_url`` when given)."""
    poller = POLLERS[provider]
    return poller(base_url) if base_url else poller()


class NoticeWatcher:
    """A daemon thread polling one :class:`NoticePoller` until the first notice, which it
    hands to ``on_notice``. An unreadable metadata service is logged once and polled again
    (every ``retry_seconds`` at least): off the cloud, no notice ever comes."""

    def __init__(
        self,
        poller: NoticePoller,
        on_notice: Callable[[Notice], None],
        log: JsonLines,
        *,
        retry_seconds: float = ERROR_RETRY_SECONDS,
    ) -> None:
        self.poller = poller
        self.retry_seconds = retry_seconds
        self._on_notice = on_notice
        self._log = log
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"adder-notices-{poller.name}", daemon=True
        )

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (a hanging GET in flight is left to end on its own)."""
        self._stopped.set()

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                notice = self.poller.poll()
            except (OSError, MetadataError) as exc:
                failures += 1
                if failures == 1:
                    self._log.event(
                        logging.WARNING,
                        f"cannot read termination notices from {self.poller.base_url}: {exc};"
                        f" trying again every {self.retry_seconds:g} s (--no-notices off the"
                        " cloud)",
                        notices=self.poller.name,
                    )
                self._stopped.wait(max(self.poller.interval_seconds, self.retry_seconds))
                continue
            if failures:
                failures = 0
                self._log.event(
                    logging.INFO, "termination notices readable again", notices=self.poller.name
                )
            if notice is not None and not self._stopped.is_set():
                self._on_notice(self.poller.with_acknowledgement(notice))
                return
            self._stopped.wait(self.poller.interval_seconds)
