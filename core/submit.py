"""What every ``adder submit <cloud>`` shares: reading task messages and reporting counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.records import OversizedMessage
from core.task_source import iter_task_chunks

if TYPE_CHECKING:
    from collections.abc import Iterator


MAX_SUBMIT_LINE_BYTES = 10 * 1000 * 1000
"""The largest message any of the three queues takes (Pub/Sub's 10 MB); a longer line is
refused without being held whole (each cloud's own limit reports the smaller ones)."""


def message_bodies(source: str, chunk_size: int = 500) -> Iterator[list[bytes]]:
    """The tasks of ``source`` (JSON Lines, a JSON array, or ``-``) as message bodies, in chunks.

    Each body is the task's exact JSON text, as bytes: nothing is re-encoded, so exact decimals
    reach the function as written. Bad tasks are sent as they are: the function records why
    they are bad, the same as for any other producer.
    """
    for chunk in iter_task_chunks(source, chunk_size, max_line_bytes=MAX_SUBMIT_LINE_BYTES):
        yield [_as_bytes(position, raw) for position, raw in chunk]


def _as_bytes(position: int | str, raw: object) -> bytes:
    if isinstance(raw, OversizedMessage):
        raise ConfigError(
            f"task {position} of the tasks file is {raw.size:,} bytes: no queue takes a message"
            f" over {MAX_SUBMIT_LINE_BYTES:,} bytes; submit stopped there"
        )
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return json.dumps(raw, default=str).encode("utf-8")


@dataclass
class SubmitSummary:
    """How a submit went: messages accepted by the queue, and those given up on."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0

    def line(self, destination: str) -> str:
        """The final line ``adder submit`` prints."""
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        text = f"sent {self.sent} messages to {destination} in {self.seconds:.2f}s ({rate:,.0f}/s)"
        if self.failed:
            text += f"; {self.failed} could not be sent (see errors above)"
        return text

    @property
    def exit_code(self) -> int:
        """0 when every message was sent, 1 otherwise."""
        return 1 if self.failed else 0
