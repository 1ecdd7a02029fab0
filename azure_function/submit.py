"""``adder submit azure``: task messages onto the Service Bus queue, in size-limited batches.

Each task becomes one message whose body is the task's exact JSON bytes. Messages are packed
into ``ServiceBusMessageBatch`` objects (the SDK measures their encoded size against the
queue's limit) and each batch is sent in one call, which Service Bus accepts or refuses whole.
The SDK retries a failed send itself; a batch that still fails with a transient error is sent
again, up to ``max_attempts`` times in all. A batch that cannot be sent stops the submit: it and
every task after it count as not sent. Re-sending may duplicate messages whose
acknowledgement was lost; that is harmless, a task always gives the same result.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import TYPE_CHECKING, TextIO

from core.cli_args import progress_bar
from core.clouds import CLOUDS
from core.errors import AdderError, ConfigError, ProviderUnavailableError
from core.submit import SubmitSummary, message_bodies

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Iterator

    from azure.servicebus import ServiceBusClient, ServiceBusMessageBatch, ServiceBusSender

INSTALL_HINT = f"the Azure commands need the Azure SDKs: {CLOUDS['azure'].install_hint}"
PUBLIC_CLOUD_SUFFIX = ".servicebus.windows.net"
BATCH_HEADROOM_BYTES = 1024
"""Room left in each batch: the SDK's size count leaves out the batch envelope's own properties
(the first message's id) and the growth of the list header, which together put a full batch a
few dozen bytes over the queue's limit on the wire."""
DEFAULT_ATTEMPTS = 3
BACKOFF_SECONDS = 1.0


class SubmitStoppedError(AdderError):
    """A batch could not be sent; nothing more is attempted."""


def fully_qualified_namespace(namespace: str) -> str:
    """``sb-x`` -> ``sb-x.servicebus.windows.net``; a name with a dot is kept as it is."""
    namespace = namespace.strip().removeprefix("sb://").rstrip("/")
    return namespace if "." in namespace else namespace + PUBLIC_CLOUD_SUFFIX


def submit_bodies(
    sender: ServiceBusSender,
    bodies: Iterable[bytes],
    *,
    on_sent: Callable[[int], None] | None = None,
    max_attempts: int = DEFAULT_ATTEMPTS,
    backoff_seconds: float = BACKOFF_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    errors: TextIO | None = None,
) -> SubmitSummary:
    """Send every body as one message, in batches; count what was sent and what was not."""
    summary = SubmitSummary()
    started = time.perf_counter()
    batcher = _Batcher(
        sender,
        summary,
        on_sent=on_sent or (lambda _: None),
        max_attempts=max_attempts,
        backoff_seconds=backoff_seconds,
        sleep=sleep,
        errors=errors or sys.stderr,
    )
    remaining = iter(bodies)
    try:
        for body in remaining:
            batcher.add(body)
        batcher.flush()
    except SubmitStoppedError:
        summary.failed += sum(1 for _ in remaining)
    summary.seconds = time.perf_counter() - started
    return summary


class _Batcher:
    """Fills one batch at a time and sends it when the next message no longer fits."""

    def __init__(
        self,
        sender: ServiceBusSender,
        summary: SubmitSummary,
        *,
        on_sent: Callable[[int], None],
        max_attempts: int,
        backoff_seconds: float,
        sleep: Callable[[float], None],
        errors: TextIO,
    ) -> None:
        self.sender = sender
        self.summary = summary
        self.on_sent = on_sent
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.errors = errors
        self.batch: ServiceBusMessageBatch | None = None
        self.batch_limit: int | None = None
        self.position = 0

    def add(self, body: bytes) -> None:
        from azure.servicebus import ServiceBusMessage

        self.position += 1
        message = ServiceBusMessage(body, message_id=uuid.uuid4().hex)
        batch = self._current_batch()
        try:
            batch.add_message(message)
            return
        except ValueError:  # MessageSizeExceededError: this batch is full
            if len(batch) == 0:
                self._too_large(len(body))
                return
        try:
            self.flush()
        except SubmitStoppedError:
            self.summary.failed += 1  # the message in hand
            raise
        try:
            self._current_batch().add_message(message)
        except ValueError:
            self._too_large(len(body))

    def flush(self) -> None:
        batch, self.batch = self.batch, None
        if batch is None or len(batch) == 0:
            return
        if self._send(batch):
            self.summary.sent += len(batch)
            self.on_sent(len(batch))
        else:
            self.summary.failed += len(batch)
            raise SubmitStoppedError

    def _current_batch(self) -> ServiceBusMessageBatch:
        from azure.servicebus.exceptions import ServiceBusError

        if self.batch is None:
            try:
                if self.batch_limit is None:  # the queue's limit, known once the link is open
                    limit = self.sender.create_message_batch().max_size_in_bytes
                    self.batch_limit = max(limit - BATCH_HEADROOM_BYTES, limit // 2)
                self.batch = self.sender.create_message_batch(self.batch_limit)
            except ServiceBusError as exc:  # the link could not be opened
                self._report(f"cannot open the queue: {exc}")
                self.summary.failed += 1  # the message in hand
                raise SubmitStoppedError from exc
        return self.batch

    def _send(self, batch: ServiceBusMessageBatch) -> bool:
        from azure.servicebus.exceptions import ServiceBusError

        attempt = 1
        while True:
            try:
                self.sender.send_messages(batch)
                return True
            except ServiceBusError as exc:
                if not is_transient(exc) or attempt >= self.max_attempts:
                    self._report(
                        f"a batch of {len(batch)} messages was not sent "
                        f"(attempt {attempt} of {self.max_attempts}): {exc}"
                    )
                    return False
            self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            attempt += 1

    def _too_large(self, size: int) -> None:
        self.summary.failed += 1
        self._report(f"task {self.position} ({size:,} bytes) is too large for one message")

    def _report(self, text: str) -> None:
        print(f"error: {text}", file=self.errors)


def is_transient(exc: BaseException) -> bool:
    """Errors worth another send after the SDK's own retries: timeouts, connection, busy."""
    from azure.servicebus.exceptions import (
        OperationTimeoutError,
        ServiceBusCommunicationError,
        ServiceBusConnectionError,
        ServiceBusServerBusyError,
    )

    transient = (
        OperationTimeoutError,
        ServiceBusCommunicationError,
        ServiceBusConnectionError,
        ServiceBusServerBusyError,
    )
    return isinstance(exc, transient)


def make_client(namespace: str | None, connection_string: str | None) -> ServiceBusClient:
    """A client from a connection string (local use), or for ``namespace`` with Entra ID."""
    try:
        from azure.servicebus import ServiceBusClient
    except ImportError as exc:
        raise ProviderUnavailableError(INSTALL_HINT) from exc
    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string)
    if not namespace:
        raise ConfigError("give --namespace (or --connection-string)")
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ProviderUnavailableError(INSTALL_HINT) from exc
    return ServiceBusClient(fully_qualified_namespace(namespace), DefaultAzureCredential())


def run_submit(args: argparse.Namespace) -> int:
    """``adder submit azure``: send the tasks of ``args.tasks`` and print the summary line."""
    client = make_client(args.namespace, args.connection_string)
    bar = progress_bar(args, args.tasks)
    with client:
        sender = client.get_queue_sender(args.queue)
        try:
            bodies = _flatten(message_bodies(args.tasks))
            summary = submit_bodies(sender, bodies, on_sent=bar.advance, max_attempts=args.attempts)
        finally:
            bar.close()
            sender.close()
    print(summary.line(f"queue {args.queue} on {client.fully_qualified_namespace}"))
    return summary.exit_code


def _flatten(chunks: Iterable[list[bytes]]) -> Iterator[bytes]:
    for chunk in chunks:
        yield from chunk
