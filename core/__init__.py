"""The cloud-agnostic core: parse and validate a task, add exactly, write the result.

Standard library only; the cloud folders wrap it.
"""

from __future__ import annotations

from core.errors import AdderError, ConfigError, InvalidTaskError, StoreWriteError
from core.outcome import Outcome, OutcomeKind
from core.pipeline import process_message
from core.ports import ResultStore
from core.records import ErrorRecord
from core.task import Task, parse_task

__all__ = [
    "AdderError",
    "ConfigError",
    "ErrorRecord",
    "InvalidTaskError",
    "Outcome",
    "OutcomeKind",
    "ResultStore",
    "StoreWriteError",
    "Task",
    "parse_task",
    "process_message",
]
