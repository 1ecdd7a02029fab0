"""A small in-memory store that subclasses the port (for unit tests only)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from core.errors import StoreWriteError
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX, ResultStore

if TYPE_CHECKING:
    from core.records import ErrorRecord


class InMemoryResultStore(ResultStore):
    """Keeps records in a dict; ``fail_names`` makes writes of those names fail transiently."""

    def __init__(self, fail_names: set[str] | None = None, fail_all: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_names = fail_names or set()
        self.fail_all = fail_all
        self._lock = threading.Lock()

    def write_result(self, task_id: str, text: str) -> None:
        self._put(task_id + RESULT_SUFFIX, text.encode())

    def write_error(self, record: ErrorRecord) -> None:
        self._put(record.name + ERROR_SUFFIX, record.to_json())

    def _put(self, name: str, data: bytes) -> None:
        if self.fail_all or name in self.fail_names:
            raise StoreWriteError(f"injected failure writing {name}")
        with self._lock:
            self.objects[name] = data
