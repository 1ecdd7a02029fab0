"""A small progress bar for long runs: drawn on a terminal, silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR_WIDTH = 24
_REDRAW_SECONDS = 0.1


class ProgressBar:
    """Counts finished tasks and redraws one status line at most ten times a second.

    Disabled (every call a no-op) unless ``enabled`` is true; the runner enables it only when
    the stream is a terminal, so logs and pipes stay clean.
    """

    def __init__(self, total: int | None, *, stream: TextIO | None = None, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, count: int) -> None:
        """Record ``count`` more finished tasks."""
        self.done += count
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= _REDRAW_SECONDS:
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._enabled and (self._drawn or self.done):
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self._drawn = True
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            filled = round(fraction * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            remaining = (self.total - self.done) / rate if rate > 0 else 0.0
            line = (
                f"{self.done:,}/{self.total:,} {fraction:4.0%} [{bar}] "
                f"{rate:,.0f} tasks/s, {remaining:,.0f}s left"
            )
        else:
            line = f"{self.done:,} tasks, {rate:,.0f} tasks/s, {elapsed:,.0f}s"
        self._stream.write("\r" + line.ljust(72))
        self._stream.flush()
