"""Structured logs for Cloud Logging: one JSON object per line on stdout.

Cloud Run's logging agent parses each such line into a log entry: ``severity`` becomes the
entry's severity, ``message`` its summary, and the other keys its ``jsonPayload``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from core.jsontext import json_line

LOGGER_NAME = "gcp_function"
FIELDS_ATTRIBUTE = "fields"
"""Pass a message's fields as ``logger.info(text, extra={"fields": {...}})``."""


class CloudLoggingFormatter(logging.Formatter):
    """Renders a record as ``{"severity", "message", **fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {"severity": record.levelname, "message": record.getMessage()}
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        entry["logger"] = record.name
        return json_line(entry)


def configure_logging(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Logger:
    """The function's logger, writing JSON lines to ``stream`` (stdout); safe to call twice."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(handler, "_adder_json", False) for handler in logger.handlers):
        handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
        handler.setFormatter(CloudLoggingFormatter())
        handler._adder_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
