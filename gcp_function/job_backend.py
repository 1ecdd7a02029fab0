"""The Google Cloud :class:`~core.ops.backend.JobBackend`: tasks published to a Pub/Sub topic,
dead letters pulled from the dead-letter subscription, results listed and read in a Cloud
Storage bucket. Every Google error is said by :mod:`gcp_function.job_errors`.

Importing this module imports no SDK: the methods import what they use.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import os
from typing import TYPE_CHECKING, Any

from core.errors import CloudUnavailableError, ConfigError
from core.ops.backend import DeadLetter, JobBackend, Refused, record_from_key
from core.ops.problems import Problem, one_line, problem_error
from gcp_function.job_backlog import MONITORING_ENDPOINT, BacklogReader
from gcp_function.job_errors import (
    about_the_message,
    bucket_resource,
    describe,
    is_permanent,
    is_transient,
    subscription_resource,
    topic_resource,
    translate_error,
)
from gcp_function.jobs import PUBLISH_MAX_MESSAGES, ways

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from core.ops.backend import RecordInfo
    from core.ops.problems import Resource

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
deadline: with one second it answers at once (``return_immediately`` is deprecated)."""
EMULATOR_COUNT_LIMIT = 10_000
"""Dead letters counted on the emulator at most (by pulling them); beyond it: unknown."""
ACK_CHUNK = 500
"""Ack ids per acknowledge or modify_ack_deadline request."""


class GcpJobBackend(JobBackend):
    """A job's Pub/Sub topic, dead-letter subscription and results bucket.

    Clients are given (``open_backend`` builds them): ``publisher`` (``PublisherClient``),
    ``subscriber`` (``SubscriberClient``) for the dead letters, ``storage``
    (``storage.Client``) for the results; a call that needs a missing one is a ConfigError.
    ``on_emulator`` (default: ``$PUBSUB_EMULATOR_HOST`` is set): see :meth:`dead_letter_count`.
    """

    max_batch_messages = PUBLISH_MAX_MESSAGES
    max_batch_bytes = 9_000_000
    max_concurrency = 16
    max_fetch_concurrency = 10
    """The storage client's HTTP pool (requests' default of 10 connections)."""

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
        self.pubsub_emulator = os.environ.get("PUBSUB_EMULATOR_HOST") or None
        self.storage_emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
        self.on_emulator = bool(self.pubsub_emulator) if on_emulator is None else on_emulator
        self._backlog = BacklogReader(monitoring_session, monitoring_endpoint, CALL_TIMEOUT)
        self._owns_storage = owns_storage
        self._publish_retry = retry
        self._reached: set[str] = set()
        """The services that answered once: until then a connection error is a wrong address."""
        self.queue_label = f"Pub/Sub topic {topic}" if topic else "the Pub/Sub topic"
        where = f"{self.prefix}/" if self.prefix else ""
        self.results_label = f"gs://{bucket}/{where}" if bucket else "the results bucket"

    def _error(self, exc: BaseException, resource: str) -> ConfigError | CloudUnavailableError:
        """``exc`` of a call to ``resource``: ``topic``, ``subscription`` or ``bucket``."""
        service = "storage" if resource == "bucket" else "pubsub"
        return translate_error(exc, self._resource(resource), reached=service in self._reached)

    def _resource(self, name: str) -> Resource:
        if name == "topic":
            return topic_resource(self.topic, self.pubsub_emulator)
        if name == "subscription":
            return subscription_resource(self.dead_letter_subscription, self.pubsub_emulator)
        return bucket_resource(self.bucket, self.storage_emulator)

    def _retry(self, service: str) -> Any:
        """No retry until the service answered once (an unreachable endpoint fails at once),
        then the SDK's retry of transient errors, bounded."""
        if service not in self._reached:
            return None
        if service == "storage":
            from google.cloud.storage.retry import DEFAULT_RETRY  # type: ignore[import-untyped]

            return DEFAULT_RETRY.with_timeout(RETRY_SECONDS)
        return _transient_retry(initial=0.2, maximum=2.0, seconds=RETRY_SECONDS)

    def _need(self, client: Any, name: str, what: str) -> Any:
        if client is None or not getattr(self, name):
            raise ConfigError(f"{what} needs {ways(name)}")
        return client

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
            raise self._error(exc, "topic") from None
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
        retry = self._publish_retry
        if retry is None:
            retry = _transient_retry(initial=0.1, maximum=10.0, seconds=PUBLISH_RETRY_SECONDS)
        refused: list[Refused] = []
        futures: list[tuple[int, Any]] = []
        for index, body in enumerate(bodies):
            try:
                future = publisher.publish(self.topic, body, retry=retry, timeout=CALL_TIMEOUT * 3)
            except Exception as exc:  # refused before sending: too large, client stopped
                refused.append(_refusal(index, exc))
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
            if not about_the_message(error):
                problem = self._error(error, "topic")
                if isinstance(problem, ConfigError):
                    raise problem
            refused.append(_refusal(index, error))
        return sorted(refused, key=lambda refusal: refusal.index)

    def list_records(self) -> Iterator[RecordInfo]:
        """``{prefix}/{name}.out|.err`` objects: one list call per page of 1000 names."""
        storage = self._need(self.storage, "bucket", "reading results")
        start = f"{self.prefix}/" if self.prefix else None
        try:  # (an exception of the caller's loop is not thrown into this generator)
            for page in storage.list_blobs(
                self.bucket,
                prefix=start,
                fields="items(name,size,md5Hash),nextPageToken",
                page_size=1000,
                timeout=CALL_TIMEOUT,
                retry=self._retry("storage"),
            ).pages:
                found = [
                    record_from_key(
                        blob.name, self.prefix, int(blob.size or 0), _md5_hex(blob.md5_hash)
                    )
                    for blob in page
                ]
                self._reached.add("storage")
                yield from (record for record in found if record is not None)
        except Exception as exc:
            raise self._error(exc, "bucket") from None

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
            detail = f"{record.key} is gone, deleted since it was listed?"
            raise problem_error(Problem.RETRY, self._resource("bucket"), detail) from None
        except Exception as exc:
            raise self._error(exc, "bucket") from None
        self._reached.add("storage")
        return data

    def dead_letter_count(self) -> int | None:
        """Messages on the dead-letter subscription now; None when that cannot be known.

        On Google Cloud: Cloud Monitoring's ``num_undelivered_messages`` (Pub/Sub has no count
        call), see :mod:`gcp_function.job_backlog`. The emulator has no Monitoring, so there
        the messages are pulled and handed straight back (``modify_ack_deadline`` 0): exact
        when nothing else consumes the subscription, and nothing is lost; unknown beyond
        ``EMULATOR_COUNT_LIMIT``. Never on the real service: a pull is billed and raises each
        message's delivery count.
        """
        if not self.dead_letter_subscription:
            return None
        if self.on_emulator:
            return self._count_by_pulling()
        return self._backlog.count(self.dead_letter_subscription)

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
            raise self._error(exc, "subscription") from None
        self._reached.add("pubsub")
        return [
            DeadLetter(bytes(received.message.data), received.ack_id)
            for received in response.received_messages
        ]

    def delete_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Acknowledge ``letters``: they leave the dead-letter subscription for good."""
        self._settle(letters, "acknowledge", {})

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """``modify_ack_deadline`` 0: ``letters`` can be pulled again at once."""
        self._settle(letters, "modify_ack_deadline", {"ack_deadline_seconds": 0})

    def _settle(self, letters: Sequence[DeadLetter], call: str, extra: dict[str, Any]) -> None:
        subscriber = self._need(self.subscriber, "dead_letter_subscription", "dead letters")
        ack_ids = [str(letter.handle) for letter in letters]
        for start in range(0, len(ack_ids), ACK_CHUNK):
            request = {
                "subscription": self.dead_letter_subscription,
                "ack_ids": ack_ids[start : start + ACK_CHUNK],
                **extra,
            }
            try:
                getattr(subscriber, call)(
                    request=request, timeout=CALL_TIMEOUT, retry=self._retry("pubsub")
                )
            except Exception as exc:
                raise self._error(exc, "subscription") from None

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


def _refusal(index: int, exc: BaseException) -> Refused:
    if isinstance(exc, concurrent.futures.TimeoutError):
        return Refused(index, f"no answer from Pub/Sub in {PUBLISH_WAIT_SECONDS:.0f}s", retry=True)
    return Refused(index, one_line(describe(exc)), retry=not is_permanent(exc))


def _transient_retry(initial: float, maximum: float, seconds: float) -> Any:
    """A ``Retry`` of what another try may fix, backoff ``initial``-``maximum`` s, bounded."""
    from google.api_core import retry

    return retry.Retry(
        initial=initial, maximum=maximum, multiplier=2.0, timeout=seconds, predicate=is_transient
    )


def _md5_hex(md5_base64: str | None) -> str | None:
    if not md5_base64:
        return None
    try:
        return base64.b64decode(md5_base64, validate=True).hex()
    except (binascii.Error, ValueError):
        return None
