"""Error records: what is kept of a task that can never succeed, and how it is named."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from core.errors import InvalidTaskError
from core.ids import INVALID_PREFIX
from core.jsontext import json_line

MAX_RAW_KEPT = 64 * 1024
"""Most bytes of a rejected message kept in its error record; larger ones are cut and flagged."""


class OversizedMessage(NamedTuple):
    """A message too large to hold: its first bytes, its size and its SHA-256.

    The local runner reads a very long line this way (never holding it whole), so its error
    record is the same as if the whole line had been kept: the first ``MAX_RAW_KEPT`` bytes,
    the exact size and hash.
    """

    head: bytes
    size: int
    sha256: str


def raw_bytes(raw: object) -> bytes:
    """The message as bytes: as delivered, or (for a mapping) as canonical JSON.

    A mapping's Decimal values are written as strings: the record keeps their exact digits.
    """
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, memoryview):
        return raw.tobytes()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return json.dumps(
        raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8", "surrogatepass")


class ErrorRecord(NamedTuple):
    """A rejected task: the reason, and the raw message so nothing is lost."""

    name: str
    """``{task_id}`` when the message had a usable id, else ``invalid-{sha256 of the message}``."""
    task_id: str | None
    code: str
    message: str
    raw: bytes
    """The first ``MAX_RAW_KEPT`` bytes of the message."""
    raw_size: int
    raw_sha256: str

    @classmethod
    def for_rejection(cls, error: InvalidTaskError, raw: object) -> ErrorRecord:
        """Build the record for ``raw``, which failed with ``error``."""
        if isinstance(raw, OversizedMessage):
            kept, size, digest = raw.head[:MAX_RAW_KEPT], raw.size, raw.sha256
        else:
            data = raw_bytes(raw)
            kept, size, digest = data[:MAX_RAW_KEPT], len(data), hashlib.sha256(data).hexdigest()
        return cls(
            name=error.task_id or INVALID_PREFIX + digest,
            task_id=error.task_id,
            code=error.code,
            message=error.message,
            raw=kept,
            raw_size=size,
            raw_sha256=digest,
        )

    def to_json(self) -> bytes:
        """The record's file/object content (UTF-8 JSON, one line, trailing newline)."""
        doc: dict[str, Any] = {
            "task_id": self.task_id,
            "error": self.code,
            "message": self.message,
        }
        try:
            doc["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            doc["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        doc["raw_bytes"] = self.raw_size
        doc["raw_sha256"] = self.raw_sha256
        if self.raw_size > len(self.raw):
            doc["raw_truncated"] = True
        return (json_line(doc) + "\n").encode("utf-8")
