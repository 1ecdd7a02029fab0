"""The Google Cloud job backend for ``adder submit|watch|fetch|redrive|status gcp``: Pub/Sub
and Cloud Storage.

Tasks are published to the task topic with the client library's batching (up to 1000
messages, 5 MB or 0.1 s per request); dead letters are pulled from the dead-letter
subscription; results are listed and read in the results bucket. ``PUBSUB_EMULATOR_HOST``
and ``STORAGE_EMULATOR_HOST`` point the clients at local emulators (anonymous credentials).
Every Google error becomes a :class:`~core.errors.ConfigError` or a
:class:`~core.errors.CloudUnavailableError` in one place, :func:`cloud_error`.

Importing this module imports no SDK; the Google clients are imported by :func:`open_backend`.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.clouds import CLOUDS
from core.errors import AdderError, CloudUnavailableError, ConfigError, ProviderUnavailableError
from core.ops.backend import DeadLetter, JobBackend, Refused, record_from_key
from core.ops.target import Setting

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from core.ops.backend import RecordInfo
    from core.ops.target import Target

SETTINGS = (
    Setting(
        "project",
        "the Google Cloud project ($GOOGLE_CLOUD_PROJECT)",
        output="project_id",
        config="config.project",
        env=("GOOGLE_CLOUD_PROJECT",),
    ),
    Setting(
        "topic",
        "the task topic: projects/P/topics/T, or T with the project",
        output="topic_id",
        config="queue_name",
    ),
    Setting(
        "dead_letter_subscription",
        "the dead-letter subscription: projects/P/subscriptions/S, or S with the project",
        output="dead_letter_subscription",
        config="config.dead_letter_subscription",
    ),
    Setting("bucket", "the results bucket", output="results_bucket", config="result_bucket"),
    Setting("prefix", "the results prefix", output="results_prefix", config="result_prefix"),
)

INSTALL_HINT = CLOUDS["gcp"].install_hint
PUBSUB_ENDPOINT = "pubsub.googleapis.com"
STORAGE_ENDPOINT = "storage.googleapis.com"
MONITORING_ENDPOINT = "https://monitoring.googleapis.com"
BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
LOOKBACK = datetime.timedelta(minutes=15)
LOGIN_HINT = "run gcloud auth application-default login"

PUBLISH_MAX_MESSAGES = 1000
"""Messages per publish request: the Pub/Sub API's own maximum (the library default is 100).
Tasks are ~100 bytes, so a full request is about 100 KB: one request per thousand tasks."""
PUBLISH_MAX_BYTES = 5_000_000
"""Bytes per publish request: half the API's 10 MB limit, reached first only by large tasks."""
PUBLISH_MAX_LATENCY = 0.1
"""Seconds a request waits to fill. A batch of the driver is handed over at once, so requests
fill by count; only a partial one waits, once."""
MAX_REQUEST_BYTES = 10_000_000
"""The largest publish request Pub/Sub takes: a message must fit in one with its topic."""
CALL_TIMEOUT = 10.0
"""Seconds one RPC or HTTP request may take."""
RETRY_SECONDS = 20.0
"""Seconds the SDK may spend retrying one transient failure, once the service was reached."""
PUBLISH_RETRY_SECONDS = 60.0
"""Seconds the publisher may retry one request (the library default is 600 s, which hides an
outage from a person at a terminal; after that the driver's own rounds take over)."""
PUBLISH_WAIT_SECONDS = PUBLISH_RETRY_SECONDS + 30.0
"""Seconds to wait for one publish future before counting the message as not confirmed."""
PULL_TIMEOUT = 3.0
"""Seconds one pull of the dead-letter subscription waits for messages (an empty pull of the
real service may wait until this deadline: that is "none now")."""
EMULATOR_PULL_TIMEOUT = 1.0
"""The same on the emulator, which holds an empty pull open until one second before its
deadline: with one second it answers at once. (``return_immediately`` would too, but it is
deprecated, and the client warns on every call.)"""
EMULATOR_COUNT_LIMIT = 10_000
"""Dead letters counted on the emulator at most (by pulling them); beyond it: unknown."""

FULL_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/(?P<kind>topics|subscriptions)/(?P<name>[^/]+)$"
)
BARE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")


