"""``python -m tests.support.moto_server -H HOST -p PORT``: moto's own server, with two hot
spots of its SQS model made cheaper so that load tests of tens of thousands of messages run.

moto (5.x) answers every SendMessage by building all queue attributes (to read one flag),
and three of them count messages by scanning the whole queue, each check converting a
datetime to milliseconds. A send therefore costs O(queue length) at ~10 us a message, and
20,000 sends take hours. Two changes, neither visible to a client:

- ``Message.visible``/``Message.delayed`` compare against ``time.time()`` directly (the same
  clock moto converts from a datetime);
- the ``ApproximateNumberOf*`` counts are cached per queue for 0.25 s. SQS documents them as
  approximate and eventually consistent (real SQS lags by up to a minute), so a client cannot
  tell the difference.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

COUNT_CACHE_SECONDS = 0.25
_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_not_visible",
    "approximate_number_of_messages_delayed",
)


def _cached_count(name: str, compute: Callable[[Any], int]) -> property:
    def getter(queue: Any) -> int:
        cache: dict[str, tuple[float, int]] = queue.__dict__.setdefault("_adder_counts", {})
        now = time.monotonic()
        hit = cache.get(name)
        if hit is not None and now - hit[0] < COUNT_CACHE_SECONDS:
            return hit[1]
        value = compute(queue)
        cache[name] = (now, value)
        return value

    return property(getter)


def patch_sqs() -> None:
    """Apply both speed-ups to moto's SQS model classes."""
    from moto.sqs import models

    def visible(message: Any) -> bool:
        return bool(time.time() * 1000.0 > message.visible_at)

    def delayed(message: Any) -> bool:
        return bool(time.time() * 1000.0 < message.delayed_until)

    models.Message.visible = property(visible)  # type: ignore[method-assign, assignment]
    models.Message.delayed = property(delayed)  # type: ignore[method-assign, assignment]
    for name in _COUNTS:
        original = getattr(models.Queue, name)
        setattr(models.Queue, name, _cached_count(name, original.fget))


def main() -> None:
    """Patch, then hand over to moto's own command line."""
    patch_sqs()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()


def command(port: int) -> list[str]:
    """The command line that starts this patched moto server on ``127.0.0.1:port``."""
    import sys

    return [sys.executable, "-m", "tests.support.moto_server", "-H", "127.0.0.1", "-p", str(port)]
