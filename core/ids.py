"""Names shared by task ids and error records."""

from __future__ import annotations

INVALID_PREFIX = "invalid-"
"""Error records of messages without a usable id are ``invalid-<sha256 of the message>``; task
ids of exactly that form are refused, so a task can never overwrite such a record."""
