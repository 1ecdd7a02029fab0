"""Packed results: one pack per batch, unpacked byte for byte into the default layout."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pytest

from core.delivery import Delivery, deliver, deliver_packed
from core.errors import ConfigError, StoreWriteError
from core.local_store import LocalDirectoryResultStore
from core.packing import (
    PACK_CONTENT_TYPE,
    PackError,
    ResultsLayout,
    is_pack_name,
    results_layout_from_environment,
    unpack,
)
from core.ports import LazyResultStore, ResultStore

if TYPE_CHECKING:
    from pathlib import Path

MESSAGES = [
    b'{"id": "t1", "data": {"num1": 42, "num2": 58}}',
    b'{"id": "t2", "data": {"num1": "0.1", "num2": "0.2"}}',
    b'{"id": "bad", "data": {"num1": 1}}',
    b"not json \xff",
    b'{"id": "caf\\u00e9-\\ud800", "data": {"num1": 1, "num2": 2}}',
]


class MemoryStore(ResultStore):
    """A store that keeps every put (and can be told to fail)."""

    def __init__(self, prefix: str = "", fail: bool = False) -> None:
        self.prefix = prefix
        self.fail = fail
        self.objects: dict[str, tuple[bytes, str]] = {}

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail:
            raise StoreWriteError("the store is down")
        self.objects[key] = (data, content_type)


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str, dict[str, object]]] = []

    def __call__(self, level: int, text: str, fields: dict[str, object]) -> None:
        self.lines.append((level, text, fields))


def test_a_packed_batch_unpacks_to_the_exact_files_the_default_layout_writes(
    tmp_path: Path,
) -> None:
    # GIVEN good and bad messages, delivered one by one into a directory (the default layout)
    default_dir = tmp_path / "default"
    with LocalDirectoryResultStore(default_dir) as directory:
        for number, body in enumerate(MESSAGES):
            deliver(Delivery(body, f"m{number}"), directory, Lines())
    # WHEN the same messages are delivered as one packed batch
    store = MemoryStore(prefix="jobs/one")
    handled = deliver_packed([Delivery(b, f"m{n}") for n, b in enumerate(MESSAGES)], store, Lines())
    # THEN one object was written, under packed/, and it holds every record byte for byte
    assert all(not item.retry for item in handled)
    ((key, (body, content_type)),) = store.objects.items()
    assert key.startswith("jobs/one/packed/") and is_pack_name(key.rsplit("/", 1)[1])
    assert content_type == PACK_CONTENT_TYPE
    unpacked = {record.file_name: record.content for record in unpack(body)}
    on_disk = {path.name: path.read_bytes() for path in default_dir.iterdir()}
    assert unpacked == on_disk
    assert len(unpacked) == len(MESSAGES)
    assert all(json.loads(line) for line in body.splitlines())


def test_the_same_batch_makes_the_same_pack_whatever_the_order() -> None:
    first, second = MemoryStore(), MemoryStore()
    deliver_packed([Delivery(b) for b in MESSAGES], first, Lines())
    deliver_packed([Delivery(b) for b in reversed(MESSAGES)], second, Lines())
    assert first.objects == second.objects


def test_a_failed_pack_write_retries_the_whole_batch_and_logs_each_message_once() -> None:
    # GIVEN a store that fails
    lines = Lines()
    deliveries = [Delivery(b, f"m{n}") for n, b in enumerate(MESSAGES)]
    # WHEN a batch is delivered packed
    handled = deliver_packed(deliveries, MemoryStore(fail=True), lines)
    # THEN every message goes back to the queue (none acknowledged), each logged once as an error
    assert [item.retry for item in handled] == [True] * len(MESSAGES)
    assert all(isinstance(item.error, StoreWriteError) for item in handled)
    assert [level for level, _, _ in lines.lines] == [logging.ERROR] * len(MESSAGES)
    assert [fields["message_id"] for _, _, fields in lines.lines] == [
        d.message_id for d in deliveries
    ]


def test_an_empty_batch_writes_no_pack() -> None:
    store = MemoryStore()
    assert deliver_packed([], store, Lines()) == []
    assert store.objects == {}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{", "line 1 is not JSON"),
        (b'{"id": "a", "result": "1"}\n[1]\n', "line 2 is neither"),
        (b'{"id": 3, "result": "1"}\n', "line 1 is neither"),
        (b'{"name": "n", "error": "text"}\n', "line 1 is neither"),
    ],
)
def test_bytes_that_are_not_a_pack_are_refused_with_the_line(data: bytes, problem: str) -> None:
    with pytest.raises(PackError, match=problem):
        unpack(data)


@pytest.mark.parametrize(
    ("value", "layout"),
    [
        ("", ResultsLayout.PER_TASK),
        (" packed ", ResultsLayout.PACKED),
        ("per_task", ResultsLayout.PER_TASK),
    ],
)
def test_the_layout_setting(value: str, layout: ResultsLayout) -> None:
    assert results_layout_from_environment({"RESULTS_LAYOUT": value}) is layout


def test_an_unknown_layout_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="RESULTS_LAYOUT='zip': use 'per_task' or 'packed'"):
        results_layout_from_environment({"RESULTS_LAYOUT": "zip"})


def test_a_lazy_store_gets_the_pack_under_its_prefix() -> None:
    # GIVEN a store configured at the first write (as the Azure edge does)
    real = MemoryStore(prefix="jobs/lazy")
    # WHEN a batch is delivered packed through it
    deliver_packed([Delivery(MESSAGES[0])], LazyResultStore(lambda: real), Lines())
    # THEN the pack lands under the real store's prefix
    ((key, _),) = real.objects.items()
    assert key.startswith("jobs/lazy/packed/")
