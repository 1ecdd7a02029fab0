"""Attaching a handler to one logger for a test (edge loggers may not propagate to the root)."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def handler_on(name: str, handler: logging.Handler, level: int = logging.DEBUG) -> Iterator[None]:
    """Send the records of logger ``name`` (at ``level`` and above) to ``handler`` meanwhile."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
