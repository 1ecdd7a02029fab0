"""One contract for every operator backend (``core.ops.backend.JobBackend``); each cloud's
tests subclass it, like ``tests/store_contract.py`` for result stores.

A subclass provides these fixtures:

``backend``
    The adapter under test on a fresh, empty job: task queue, dead-letter queue, results.
``queued``
    ``queued()`` -> the bodies now on the task queue (bytes), received and removed, waiting
    at most a few seconds for them to arrive.
``plant_record``
    ``plant_record(file_name, data)`` writes ``{prefix}/{file_name}`` into the results store.
``plant_dead_letter``
    ``plant_dead_letter(body)`` puts ``body`` on the dead-letter queue (as a dead-lettered
    message would be).
``missing_backend``
    The adapter pointed at a queue and a results store that do not exist.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from core.errors import AdderError, ConfigError
from core.packing import PackedRecord, unpack
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from core.ops.backend import DeadLetter, JobBackend

Queued = Callable[[], list[bytes]]
PlantRecord = Callable[[str, bytes], None]
PlantDeadLetter = Callable[[bytes], None]

TASK = b'{"id": "t-1", "data": {"num1": 42, "num2": 58}}'


def receive_all(backend: JobBackend, expected: int, seconds: float = 20.0) -> list[DeadLetter]:
    """Dead letters received until ``expected`` came or ``seconds`` passed."""
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + seconds
    while len(letters) < expected and time.monotonic() < deadline:
        letters += backend.receive_dead_letters(10)
    return letters


class JobBackendContract:
    """Behaviour every cloud's operator backend must have."""

    def test_sent_bodies_arrive_byte_for_byte(self, backend: JobBackend, queued: Queued) -> None:
        # GIVEN tasks with exact decimals and non-ASCII ids / WHEN sent in one batch
        bodies = [TASK, '{"id": "é-数", "data": {"num1": 0.1, "num2": 1e400}}'.encode()]
        refused = backend.send_batch(bodies)
        # THEN none is refused and the queue holds exactly those bytes
        assert refused == []
        assert sorted(queued()) == sorted(bodies)

    def test_a_full_batch_fits_the_backends_limits(
        self, backend: JobBackend, queued: Queued
    ) -> None:
        bodies = [
            b'{"id": "t-%d", "data": {"num1": %d, "num2": 1}}' % (i, i)
            for i in range(min(backend.max_batch_messages, 50))
        ]
        assert backend.send_batch(bodies) == []
        assert sorted(queued()) == sorted(bodies)

    def test_records_are_listed_with_name_suffix_and_size(
        self, backend: JobBackend, plant_record: PlantRecord
    ) -> None:
        plant_record("a.out", b"100")
        plant_record("b.err", b'{"error": "invalid_json"}\n')
        listed = {record.file_name: record for record in backend.list_records()}
        assert set(listed) == {"a.out", "b.err"}
        assert listed["a.out"].suffix == RESULT_SUFFIX
        assert listed["b.err"].suffix == ERROR_SUFFIX
        assert listed["a.out"].size == 3
        if listed["a.out"].md5 is not None:
            assert listed["a.out"].md5 == hashlib.md5(b"100").hexdigest()

    def test_packs_are_listed_and_read_and_other_folders_ignored(
        self, backend: JobBackend, plant_record: PlantRecord
    ) -> None:
        # GIVEN a record, a pack (packed results) and keys in other folders under the prefix
        body = b'{"id": "p-1", "result": "100"}\n'
        pack_name = hashlib.sha256(body).hexdigest()[:32]
        plant_record("a.out", b"100")
        plant_record(f"packed/{pack_name}.jsonl", body)
        plant_record("packed/notes.txt", b"x")
        plant_record("other/c.out", b"1")
        # WHEN listed
        listed = {record.key.rsplit("/", 1)[1]: record for record in backend.list_records()}
        # THEN the record and the pack are listed (the pack by its hash), nothing else
        assert set(listed) == {"a.out", f"{pack_name}.jsonl"}
        pack = listed[f"{pack_name}.jsonl"]
        assert pack.is_pack and pack.name == pack_name and not listed["a.out"].is_pack
        assert unpack(backend.read_record(pack)) == [PackedRecord("p-1", RESULT_SUFFIX, b"100")]

    def test_read_record_returns_the_stored_bytes(
        self, backend: JobBackend, plant_record: PlantRecord
    ) -> None:
        plant_record("r-é.out", b"0.3")
        (record,) = list(backend.list_records())
        assert record.name == "r-é"
        assert backend.read_record(record) == b"0.3"

    def test_listing_pages_through_more_than_one_page(
        self, backend: JobBackend, plant_record: PlantRecord
    ) -> None:
        for i in range(1005):
            plant_record(f"p-{i}.out", b"1")
        assert len({record.name for record in backend.list_records()}) == 1005

    def test_dead_letters_are_received_then_deleted(
        self, backend: JobBackend, plant_dead_letter: PlantDeadLetter
    ) -> None:
        # GIVEN two dead letters / WHEN received and deleted
        plant_dead_letter(TASK)
        plant_dead_letter(b"not json")
        letters = receive_all(backend, 2)
        assert sorted(letter.body for letter in letters) == sorted([TASK, b"not json"])
        backend.delete_dead_letters(letters)
        # THEN none comes back
        assert receive_all(backend, 1, seconds=3) == []

    def test_released_dead_letters_come_back(
        self, backend: JobBackend, plant_dead_letter: PlantDeadLetter
    ) -> None:
        plant_dead_letter(TASK)
        letters = receive_all(backend, 1)
        backend.release_dead_letters(letters)
        again = receive_all(backend, 1)
        assert [letter.body for letter in again] == [TASK]
        backend.delete_dead_letters(again)

    def test_dead_letter_count_counts_or_says_unknown(
        self, backend: JobBackend, plant_dead_letter: PlantDeadLetter
    ) -> None:
        plant_dead_letter(TASK)
        deadline = time.monotonic() + 10
        count = backend.dead_letter_count()
        while count == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            count = backend.dead_letter_count()
        assert count is None or count == 1

    def test_missing_queue_and_store_are_one_line_config_errors(
        self, missing_backend: JobBackend
    ) -> None:
        for call in (
            lambda: missing_backend.send_batch([TASK]),
            lambda: list(missing_backend.list_records()),
        ):
            with pytest.raises(ConfigError) as raised:
                call()
            assert "\n" not in str(raised.value)

    def test_errors_are_project_errors(self, missing_backend: JobBackend) -> None:
        with pytest.raises(AdderError):
            missing_backend.receive_dead_letters(1)
