"""``adder submit gcp``: publish task messages to a Pub/Sub topic with the client's batching.

Every body goes through ``PublisherClient.publish`` (which batches, and retries transient
errors per batch); every future is waited for; bodies whose future failed are published again
in up to ``attempts`` rounds, except after errors that another try cannot fix (no such
topic, no permission, bad argument). Imported only when the command runs.
"""

from __future__ import annotations

import collections
import importlib
import re
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.cli_args import progress_bar
from core.clouds import CLOUDS
from core.errors import AdderError, ConfigError, ProviderUnavailableError
from core.submit import SubmitSummary, message_bodies

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Iterator

TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")
INSTALL_HINT = CLOUDS["gcp"].install_hint

MAX_MESSAGES = 1000
"""Messages per publish request: the Pub/Sub API's own maximum. Tasks are ~100 bytes, so full
batches (about 100 KB) cost one request per thousand tasks instead of the default 100."""
MAX_BYTES = 5_000_000
"""Bytes per request: half the API's 10 MB limit, reached first only by unusually large tasks
(the function accepts up to 16 KB each)."""
MAX_LATENCY = 0.1
"""Seconds a batch waits to fill. A file is read far faster than that, so batches fill by count;
only the last, partial batch waits, once."""
WINDOW = 20_000
"""Messages in flight before the oldest futures are waited for (bounds memory on big files)."""
ATTEMPTS = 3
"""Publish rounds per message: the first, plus re-publishing what failed, twice."""


def publisher_client() -> Any:
    """A ``PublisherClient`` with the batch settings above (honours ``PUBSUB_EMULATOR_HOST``)."""
    try:
        pubsub_v1 = importlib.import_module("google.cloud.pubsub_v1")
    except ImportError as exc:
        raise ProviderUnavailableError(
            f"google-cloud-pubsub is not installed: {INSTALL_HINT}"
        ) from exc
    settings = pubsub_v1.types.BatchSettings(
        max_messages=MAX_MESSAGES, max_bytes=MAX_BYTES, max_latency=MAX_LATENCY
    )
    try:
        return pubsub_v1.PublisherClient(batch_settings=settings)
    except Exception as exc:  # e.g. google.auth DefaultCredentialsError
        raise AdderError(f"cannot create a Pub/Sub publisher: {exc}") from exc


def publish_retry() -> Any:
    """The client's retry for one batch: transient gRPC errors, backoff 0.1-10 s, 60 s total.

    The library default keeps retrying for 600 s, which hides an outage from a person waiting
    at a terminal; after 60 s the batch fails and this command's own rounds take over.
    """
    from google.api_core import exceptions, retry

    return retry.Retry(
        initial=0.1,
        maximum=10.0,
        multiplier=2.0,
        timeout=60.0,
        predicate=retry.if_exception_type(
            exceptions.Aborted,
            exceptions.Cancelled,
            exceptions.DeadlineExceeded,
            exceptions.InternalServerError,
            exceptions.ResourceExhausted,
            exceptions.ServiceUnavailable,
            exceptions.Unknown,
        ),
    )


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


@dataclass
class PublishResult:
    """What a submit achieved, and why the messages that were not sent failed."""

    summary: SubmitSummary
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    rounds: int = 1


def publish_all(
    publisher: Any,
    topic: str,
    chunks: Iterable[list[bytes]],
    *,
    attempts: int = ATTEMPTS,
    retry: Any = None,
    on_sent: Callable[[int], None] | None = None,
    pause: float = 1.0,
    window: int = WINDOW,
) -> PublishResult:
    """Publish every body of ``chunks`` to ``topic``; re-publish failures up to ``attempts`` rounds.

    ``retry`` is the client's per-batch retry (default :func:`publish_retry`; ``None`` would
    be the library's). ``on_sent(n)`` is called as messages are confirmed. ``pause`` seconds
    times the round number are waited before each re-publish round.
    """
    started = time.monotonic()
    retry = publish_retry() if retry is None else retry
    summary = SubmitSummary()
    failed = _publish_pass(
        publisher, topic, chunks, retry=retry, window=window, summary=summary, on_sent=on_sent
    )
    rounds = 1
    while failed and rounds < attempts:
        again = [body for body, error in failed if not is_permanent(error)]
        if not again:
            break
        permanent = [(body, error) for body, error in failed if is_permanent(error)]
        time.sleep(pause * rounds)
        rounds += 1
        failed = permanent + _publish_pass(
            publisher,
            topic,
            _chunked(again, 500),
            retry=retry,
            window=window,
            summary=summary,
            on_sent=on_sent,
        )
    summary.failed = len(failed)
    summary.seconds = time.monotonic() - started
    errors = collections.Counter(f"{type(error).__name__}: {error}" for _, error in failed)
    return PublishResult(summary, errors, rounds)


def _publish_pass(
    publisher: Any,
    topic: str,
    chunks: Iterable[list[bytes]],
    *,
    retry: Any,
    window: int,
    summary: SubmitSummary,
    on_sent: Callable[[int], None] | None,
) -> list[tuple[bytes, BaseException]]:
    """Publish once; wait for every future; return the bodies that failed, with their error."""
    failed: list[tuple[bytes, BaseException]] = []
    in_flight: collections.deque[list[tuple[bytes, Any]]] = collections.deque()
    pending = 0

    def settle(batch: list[tuple[bytes, Any]]) -> None:
        sent = 0
        for body, future in batch:
            try:
                future.result()
            except Exception as error:
                failed.append((body, error))
            else:
                sent += 1
        summary.sent += sent
        if on_sent is not None and sent:
            on_sent(sent)

    for chunk in chunks:
        batch = []
        for body in chunk:
            try:
                batch.append((body, publisher.publish(topic, body, retry=retry)))
            except Exception as error:  # refused before sending (size, stopped client...)
                failed.append((body, error))
        in_flight.append(batch)
        pending += len(batch)
        while pending > window:
            oldest = in_flight.popleft()
            pending -= len(oldest)
            settle(oldest)
    while in_flight:
        settle(in_flight.popleft())
    return failed


def _chunked(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def submit_from_args(args: argparse.Namespace) -> int:
    """``adder submit gcp``: publish, show progress on a terminal, print the final count."""
    if not TOPIC.match(args.topic):
        raise ConfigError(
            f"--topic must look like projects/PROJECT/topics/TOPIC, not {args.topic!r}"
        )
    bar = progress_bar(args, args.tasks)
    publisher = publisher_client()
    try:
        result = publish_all(
            publisher,
            args.topic,
            message_bodies(args.tasks),
            attempts=args.attempts,
            on_sent=bar.advance,
        )
    finally:
        bar.close()
        publisher.stop()
        publisher.transport.close()
    for text, count in result.errors.most_common(5):
        print(f"error: {count} message(s) not sent: {text}", file=sys.stderr)
    print(result.summary.line(args.topic))
    return result.summary.exit_code
