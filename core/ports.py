"""The results port: the one interface every results store implements."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.records import ErrorRecord

RESULT_SUFFIX = ".out"
ERROR_SUFFIX = ".err"
RESULT_CONTENT_TYPE = "text/plain"
ERROR_CONTENT_TYPE = "application/json"


def object_key(prefix: str, name: str, suffix: str) -> str:
    """``{prefix}/{name}{suffix}``, or ``{name}{suffix}`` with an empty prefix."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}{suffix}" if prefix else f"{name}{suffix}"


class ResultStore(abc.ABC):
    """Where results and error records go: a directory, an S3 bucket, a GCS bucket, a container.

    Both operations replace whatever the name held before, and a reader sees either the old
    content or the whole new content, never part of it. They raise
    :class:`~core.errors.StoreWriteError` when the store fails (a transient failure).
    Names handed to a store are validated task ids or ``invalid-<sha256>``: never a path.

    An adapter implements :meth:`put` (one object: key, bytes, content type) and sets
    ``prefix``; naming, encoding and content types are the same everywhere and live here.
    """

    prefix: str = ""
    """Keys are ``{prefix}/{name}{suffix}``; empty: ``{name}{suffix}``."""

    def write_result(self, task_id: str, text: str) -> None:
        """Store ``text`` as the result of ``task_id`` (``{task_id}.out``)."""
        self.put(self.key(task_id, RESULT_SUFFIX), text.encode("utf-8"), RESULT_CONTENT_TYPE)

    def write_error(self, record: ErrorRecord) -> None:
        """Store an error record (``{record.name}.err``)."""
        self.put(self.key(record.name, ERROR_SUFFIX), record.to_json(), ERROR_CONTENT_TYPE)

    def key(self, name: str, suffix: str) -> str:
        """The object key (or file name) of ``name`` + ``suffix``."""
        return object_key(self.prefix, name, suffix)

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write one whole object, replacing it; raise StoreWriteError when the store fails."""


class LazyResultStore(ResultStore):
    """The store a factory gives, asked for at the first write, so that a store that cannot
    be configured fails inside the pipeline (logged once and retried, like any failure)."""

    def __init__(self, factory: Callable[[], ResultStore]) -> None:
        self._factory = factory

    def key(self, name: str, suffix: str) -> str:
        return self._factory().key(name, suffix)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._factory().put(key, data, content_type)
