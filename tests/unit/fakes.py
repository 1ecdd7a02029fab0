"""A small in-memory store that subclasses the port (for unit tests only)."""

from __future__ import annotations

import threading

from core.errors import StoreWriteError
from core.ports import ResultStore


class InMemoryResultStore(ResultStore):
    """Keeps records in a dict; ``fail_names`` makes writes of those names fail transiently."""

    def __init__(self, fail_names: set[str] | None = None, fail_all: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail_names = fail_names or set()
        self.fail_all = fail_all
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail_all or key in self.fail_names:
            raise StoreWriteError(f"injected failure writing {key}")
        with self._lock:
            self.objects[key] = data
