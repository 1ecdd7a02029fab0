"""Error records: what is kept of a task that can never succeed, and how it is named."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from core.errors import InvalidTaskError
from core.ids import INVALID_PREFIX

MAX_RAW_KEPT = 64 * 1024
"""Most bytes of a rejected message kept in its error record; larger ones are cut and flagged."""


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

    @classmethod
    def for_rejection(cls, error: InvalidTaskError, raw: object) -> ErrorRecord:
        """Build the record for ``raw``, which failed with ``error``."""
        data = raw_bytes(raw)
        name = error.task_id or INVALID_PREFIX + hashlib.sha256(data).hexdigest()
        return cls(
            name=name, task_id=error.task_id, code=error.code, message=error.message, raw=data
        )

    def to_json(self) -> bytes:
        """The record's file/object content (UTF-8 JSON, one line, trailing newline)."""
        kept = self.raw[:MAX_RAW_KEPT]
        doc: dict[str, Any] = {
            "task_id": self.task_id,
            "error": self.code,
            "message": self.message,
        }
        try:
            doc["raw"] = kept.decode("utf-8")
        except UnicodeDecodeError:
            doc["raw_base64"] = base64.b64encode(kept).decode("ascii")
        doc["raw_bytes"] = len(self.raw)
        doc["raw_sha256"] = hashlib.sha256(self.raw).hexdigest()
        if len(self.raw) > MAX_RAW_KEPT:
            doc["raw_truncated"] = True
        return (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
