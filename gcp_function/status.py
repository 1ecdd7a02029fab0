"""``adder status gcp``: result counts in the bucket, and the dead-letter backlog if it can be read.

Pub/Sub has no API call that returns a subscription's backlog; Cloud Monitoring's
``pubsub.googleapis.com/subscription/num_undelivered_messages`` metric does, sampled every
minute (a few minutes late). It is read through the Monitoring REST API with the
application-default credentials (needs ``roles/monitoring.viewer``); when that fails the
backlog is reported as unknown, with a command that shows the messages.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.clouds import CLOUDS
from core.errors import AdderError, ConfigError, ProviderUnavailableError
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    import argparse

SUBSCRIPTION = re.compile(r"^projects/(?P<project>[^/]+)/subscriptions/(?P<name>[^/]+)$")
MONITORING_ENDPOINT = "https://monitoring.googleapis.com"
BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
LOOKBACK = datetime.timedelta(minutes=15)
INSTALL_HINT = CLOUDS["gcp"].install_hint


@dataclass(frozen=True)
class ResultCounts:
    """Objects under the prefix: results, error records, anything else."""

    results: int = 0
    errors: int = 0
    other: int = 0


@dataclass(frozen=True)
class Backlog:
    """A subscription's undelivered messages: ``count`` is None when it could not be read."""

    count: int | None
    detail: str


def count_results(client: Any, bucket: str, prefix: str) -> ResultCounts:
    """Count ``.out`` and ``.err`` objects under ``prefix/`` (names only are fetched)."""
    prefix = prefix.strip("/")
    results = errors = other = 0
    blobs = client.list_blobs(
        bucket, prefix=f"{prefix}/" if prefix else None, fields="items(name),nextPageToken"
    )
    for blob in blobs:
        name: str = blob.name
        if name.endswith(RESULT_SUFFIX):
            results += 1
        elif name.endswith(ERROR_SUFFIX):
            errors += 1
        else:
            other += 1
    return ResultCounts(results, errors, other)


def dead_letter_backlog(
    subscription: str,
    session: Any,
    *,
    endpoint: str = MONITORING_ENDPOINT,
    now: datetime.datetime | None = None,
) -> Backlog:
    """The latest ``num_undelivered_messages`` of ``subscription`` from Cloud Monitoring.

    ``session`` is a ``requests``-like session that adds credentials (``AuthorizedSession``).
    """
    match = SUBSCRIPTION.match(subscription)
    if match is None:
        raise ConfigError(
            "--dead-letter-subscription must look like projects/PROJECT/subscriptions/NAME"
        )
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
        response = session.get(url, params=params, timeout=15)
    except Exception as exc:  # network or credential errors: report, do not fail the status
        return Backlog(None, f"{type(exc).__name__}: {exc}")
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
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return Backlog(None, f"unexpected Cloud Monitoring answer ({type(exc).__name__}: {exc})")
    return Backlog(count, f"Cloud Monitoring sample of {latest['interval']['endTime']}")


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason(response: Any) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return str(message)


def monitoring_session() -> Any:
    """An authorized session with the application-default credentials (read-only scope)."""
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/monitoring.read"])
    return AuthorizedSession(credentials)  # type: ignore[no-untyped-call]


def status_from_args(args: argparse.Namespace) -> int:
    """``adder status gcp``: print result counts and, when asked, the dead-letter backlog."""
    try:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import storage  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ProviderUnavailableError(
            f"google-cloud-storage is not installed: {INSTALL_HINT}"
        ) from exc
    where = f"gs://{args.bucket}/{args.prefix.strip('/') + '/' if args.prefix.strip('/') else ''}"
    try:
        counts = count_results(storage.Client(), args.bucket, args.prefix)
    except (GoogleAPIError, GoogleAuthError) as exc:
        raise AdderError(f"cannot list {where}: {exc}") from exc
    line = f"results: {counts.results} .out, {counts.errors} .err under {where}"
    if counts.other:
        line += f" ({counts.other} other objects)"
    print(line)
    if args.dead_letter_subscription:
        try:
            session = monitoring_session()
        except GoogleAuthError as exc:
            backlog = Backlog(None, f"no credentials for Cloud Monitoring: {exc}")
        else:
            backlog = dead_letter_backlog(args.dead_letter_subscription, session)
        print(_backlog_line(args.dead_letter_subscription, backlog))
    return 0


def _backlog_line(subscription: str, backlog: Backlog) -> str:
    if backlog.count is not None:
        return f"dead letters: {backlog.count} in {subscription} ({backlog.detail})"
    return (
        f"dead letters: unknown ({backlog.detail}); to look at them without removing them:"
        f" gcloud pubsub subscriptions pull {subscription} --limit=10"
    )
