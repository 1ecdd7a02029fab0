"""``adder submit aws``: push task messages onto the SQS queue with SendMessageBatch."""

from __future__ import annotations

import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.progress import ProgressBar
from core.submit import SubmitSummary, message_bodies

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
"""SendMessageBatch limits: 10 entries, and (classic limit, still accepted everywhere) 256 KiB."""
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character SQS refuses in a body (its allowed set is XML's); one fails the whole batch."""


@dataclass
class SendProblem:
    """Why some bodies were not sent."""

    count: int
    reason: str


@dataclass
class BatchOutcome:
    sent: int = 0
    problems: list[SendProblem] = field(default_factory=list)


def pack_batches(bodies: Iterable[bytes]) -> Iterator[list[bytes] | SendProblem]:
    """Group bodies into batches within the entry and size limits; oversized bodies are
    reported (never silently dropped)."""
    batch: list[bytes] = []
    size = 0
    for body in bodies:
        problem = _unsendable(body)
        if problem is not None:
            yield SendProblem(1, problem)
            continue
        if len(batch) == MAX_BATCH_ENTRIES or size + len(body) > MAX_BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += len(body)
    if batch:
        yield batch


def _unsendable(body: bytes) -> str | None:
    """Why SQS cannot take ``body`` as a message, or None."""
    if len(body) > MAX_BATCH_BYTES:
        return f"a message of {len(body):,} bytes is over SQS's limit"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"a message is not valid UTF-8 (byte {exc.start}); SQS carries text only"
    if not text:
        return "an empty message; SQS needs at least one character"
    bad = _NOT_SQS_TEXT.search(text)
    if bad is not None:
        return f"a message holds {bad.group()!r} at character {bad.start()}, which SQS refuses"
    return None


def _is_permanent(error: Exception) -> bool:
    """Errors that another try cannot fix: no credentials, access denied, no such queue."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(error, (NoCredentialsError, NoRegionError)):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        code = error.response.get("Error", {}).get("Code", "")
        return 400 <= status < 500 and "Throttl" not in code
    return False


def send_batch(
    client: SQSClient, queue_url: str, bodies: list[bytes], max_attempts: int = 5
) -> BatchOutcome:
    """Send one batch; re-send the entries the response lists as failed (not the sender's
    fault), with backoff, up to ``max_attempts`` calls in all."""
    outcome = BatchOutcome()
    pending = dict(enumerate(bodies))
    for attempt in range(1, max_attempts + 1):
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "MessageBody": body.decode("utf-8", "surrogatepass")}
            for index, body in pending.items()
        ]
        try:
            response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except Exception as exc:  # botocore already retried the call itself
            if attempt == max_attempts or _is_permanent(exc):
                outcome.problems.append(
                    SendProblem(len(pending), f"SendMessageBatch failed: {exc}")
                )
                return outcome
            time.sleep(min(0.1 * 2**attempt, 5.0))
            continue
        outcome.sent += len(response.get("Successful", []))
        retry: dict[int, bytes] = {}
        for failed in response.get("Failed", []):
            index = int(failed["Id"])
            if failed.get("SenderFault"):
                outcome.problems.append(
                    SendProblem(
                        1, f"rejected by SQS: {failed.get('Code')}: {failed.get('Message')}"
                    )
                )
            else:
                retry[index] = pending[index]
        pending = retry
        if not pending:
            return outcome
        time.sleep(min(0.05 * 2**attempt, 2.0))
    outcome.problems.append(SendProblem(len(pending), "still failing after retries"))
    return outcome


def submit(
    client: SQSClient,
    queue_url: str,
    source: str,
    *,
    concurrency: int = 8,
    progress: ProgressBar | None = None,
) -> SubmitSummary:
    """Send every task of ``source`` to ``queue_url``; ``concurrency`` batches in flight."""
    started = time.monotonic()
    summary = SubmitSummary()
    bar = progress or ProgressBar(None, enabled=False)

    def settle(future: Future[BatchOutcome]) -> None:
        result = future.result()
        summary.sent += result.sent
        for problem in result.problems:
            summary.failed += problem.count
            print(f"error: {problem.count} message(s) not sent: {problem.reason}", file=sys.stderr)
        bar.advance(result.sent + sum(p.count for p in result.problems))

    in_flight: set[Future[BatchOutcome]] = set()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="submit") as pool:
        for chunk in message_bodies(source):
            for batch in pack_batches(chunk):
                if isinstance(batch, SendProblem):
                    done: Future[BatchOutcome] = Future()
                    done.set_result(BatchOutcome(problems=[batch]))
                    settle(done)
                    continue
                if len(in_flight) >= concurrency * 2:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        settle(future)
                in_flight.add(pool.submit(send_batch, client, queue_url, batch))
        for future in in_flight:
            settle(future)
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary
