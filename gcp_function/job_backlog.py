"""A Pub/Sub subscription's backlog from Cloud Monitoring: how ``dead_letter_count`` counts
dead letters on Google Cloud (Pub/Sub itself has no call that returns a backlog).

Talks HTTP through a ``requests``-like session; importing it imports no SDK.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.ops.problems import one_line
from gcp_function.jobs import FULL_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

MONITORING_ENDPOINT = "https://monitoring.googleapis.com"
BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
LOOKBACK = datetime.timedelta(minutes=15)


@dataclass(frozen=True)
class Backlog:
    """A subscription's undelivered messages: ``count`` is None when it could not be read."""

    count: int | None
    detail: str


class BacklogReader:
    """Subscription backlogs through one Monitoring session, made on first use by
    ``make_session`` (None, or a failure to make one, e.g. no credentials: unknown)."""

    def __init__(
        self,
        make_session: Callable[[], Any] | None,
        endpoint: str = MONITORING_ENDPOINT,
        timeout: float = 10.0,
    ) -> None:
        self._make_session = make_session
        self._session: Any = None
        self.endpoint = endpoint
        self.timeout = timeout

    def count(self, subscription: str) -> int | None:
        """The latest backlog of ``subscription``, or None when it cannot be read."""
        if self._session is None and self._make_session is not None:
            try:
                self._session = self._make_session()
            except Exception:  # no credentials for Monitoring: the count is unknown
                self._make_session = None
        if self._session is None:
            return None
        return dead_letter_backlog(
            subscription, self._session, endpoint=self.endpoint, timeout=self.timeout
        ).count


def dead_letter_backlog(
    subscription: str,
    session: Any,
    *,
    endpoint: str = MONITORING_ENDPOINT,
    now: datetime.datetime | None = None,
    timeout: float = 10.0,
) -> Backlog:
    """The latest ``num_undelivered_messages`` of ``subscription`` from Cloud Monitoring.

    Monitoring samples it every minute (a few minutes late). ``session`` is a
    ``requests``-like session that adds credentials (``AuthorizedSession``; needs
    ``roles/monitoring.viewer``). Never raises: what cannot be read is an unknown count,
    with the reason.
    """
    match = FULL_NAME.match(subscription)
    if match is None or match["kind"] != "subscriptions":
        return Backlog(None, f"not a subscription path: {subscription!r}")
    end = now or datetime.datetime.now(datetime.UTC)
    params = {
        "filter": (
            f'metric.type="{BACKLOG_METRIC}" AND resource.labels.subscription_id="{match["name"]}"'
        ),
        "interval.startTime": _rfc3339(end - LOOKBACK),
        "interval.endTime": _rfc3339(end),
    }
    url = f"{endpoint}/v3/projects/{match['project']}/timeSeries"
    try:
        response = session.get(url, params=params, timeout=timeout)
    except Exception as exc:  # network or credential errors: unknown, not a failure
        return Backlog(None, one_line(f"{type(exc).__name__}: {exc}", 160))
    if response.status_code != 200:
        return Backlog(
            None, f"Cloud Monitoring answered {response.status_code}: {_reason(response)}"
        )
    try:
        series = response.json().get("timeSeries") or []
        points = series[0]["points"] if series else []
        latest = max(points, key=lambda point: point["interval"]["endTime"]) if points else None
        if latest is None:
            return Backlog(None, f"no {BACKLOG_METRIC} sample in the last 15 minutes")
        count = int(latest["value"]["int64Value"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return Backlog(None, f"unexpected Cloud Monitoring answer ({type(exc).__name__}: {exc})")
    return Backlog(count, f"Cloud Monitoring sample of {latest['interval']['endTime']}")


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason(response: Any) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    return one_line(message)
