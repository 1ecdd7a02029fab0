"""``python -m aws_lambda.sandbox.moto_server -H HOST -p PORT``: moto's own server, with the
hot spots that a profile of it under load shows made cheaper, so that runs of tens of thousands
of messages (``adder sandbox aws``, the tests, the benchmarks) finish and its costs take the
shape of SQS's (a request costs; queue length does not).

moto (5.x) answers every SendMessage by building all queue attributes (to read one flag),
and three of them count messages by scanning the whole queue, each check converting a
datetime to milliseconds. A send therefore costs O(queue length) at ~10 us a message, and
20,000 sends take hours. And every request, before it reaches a service, lists moto's
package directory and stats each of its ~180 entries, twice. Four changes, none visible to a
client (each is a speed-up of the same computation, or allowed by SQS's own contract):

- ``Message.visible``/``Message.delayed`` compare against ``time.time()`` directly (the same
  clock moto converts from a datetime);
- the three ``ApproximateNumberOf*`` counts come from one pass over the queue, cached per
  queue for 0.25 s. SQS documents them as approximate and eventually consistent (real SQS
  lags by up to a minute), so a client cannot tell the difference;
- the SQS model's ``camelcase_to_underscores`` (a pure function of an attribute name, called
  ~14 times per message sent) is memoized;
- the list of moto's service modules is read once (the installed package does not change
  while the server runs).

Measured in-process (2 cores, moto 5.2.5): SendMessage 3.9 -> 1.6 ms, SendMessageBatch of 10
7.6 -> 2.5 ms of server time.

And two races fixed where moto's SQS model breaks SQS's contract under concurrent clients
(:func:`patch_deletes`, :func:`patch_receives`): concurrent deletes undid each other, and
concurrent receives could return the same message.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import time
from typing import Any

LATENCY_ENV = "ADDER_MOTO_LATENCY_MS"
"""When set, milliseconds every answer waits first (see :func:`patch_latency`)."""
PARENT_PID_ENV = "ADDER_PARENT_PID"
"""When set (to the starter's pid), the server stops when that process dies, even by kill -9."""
_PR_SET_PDEATHSIG = 1

COUNT_CACHE_SECONDS = 0.25
COUNT_PROPERTIES = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_not_visible",
    "approximate_number_of_messages_delayed",
)
"""moto's Queue properties, in the order of ``_message_counts``' answer."""


def _message_counts(queue: Any) -> tuple[int, int, int]:
    """(available, in flight, delayed) in one pass over the queue, against one clock reading,
    cached per queue for COUNT_CACHE_SECONDS. Same rules as moto's three properties: a
    message is available when visible and not delayed."""
    cached: tuple[float, tuple[int, int, int]] | None = queue.__dict__.get("_adder_counts")
    started = time.monotonic()
    if cached is not None and started - cached[0] < COUNT_CACHE_SECONDS:
        return cached[1]
    now_ms = time.time() * 1000.0
    available = in_flight = delayed = 0
    for message in queue._messages:
        is_visible = now_ms > message.visible_at
        is_delayed = now_ms < message.delayed_until
        if not is_visible:
            in_flight += 1
        if is_delayed:
            delayed += 1
        elif is_visible:
            available += 1
    counts = (available, in_flight, delayed)
    queue.__dict__["_adder_counts"] = (started, counts)
    return counts


def _message_count(queue: Any, index: int) -> int:
    return _message_counts(queue)[index]


def patch_sqs() -> None:
    """Make moto's SQS model cheaper: message clock checks, cached counts, memoized names."""
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs import models

    def visible(message: Any) -> bool:
        return bool(time.time() * 1000.0 > message.visible_at)

    def delayed(message: Any) -> bool:
        return bool(time.time() * 1000.0 < message.delayed_until)

    models.Message.visible = property(visible)  # type: ignore[method-assign, assignment]
    models.Message.delayed = property(delayed)  # type: ignore[method-assign, assignment]
    for index, name in enumerate(COUNT_PROPERTIES):
        setattr(models.Queue, name, property(functools.partial(_message_count, index=index)))
    setattr(models, "camelcase_to_underscores", functools.cache(camelcase_to_underscores))  # noqa: B010


def patch_deletes() -> None:
    """Delete a message in place, under the queue's lock, stopping at the first match.

    moto's ``Queue.delete_message`` rebuilds the message list outside any lock, so deletes (or
    a send) made at the same time undo each other: about 1% of messages came back after their
    visibility timeout under a worker's concurrent deletes, which real SQS never does.
    Received messages sit near the front, so stopping at the first match is also cheaper.
    """
    from moto.sqs import models
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return  # deleted already: as moto (and SQS) answer, not an error
            found = (m for m in self._messages if m.had_receipt_handle(receipt_handle))
            message = next(found, None)
            if message is None:
                raise ReceiptHandleIsInvalid()
            self._messages.remove(message)
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)

    models.Queue.delete_message = delete_message  # type: ignore[method-assign]


def patch_receives() -> None:
    """Receive under the queue's lock, so two receives at once never take the same message.

    moto's ``receive_message`` checks that a message is visible and then marks it received
    with no lock between the two, so concurrent receives (a worker's pollers, the sandbox's
    event source mapping) could both return it: about 1 message in 1,000 came back twice, at
    once, under ``adder work``, which real SQS does not do within the visibility timeout. The
    long poll still lets others in: its wait releases the lock (an ``RLock`` condition).
    """
    from moto.sqs import models

    receive = models.SQSBackend.receive_message

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return receive(self, queue_name, *args, **kwargs)

    models.SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def patch_dispatch() -> None:
    """Read the list of moto's service modules once instead of on every request."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: iter(modules)


def patch_latency(milliseconds: float) -> None:
    """Wait ``milliseconds`` (sleeping: no CPU) before answering each request, the shape of a
    real service's round trip, for benchmarks that compare waiting clients (``$LATENCY_ENV``)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    answer = DomainDispatcherApplication.__call__
    seconds = milliseconds / 1000.0

    def delayed(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        time.sleep(seconds)
        return answer(self, environ, start_response)

    DomainDispatcherApplication.__call__ = delayed  # type: ignore[method-assign]


def main() -> None:
    """Patch, then hand over to moto's own command line (dying with its parent when started
    with ``$ADDER_PARENT_PID`` set, see :func:`die_with_parent`)."""
    parent = os.environ.get(PARENT_PID_ENV, "")
    if parent.isdigit():
        die_with_parent(int(parent))
    patch_sqs()
    patch_deletes()
    patch_receives()
    patch_dispatch()
    latency = float(os.environ.get(LATENCY_ENV) or 0)
    if latency > 0:
        patch_latency(latency)
    from moto.server import main as moto_main

    moto_main()


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM this process when ``parent_pid`` (its parent) dies (Linux;
    elsewhere a best effort), and exit now if it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent_pid:
        sys.exit(1)


def command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that starts this patched moto server on ``host:port``."""
    return [sys.executable, "-m", "aws_lambda.sandbox.moto_server", "-H", host, "-p", str(port)]


if __name__ == "__main__":
    main()
