"""The worker's log: one JSON object per line on stdout, the job's id in every line.

A task's line has the fields every entry point writes (:mod:`core.observe`: ``task_id``,
``message_id``, ``outcome``, ``duration_ms``, ``delivery_attempt``, and ``error_code``,
``reason``, ``record`` or ``error_type``, ``stack_trace``), rendered as the Lambda's JSON log
format renders them: ``timestamp``, ``level``, ``message`` and ``logger`` first, then the fields
at the top level. journald, the CloudWatch agent, the Ops Agent and the Azure Monitor agent
all read such lines as structured entries.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from core.jsontext import json_line

if TYPE_CHECKING:
    from collections.abc import Mapping

LOGGER_NAME = "adder.worker"


class JsonLines:
    """A :class:`core.delivery.LogEmitter` writing JSON lines to ``stream`` (stdout), with
    ``job_id`` (and any other ``fixed`` fields) in every line. Thread-safe: lines never mix."""

    def __init__(
        self,
        job_id: str | None,
        stream: TextIO | None = None,
        *,
        fixed: Mapping[str, object] | None = None,
    ) -> None:
        self._stream = stream
        self._fixed: dict[str, object] = {"job_id": job_id, **(fixed or {})}
        self._lock = threading.Lock()

    def __call__(self, level: int, text: str, fields: dict[str, object]) -> None:
        """Write one line: the message ``text`` at ``level`` with ``fields``."""
        entry: dict[str, object] = {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "level": logging.getLevelName(level),
            "message": text,
            "logger": LOGGER_NAME,
            **self._fixed,
        }
        entry.update(fields)
        line = json_line(entry) + "\n"
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()

    def event(self, level: int, text: str, **fields: object) -> None:
        """A line about the worker itself (started, notice, drained, stopped)."""
        self(level, text, dict(fields))
