"""Packed results: one object per delivered batch instead of one per task.

Object writes are most of a job's bill on every cloud (see ``adder estimate``); packing a
batch's results into one object cuts them by the batch size. The layout is opt-in
(``RESULTS_LAYOUT=packed``, the stacks' ``results_layout``); the default stays one
``{id}.out`` per task.

A pack is ``{prefix}/packed/<hash>.jsonl``: one JSON line per record, ``{"id", "result"}``
for a success, ``{"name", "error"}`` (the error record's document) for a rejected task. Its
name is the SHA-256 of its bytes, so a batch delivered again with the same messages rewrites
the same object with the same bytes, and a pack never changes once written (readers may cache
it by name). :func:`unpack` gives back, byte for byte, the files the default layout writes.
"""

from __future__ import annotations

import enum
import hashlib
import json
import threading
from typing import TYPE_CHECKING, NamedTuple

from core.errors import ConfigError
from core.jsontext import json_line
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX, ResultStore, object_key
from core.settings import setting

if TYPE_CHECKING:
    from collections.abc import Mapping

PACKED_DIR = "packed"
PACK_SUFFIX = ".jsonl"
PACK_CONTENT_TYPE = "application/x-ndjson"
PACK_HASH_LENGTH = 32
LAYOUT_SETTING = "RESULTS_LAYOUT"


class ResultsLayout(enum.Enum):
    """How a function writes results: one object per task, or one per delivered batch."""

    PER_TASK = "per_task"
    PACKED = "packed"


def results_layout_from_environment(environ: Mapping[str, str] | None = None) -> ResultsLayout:
    """``RESULTS_LAYOUT`` (``per_task`` when unset or blank); a ConfigError for anything else."""
    value = setting(LAYOUT_SETTING, environ)
    return named_results_layout(value, LAYOUT_SETTING) if value else ResultsLayout.PER_TASK


def named_results_layout(value: str, where: str) -> ResultsLayout:
    """The layout ``value`` names; a one-line ConfigError naming ``where`` it came from."""
    try:
        return ResultsLayout(value)
    except ValueError:
        choices = " or ".join(repr(layout.value) for layout in ResultsLayout)
        raise ConfigError(f"{where}={value!r}: use {choices}") from None


class PackedRecord(NamedTuple):
    """One record of a pack: what the default layout writes to ``{name}{suffix}``."""

    name: str
    suffix: str
    content: bytes

    @property
    def file_name(self) -> str:
        """``{name}{suffix}``."""
        return self.name + self.suffix


class PackError(ValueError):
    """A pack's bytes are not a pack (a line that is not one of the two record shapes)."""


def pack_name(body: bytes) -> str:
    """``packed/<sha256 of body>``: the pack's name under the prefix, without the suffix."""
    return f"{PACKED_DIR}/{hashlib.sha256(body).hexdigest()[:PACK_HASH_LENGTH]}"


def pack_key(prefix: str, body: bytes) -> str:
    """``{prefix}/packed/<sha256 of body>.jsonl``."""
    return object_key(prefix, pack_name(body), PACK_SUFFIX)


def is_pack_name(name: str) -> bool:
    """True for the file name of a pack (``<hash>.jsonl``) as :func:`pack_key` makes it."""
    digest = name.removesuffix(PACK_SUFFIX)
    return (
        name.endswith(PACK_SUFFIX)
        and len(digest) == PACK_HASH_LENGTH
        and all(c in "0123456789abcdef" for c in digest)
    )


class PackBuffer(ResultStore):
    """A results store that keeps one batch's records in memory, to be written as one pack.

    The pipeline writes to it as to any store; :meth:`body` is the pack. A name written twice
    keeps its last content, as an object store would.
    """

    def __init__(self) -> None:
        self._records: dict[str, PackedRecord] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        for suffix in (RESULT_SUFFIX, ERROR_SUFFIX):
            if key.endswith(suffix):
                with self._lock:
                    self._records[key] = PackedRecord(key.removesuffix(suffix), suffix, data)
                return
        raise ValueError(f"a pack holds .out and .err records only, not {key!r}")

    def body(self) -> bytes:
        """The pack: one JSON line per record, in a stable order (so equal batches are equal)."""
        with self._lock:
            records = sorted(self._records.values())
        return b"".join(_line(record) for record in records)

    def key(self, name: str, suffix: str) -> str:
        return object_key("", name, suffix)


def _line(record: PackedRecord) -> bytes:
    text = record.content.decode("utf-8")
    if record.suffix == RESULT_SUFFIX:
        document: dict[str, object] = {"id": record.name, "result": text}
    else:
        document = {"name": record.name, "error": json.loads(text)}
    return (json_line(document) + "\n").encode("utf-8")


def unpack(data: bytes) -> list[PackedRecord]:
    """The records of a pack, each with the exact bytes the default layout writes."""
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as error:
            raise PackError(f"line {number} is not JSON: {error}") from None
        records.append(_record(document, number))
    return records


def _record(document: object, number: int) -> PackedRecord:
    if isinstance(document, dict):
        if isinstance(document.get("id"), str) and isinstance(document.get("result"), str):
            return PackedRecord(document["id"], RESULT_SUFFIX, document["result"].encode("utf-8"))
        if isinstance(document.get("name"), str) and isinstance(document.get("error"), dict):
            content = (json_line(document["error"]) + "\n").encode("utf-8")
            return PackedRecord(document["name"], ERROR_SUFFIX, content)
    raise PackError(f"line {number} is neither a result nor an error record")