# --------------------------------------------------------------------------- errors


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ways(setting: str) -> str:
    """Every way to give ``setting``, for a message that says it is wrong."""
    found = next(s for s in SETTINGS if s.name == setting)
    ways = [found.flag]
    if found.output:
        ways.append(f"the stack's {found.output}")
    if found.config:
        ways.append(f"the config's {found.config}")
    return ", ".join(ways)


@dataclass(frozen=True)
class Resource:
    """What a call touched, for the one line its failure becomes."""

    what: str
    """E.g. ``Pub/Sub topic projects/p/topics/t`` or ``bucket gs://b``."""
    setting: str
    """The setting that names it (for "check --topic, ...")."""
    role: str
    """The IAM role the call needs."""
    endpoint: str
    """Where the service is (host name or emulator address)."""


def _connection_errors() -> tuple[type[BaseException], ...]:
    import requests
    from google.api_core import exceptions
    from google.auth.exceptions import TransportError

    return (
        exceptions.ServiceUnavailable,
        exceptions.DeadlineExceeded,
        requests.ConnectionError,
        requests.Timeout,
        TransportError,
        OSError,
        concurrent.futures.TimeoutError,
    )


def _from_sdk(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.split(".")[0] in {"google", "grpc", "requests", "urllib3", "proto"}


def cloud_error(exc: BaseException, resource: Resource, *, reached: bool = True) -> Exception:
    """The project error a Google (or network) exception stands for; ``exc`` itself if it is
    none of those (a bug).

    ConfigError (exit 2, one line naming the fix): no credentials or credentials refused, no
    such topic, subscription or bucket, access denied, a bad name, and an endpoint that cannot
    be reached when it was never reached (``reached`` False): a wrong emulator address or no
    network. CloudUnavailableError for the rest (5xx, throttling, a dropped connection later).
    The exception's own text is never shown for credential errors.
    """
    from google.api_core import exceptions

    if isinstance(exc, exceptions.RetryError) and exc.cause is not None:
        return cloud_error(exc.cause, resource, reached=reached)
    problem = _config_problem(exc, resource, reached=reached)
    if problem is not None:
        return ConfigError(problem)
    sdk = isinstance(exc, (exceptions.GoogleAPIError, *_connection_errors())) or _from_sdk(exc)
    if sdk or not isinstance(exc, Exception):
        return CloudUnavailableError(f"{resource.what}: {type(exc).__name__}: {_first_line(exc)}")
    return exc


def _config_problem(exc: BaseException, resource: Resource, *, reached: bool) -> str | None:
    """The one line of a failure no retry can fix, or None."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError

    refused = f"Google refused the credentials ({type(exc).__name__}): {LOGIN_HINT}"
    rules: list[tuple[type[BaseException], str]] = [
        (DefaultCredentialsError, f"no Google credentials: {LOGIN_HINT}"),
        (exceptions.Unauthorized, refused),
        (
            exceptions.NotFound,
            f"{resource.what} does not exist: check {_ways(resource.setting)} (and the project)",
        ),
        (
            exceptions.Forbidden,
            f"access denied to {resource.what}: the credentials need {resource.role} "
            f"({_first_line(exc, 200)})",
        ),
        (exceptions.BadRequest, f"{resource.what} was refused: {_first_line(exc, 200)}"),
    ]
    for kind, text in rules:
        if isinstance(exc, kind):
            return text
    if isinstance(exc, GoogleAuthError) and not isinstance(exc, TransportError):
        return refused
    if not reached and isinstance(exc, _connection_errors()):
        return (
            f"cannot reach {resource.endpoint} for {resource.what} ({type(exc).__name__}: "
            f"{_first_line(exc, 160)}): check the network, or the emulator address"
        )
    return None


def is_permanent(error: BaseException) -> bool:
    """True for publish errors that another try gives the same answer to."""
    from google.api_core import exceptions

    return isinstance(
        error,
        exceptions.NotFound
        | exceptions.PermissionDenied
        | exceptions.Unauthenticated
        | exceptions.InvalidArgument
        | ValueError
        | TypeError,
    )


def publish_retry(seconds: float = PUBLISH_RETRY_SECONDS) -> Any:
    """The publisher's retry of one request: transient gRPC errors, backoff 0.1-10 s, bounded."""
    from google.api_core import retry

    return retry.Retry(
        initial=0.1, maximum=10.0, multiplier=2.0, timeout=seconds, predicate=_transient()
    )


def call_retry(seconds: float = RETRY_SECONDS) -> Any:
    """The retry of one pull/ack call once the service was reached."""
    from google.api_core import retry

    return retry.Retry(
        initial=0.2, maximum=2.0, multiplier=2.0, timeout=seconds, predicate=_transient()
    )


def _transient() -> Callable[[Exception], bool]:
    from google.api_core import exceptions, retry

    predicate: Callable[[Exception], bool] = retry.if_exception_type(
        exceptions.Aborted,
        exceptions.Cancelled,
        exceptions.DeadlineExceeded,
        exceptions.InternalServerError,
        exceptions.ResourceExhausted,
        exceptions.ServiceUnavailable,
        exceptions.Unknown,
    )
    return predicate


# --------------------------------------------------------------------------- names


def full_name(kind: str, value: str, project: str | None, setting: str) -> str:
    """``projects/P/{kind}/NAME`` from a full path, or a bare name and the project."""
    match = FULL_NAME.match(value)
    if match is not None:
        if match["kind"] != kind:
            raise ConfigError(f"{Setting(setting, '').flag} {value!r} is not a {kind[:-1]} path")
        return value
    if "/" in value or not BARE_NAME.match(value):
        raise ConfigError(
            f"{Setting(setting, '').flag} {value!r}: give projects/PROJECT/{kind}/NAME, or a "
            f"{kind[:-1]} name (3-255 letters, digits and -._~%+, starting with a letter)"
        )
    if not project:
        raise ConfigError(
            f"the bare {kind[:-1]} name {value!r} needs the project: give --project, "
            f"--stack DIR (terraform output project_id), --config FILE (config.project) or "
            f"$GOOGLE_CLOUD_PROJECT, or the full projects/PROJECT/{kind}/{value}"
        )
    return f"projects/{project}/{kind}/{value}"


def _md5_hex(md5_base64: str | None) -> str | None:
    if not md5_base64:
        return None
    try:
        return base64.b64decode(md5_base64, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


# --------------------------------------------------------------------------- monitoring


@dataclass(frozen=True)
class Backlog:
    """A subscription's undelivered messages: ``count`` is None when it could not be read."""

    count: int | None
    detail: str


def dead_letter_backlog(
    subscription: str,
    session: Any,
    *,
    endpoint: str = MONITORING_ENDPOINT,
    now: datetime.datetime | None = None,
) -> Backlog:
    """The latest ``num_undelivered_messages`` of ``subscription`` from Cloud Monitoring.

    Pub/Sub has no call that returns a backlog; Monitoring samples it every minute (a few
    minutes late). ``session`` is a ``requests``-like session that adds credentials
    (``AuthorizedSession``; needs ``roles/monitoring.viewer``). Never raises: what cannot be
    read is an unknown count, with the reason.
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
        response = session.get(url, params=params, timeout=CALL_TIMEOUT)
    except Exception as exc:  # network or credential errors: unknown, not a failure
        return Backlog(None, f"{type(exc).__name__}: {_first_line(exc, 160)}")
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
        message = str(response.text)[:200]
    return _first_line(ValueError(str(message)), 200)


# --------------------------------------------------------------------------- backend


class GcpJobBackend(JobBackend):
    """A job's Pub/Sub topic, dead-letter subscription and results bucket.

    Clients are given (tests inject them; :func:`open_backend` builds them): ``publisher``
    (a ``pubsub_v1.PublisherClient`` with the batch settings above) for ``send_batch``,
    ``subscriber`` (``SubscriberClient``) for the dead letters, ``storage``
    (``storage.Client``) for the results. A call that needs a missing one is a ConfigError.

    ``on_emulator`` (default: ``$PUBSUB_EMULATOR_HOST`` is set) picks how dead letters are
    counted, see :meth:`dead_letter_count`.
    """

    max_batch_messages = PUBLISH_MAX_MESSAGES
    max_batch_bytes = 9_000_000
    max_concurrency = 16

    def __init__(
        self,
        *,
        topic: str | None = None,
        dead_letter_subscription: str | None = None,
        bucket: str | None = None,
        prefix: str = "",
        publisher: Any = None,
        subscriber: Any = None,
        storage: Any = None,
        on_emulator: bool | None = None,
        monitoring_session: Callable[[], Any] | None = None,
        monitoring_endpoint: str = MONITORING_ENDPOINT,
        pubsub_endpoint: str | None = None,
        storage_endpoint: str | None = None,
        owns_storage: bool = False,
        retry: Any = None,
    ) -> None:
        self.topic = topic
        self.dead_letter_subscription = dead_letter_subscription
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.publisher = publisher
        self.subscriber = subscriber
        self.storage = storage
        emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")
        self.on_emulator = bool(emulator_host) if on_emulator is None else on_emulator
        self.pubsub_endpoint = pubsub_endpoint or emulator_host or PUBSUB_ENDPOINT
        self.storage_endpoint = (
            storage_endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or STORAGE_ENDPOINT
        )
        self._monitoring_session = monitoring_session
        self._session: Any = None
        self.monitoring_endpoint = monitoring_endpoint
        self._owns_storage = owns_storage
        self._publish_retry = retry
        self._reached: set[str] = set()
        self.queue_label = f"Pub/Sub topic {topic}" if topic else "the Pub/Sub topic"
        where = f"{self.prefix}/" if self.prefix else ""
        self.results_label = f"gs://{bucket}/{where}" if bucket else "the results bucket"

    # ----------------------------------------------------------------- helpers

    def _topic(self) -> Resource:
        return Resource(
            f"Pub/Sub topic {self.topic}", "topic", "roles/pubsub.publisher", self.pubsub_endpoint
        )

    def _subscription(self) -> Resource:
        return Resource(
            f"Pub/Sub subscription {self.dead_letter_subscription}",
            "dead_letter_subscription",
            "roles/pubsub.subscriber",
            self.pubsub_endpoint,
        )

    def _bucket(self, role: str = "roles/storage.objectViewer") -> Resource:
        return Resource(f"bucket gs://{self.bucket}", "bucket", role, self.storage_endpoint)

    def _error(self, exc: BaseException, resource: Resource, service: str) -> Exception:
        return cloud_error(exc, resource, reached=service in self._reached)

    def _retry(self, service: str) -> Any:
        """No retry until the service answered once (an unreachable endpoint fails at once),
        then the SDK's retry of transient errors, bounded."""
        if service not in self._reached:
            return None
        if service == "storage":
            from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

            return DEFAULT_RETRY.with_timeout(RETRY_SECONDS)
        return call_retry()

    def _need(self, client: Any, name: str, what: str) -> Any:
        if client is None or not getattr(self, name):
            raise ConfigError(f"{what} needs {_ways(name)}")
        return client

    # ----------------------------------------------------------------- topic

    def check_topic(self) -> None:
        """Make sure the topic exists and Pub/Sub answers, within seconds (before sending).

        A caller allowed to publish but not to read the topic's metadata
        (``roles/pubsub.publisher`` alone) gets PermissionDenied here: that proves the
        endpoint and the credentials work, and the publish itself will tell the rest.
        """
        from google.api_core import exceptions

        publisher = self._need(self.publisher, "topic", "sending tasks")
        try:
            publisher.get_topic(topic=self.topic, timeout=CALL_TIMEOUT, retry=None)
        except exceptions.PermissionDenied:
            pass
        except Exception as exc:
            raise self._error(exc, self._topic(), "pubsub") from None
        self._reached.add("pubsub")

    def unsendable(self, body: bytes) -> str | None:
        """Bodies too large for one publish request (10 MB with the topic's name)."""
        overhead = len(self.topic or "") + 32
        if len(body) + overhead > MAX_REQUEST_BYTES:
            return (
                f"a task of {len(body):,} bytes is over Pub/Sub's {MAX_REQUEST_BYTES:,}-byte "
                f"request limit"
            )
        return None

    def send_batch(self, bodies: Sequence[bytes]) -> list[Refused]:
        """Publish every body (the client batches them), then wait for every future.

        A failed future is a :class:`Refused` with ``retry`` when another try may work; a
        missing topic, denied access or refused credentials raise ConfigError.
        """
        publisher = self._need(self.publisher, "topic", "sending tasks")
        retry = self._publish_retry if self._publish_retry is not None else publish_retry()
        refused: list[Refused] = []
        futures: list[tuple[int, Any]] = []
        for index, body in enumerate(bodies):
            try:
                future = publisher.publish(self.topic, body, retry=retry, timeout=CALL_TIMEOUT * 3)
            except Exception as exc:  # refused before sending: too large, client stopped
                refused.append(self._refusal(index, exc))
            else:
                futures.append((index, future))
        failed: list[tuple[int, Exception]] = []
        for index, future in futures:
            try:
                future.result(timeout=PUBLISH_WAIT_SECONDS)
            except Exception as exc:
                failed.append((index, exc))
            else:
                self._reached.add("pubsub")  # (also for the failures of this batch)
        for index, error in failed:
            problem = self._error(error, self._topic(), "pubsub")
            if isinstance(problem, ConfigError) and not _per_message(error):
                raise problem
            refused.append(self._refusal(index, error))
        return sorted(refused, key=lambda refusal: refusal.index)

    def _refusal(self, index: int, exc: BaseException) -> Refused:
        if isinstance(exc, concurrent.futures.TimeoutError):
            reason = f"no answer from Pub/Sub in {PUBLISH_WAIT_SECONDS:.0f}s"
            return Refused(index, reason, retry=True)
        return Refused(
            index, f"{type(exc).__name__}: {_first_line(exc, 200)}", retry=not is_permanent(exc)
        )

    # ----------------------------------------------------------------- results

    def list_records(self) -> Iterator[RecordInfo]:
        """``{prefix}/{name}.out|.err`` objects: one list call per page of 1000 names."""
        storage = self._need(self.storage, "bucket", "reading results")
        start = f"{self.prefix}/" if self.prefix else None
        try:
            pages = storage.list_blobs(
                self.bucket,
                prefix=start,
                fields="items(name,size,md5Hash),nextPageToken",
                page_size=1000,
                timeout=CALL_TIMEOUT,
                retry=self._retry("storage"),
            ).pages
        except Exception as exc:
            raise self._error(exc, self._bucket(), "storage") from None
        while True:
            try:
                page = next(pages, None)
                if page is None:
                    return
                found = [
                    record_from_key(
                        blob.name, self.prefix, int(blob.size or 0), _md5_hex(blob.md5_hash)
                    )
                    for blob in page
                ]
            except Exception as exc:
                raise self._error(exc, self._bucket(), "storage") from None
            self._reached.add("storage")
            yield from (record for record in found if record is not None)

    def read_record(self, record: RecordInfo) -> bytes:
        """The object's bytes (an object deleted since it was listed: CloudUnavailableError)."""
        from google.api_core import exceptions

        storage = self._need(self.storage, "bucket", "reading results")
        try:
            data: bytes = (
                storage.bucket(self.bucket)
                .blob(record.key)
                .download_as_bytes(timeout=CALL_TIMEOUT, retry=self._retry("storage"))
            )
        except exceptions.NotFound:
            raise CloudUnavailableError(
                f"gs://{self.bucket}/{record.key} is gone (deleted since it was listed?)"
            ) from None
        except Exception as exc:
            raise self._error(exc, self._bucket(), "storage") from None
        self._reached.add("storage")
        return data

    # ----------------------------------------------------------------- dead letters

    def dead_letter_count(self) -> int | None:
        """Messages on the dead-letter subscription now; None when that cannot be known.

        On Google Cloud: Cloud Monitoring's ``num_undelivered_messages``, the only source of a
        backlog (Pub/Sub has no count call; sampled every minute, a few minutes late; needs
        ``roles/monitoring.viewer``): unknown when it cannot be read.

        On the emulator (``PUBSUB_EMULATOR_HOST``) there is no Monitoring, and a count is
        what makes ``adder watch`` finish when tasks were dead-lettered, so the messages are
        counted by pulling them all and handing them straight back (``modify_ack_deadline``
        0): exact when nothing else consumes the subscription, cheap for the emulator's sizes,
        and nothing is lost (a redrive running at the same time sees them a moment later).
        Beyond ``EMULATOR_COUNT_LIMIT`` messages the count is unknown (None). Never used on
        the real service: pulling raises each message's delivery count and is billed.
        """
        if not self.dead_letter_subscription:
            return None
        if self.on_emulator:
            return self._count_by_pulling()
        session = self._monitoring()
        if session is None:
            return None
        backlog = dead_letter_backlog(
            self.dead_letter_subscription, session, endpoint=self.monitoring_endpoint
        )
        return backlog.count

    def _count_by_pulling(self) -> int | None:
        pulled: list[DeadLetter] = []
        try:
            while len(pulled) < EMULATOR_COUNT_LIMIT:
                letters = self.receive_dead_letters(PUBLISH_MAX_MESSAGES)
                if not letters:
                    break
                pulled += letters
        finally:
            if pulled:
                self.release_dead_letters(pulled)
        return len(pulled) if len(pulled) < EMULATOR_COUNT_LIMIT else None

    def _monitoring(self) -> Any:
        if self._session is None and self._monitoring_session is not None:
            try:
                self._session = self._monitoring_session()
            except Exception:  # no credentials for Monitoring: the count is unknown
                self._monitoring_session = None
        return self._session

    def receive_dead_letters(self, max_messages: int) -> list[DeadLetter]:
        """Up to ``max_messages`` (at most 1000) dead letters, leased to this caller; [] when
        none came within ``PULL_TIMEOUT``."""
        from google.api_core import exceptions

        subscriber = self._need(self.subscriber, "dead_letter_subscription", "dead letters")
        request = {
            "subscription": self.dead_letter_subscription,
            "max_messages": max(1, min(max_messages, PUBLISH_MAX_MESSAGES)),
        }
        timeout = EMULATOR_PULL_TIMEOUT if self.on_emulator else PULL_TIMEOUT
        try:
            response = subscriber.pull(
                request=request, timeout=timeout, retry=self._retry("pubsub")
            )
        except exceptions.DeadlineExceeded:
            return []  # the real service holds an empty pull open until the deadline
        except Exception as exc:
            raise self._error(exc, self._subscription(), "pubsub") from None
        self._reached.add("pubsub")
        return [
            DeadLetter(bytes(received.message.data), received.ack_id)
            for received in response.received_messages
        ]

    def delete_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Acknowledge ``letters``: they leave the dead-letter subscription for good."""
        subscriber = self._need(self.subscriber, "dead_letter_subscription", "dead letters")
        for chunk in _chunks([str(letter.handle) for letter in letters]):
            try:
                subscriber.acknowledge(
                    request={"subscription": self.dead_letter_subscription, "ack_ids": chunk},
                    timeout=CALL_TIMEOUT,
                    retry=self._retry("pubsub"),
                )
            except Exception as exc:
                raise self._error(exc, self._subscription(), "pubsub") from None

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """``modify_ack_deadline`` 0: ``letters`` can be pulled again at once."""
        subscriber = self._need(self.subscriber, "dead_letter_subscription", "dead letters")
        for chunk in _chunks([str(letter.handle) for letter in letters]):
            try:
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.dead_letter_subscription,
                        "ack_ids": chunk,
                        "ack_deadline_seconds": 0,
                    },
                    timeout=CALL_TIMEOUT,
                    retry=self._retry("pubsub"),
                )
            except Exception as exc:
                raise self._error(exc, self._subscription(), "pubsub") from None

    def close(self) -> None:
        """Flush and stop the publisher; close the channels (and the storage client we made)."""
        closers = []
        if self.publisher is not None:
            closers += [self.publisher.stop, self.publisher.transport.close]
        if self.subscriber is not None:
            closers.append(self.subscriber.close)
        if self.storage is not None and self._owns_storage:
            closers.append(self.storage.close)
        for closer in closers:
            try:
                closer()
            except Exception:  # closing is best effort: the command's answer is already known
                continue


def _per_message(exc: BaseException) -> bool:
    """True for a publish error about the message, not about the topic or the caller."""
    from google.api_core import exceptions

    return isinstance(exc, exceptions.InvalidArgument | ValueError | TypeError)


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- open_backend

NEEDS = {
    "submit": ("topic",),
    "redrive": ("topic", "dead_letter_subscription"),
    "watch": ("bucket",),
    "fetch": ("bucket",),
    "status": ("bucket",),
}
"""The settings each command cannot do without."""


def open_backend(target: Target, command: str) -> JobBackend:
    """The Pub/Sub + Cloud Storage backend of ``target`` (Google clients imported here).

    Builds only the clients ``command`` uses, once, with one set of credentials
    (application-default; anonymous on emulators: ``PUBSUB_EMULATOR_HOST``,
    ``STORAGE_EMULATOR_HOST``). Before a submit or a redrive it checks that the topic exists.
    """
    needs = NEEDS.get(command, ("bucket",))
    for name in needs:
        target.require(name, SETTINGS, f"adder {command} gcp")
    project = target.get("project")
    sends = command in ("submit", "redrive")
    topic = target.get("topic")
    if topic and sends:
        topic = full_name("topics", topic, project, "topic")
    elif topic:  # only named in status lines: as given when it cannot be completed
        with contextlib.suppress(ConfigError):
            topic = full_name("topics", topic, project, "topic")
    subscription = target.get("dead_letter_subscription")
    if subscription and command in ("redrive", "watch", "status"):
        subscription = full_name("subscriptions", subscription, project, "dead_letter_subscription")
    else:
        subscription = None
    bucket = target.get("bucket") if command in ("watch", "fetch", "status") else None
    pubsub_emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    clients = Clients(project, pubsub_emulator, os.environ.get("STORAGE_EMULATOR_HOST"))
    # Dead letters are pulled by a redrive, and counted by pulling on the emulator only
    # (on Google Cloud, Cloud Monitoring counts them: no subscriber, no pull permission).
    pulls = subscription is not None and (command == "redrive" or bool(pubsub_emulator))
    backend = GcpJobBackend(
        topic=topic,
        dead_letter_subscription=subscription,
        bucket=bucket,
        prefix=target.get("prefix") or "",
        publisher=clients.publisher() if sends else None,
        subscriber=clients.subscriber() if pulls else None,
        storage=clients.storage() if bucket else None,
        on_emulator=bool(pubsub_emulator),
        monitoring_session=clients.monitoring_session,
        owns_storage=True,
    )
    if sends:
        try:
            backend.check_topic()
        except AdderError:
            backend.close()
            raise
    return backend


class Clients:
    """The Google clients of one command, sharing one set of credentials.

    ``pubsub`` and ``storage`` are emulator addresses (``PUBSUB_EMULATOR_HOST``,
    ``STORAGE_EMULATOR_HOST``), or None for Google's endpoints with application-default
    credentials. (The Pub/Sub clients read ``PUBSUB_EMULATOR_HOST`` themselves.)
    """

    def __init__(self, project: str | None, pubsub: str | None, storage: str | None) -> None:
        self.project = project
        self.pubsub_emulator = pubsub
        self.storage_emulator = storage
        self._credentials: Any = None

    def _sdk(self, module: str) -> Any:
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError:
            raise ProviderUnavailableError(f"{module} is not installed: {INSTALL_HINT}") from None

    def credentials(self) -> Any:
        """Application-default credentials, found once (ConfigError when there are none)."""
        if self._credentials is None:
            google_auth = self._sdk("google.auth")
            try:
                self._credentials, _ = google_auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            except Exception as exc:
                raise cloud_error(exc, _AUTH) from None
        return self._credentials

    def publisher(self) -> Any:
        """A ``PublisherClient`` with the batch settings of this module."""
        pubsub_v1 = self._sdk("google.cloud.pubsub_v1")
        settings = pubsub_v1.types.BatchSettings(
            max_messages=PUBLISH_MAX_MESSAGES,
            max_bytes=PUBLISH_MAX_BYTES,
            max_latency=PUBLISH_MAX_LATENCY,
        )
        credentials = None if self.pubsub_emulator else self.credentials()
        return self._build(
            lambda: pubsub_v1.PublisherClient(batch_settings=settings, credentials=credentials)
        )

    def subscriber(self) -> Any:
        """A ``SubscriberClient`` (for the dead-letter subscription)."""
        pubsub_v1 = self._sdk("google.cloud.pubsub_v1")
        credentials = None if self.pubsub_emulator else self.credentials()
        return self._build(lambda: pubsub_v1.SubscriberClient(credentials=credentials))

    def storage(self) -> Any:
        """A ``storage.Client``, anonymous on the emulator."""
        storage = self._sdk("google.cloud.storage")
        if self.storage_emulator:
            anonymous = self._sdk("google.auth.credentials").AnonymousCredentials()
            return self._build(
                lambda: storage.Client(
                    project=self.project or "emulator",
                    credentials=anonymous,
                    client_options={"api_endpoint": self.storage_emulator},
                )
            )
        credentials = self.credentials()
        return self._build(lambda: storage.Client(project=self.project, credentials=credentials))

    def monitoring_session(self) -> Any:
        """An authorized ``requests`` session for Cloud Monitoring (not on the emulator)."""
        transport = self._sdk("google.auth.transport.requests")
        return transport.AuthorizedSession(self.credentials())

    @staticmethod
    def _build(make: Callable[[], Any]) -> Any:
        try:
            return make()
        except Exception as exc:
            raise cloud_error(exc, _AUTH) from None


_AUTH = Resource("Google Cloud", "project", "a role on the project", "oauth2.googleapis.com")
