"""``adder redrive CLOUD``: dead-lettered messages back onto the task queue, none lost.

The order is the same on every cloud: receive (locked, not removed), send to the task
queue, and only then delete from the dead-letter queue what the task queue confirmed;
messages the queue refused are released for a later redrive. A failure in between can
duplicate a message (results are idempotent), never lose one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.errors import CloudUnavailableError
from core.progress import ProgressBar

if TYPE_CHECKING:
    from core.ops.backend import JobBackend


@dataclass
class RedriveSummary:
    """How a redrive went."""

    moved: int = 0
    refused_bodies: set[str] = field(default_factory=set)
    """SHA-256 of each body the queue refused (a letter released and received again counts
    once)."""
    seconds: float = 0.0

    @property
    def refused(self) -> int:
        """Dead letters the task queue refused: left in the dead-letter queue."""
        return len(self.refused_bodies)

    def line(self, backend: JobBackend) -> str:
        """The final line ``adder redrive`` prints."""
        text = f"moved {self.moved:,} dead-lettered tasks back onto {backend.queue_label}"
        text += f" in {self.seconds:.2f}s"
        if self.refused:
            text += f"; {self.refused:,} refused by the queue, left in the dead-letter queue"
        return text

    @property
    def exit_code(self) -> int:
        """0 when every dead letter seen was moved."""
        return 1 if self.refused else 0


def redrive(
    backend: JobBackend,
    *,
    idle_polls: int = 2,
    limit: int | None = None,
    progress: ProgressBar | None = None,
) -> RedriveSummary:
    """Move dead letters until ``idle_polls`` receives in a row bring none (or ``limit`` moved)."""
    bar = progress or ProgressBar(None, enabled=False)
    summary = RedriveSummary()
    started = time.monotonic()
    idle = 0
    try:
        while idle < idle_polls and (limit is None or summary.moved < limit):
            letters = backend.receive_dead_letters(backend.max_batch_messages)
            if not letters:
                idle += 1
                continue
            idle = 0
            try:
                refused = backend.send_batch([letter.body for letter in letters])
            except CloudUnavailableError:
                backend.release_dead_letters(letters)
                raise
            refused_at = {refusal.index for refusal in refused}
            moved = [letter for i, letter in enumerate(letters) if i not in refused_at]
            kept = [letter for i, letter in enumerate(letters) if i in refused_at]
            if moved:
                backend.delete_dead_letters(moved)
            if kept:
                backend.release_dead_letters(kept)
            summary.moved += len(moved)
            known = len(summary.refused_bodies)
            summary.refused_bodies.update(_digest(letter.body) for letter in kept)
            bar.advance(len(letters))
            if kept and not moved and len(summary.refused_bodies) == known:
                break  # only letters the queue refused before came back: stop, do not spin
    finally:
        bar.close()
        summary.seconds = time.monotonic() - started
    return summary


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
