"""Small in-memory doubles that subclass the project's own ports (for unit tests only)."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING

from core.errors import StoreWriteError
from core.ops.backend import DeadLetter, JobBackend, RecordInfo, Refused, record_from_key
from core.ports import ResultStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence


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


class InMemoryJobBackend(JobBackend):
    """A job's queue, dead-letter queue and results in memory; subclasses the operator port.

    ``refuse`` maps a body to the Refused reason and retry flag the queue answers for it (once
    per entry in ``refuse_times``, default forever); ``fail_with`` makes the next send_batch
    calls raise the given errors in turn; ``on_send`` is called before every send_batch.
    """

    queue_label = "memory queue"
    results_label = "memory://results/"

    def __init__(self, prefix: str = "results", max_batch_messages: int = 10) -> None:
        self.prefix = prefix
        self.max_batch_messages = max_batch_messages
        self.queue: list[bytes] = []
        self.dead: list[bytes] = []
        self.locked: dict[int, bytes] = {}
        self.objects: dict[str, bytes] = {}
        self.refuse: dict[bytes, tuple[str, bool]] = {}
        self.refuse_times: dict[bytes, int] = {}
        self.fail_with: list[Exception] = []
        self.on_send: Callable[[Sequence[bytes]], None] | None = None
        self.batches: list[list[bytes]] = []
        self.list_calls = 0
        self.reads = 0
        self.reading = 0
        self.most_reading = 0
        self.read_delay = 0.0
        self.closed = False
        self._next_handle = 0
        self._lock = threading.Lock()

    def unsendable(self, body: bytes) -> str | None:
        return f"a message of {len(body):,} bytes is over the limit" if len(body) > 1000 else None

    def send_batch(self, bodies: Sequence[bytes]) -> list[Refused]:
        if self.on_send is not None:
            self.on_send(bodies)
        with self._lock:
            if self.fail_with:
                raise self.fail_with.pop(0)
            self.batches.append(list(bodies))
            refused = []
            for index, body in enumerate(bodies):
                reason = self.refuse.get(body)
                times = self.refuse_times.get(body)
                if reason is not None and (times is None or times > 0):
                    if times is not None:
                        self.refuse_times[body] = times - 1
                    refused.append(Refused(index, reason[0], reason[1]))
                else:
                    self.queue.append(body)
            return refused

    def list_records(self) -> Iterator[RecordInfo]:
        self.list_calls += 1
        for key, data in sorted(self.objects.items()):
            record = record_from_key(key, self.prefix, len(data), hashlib.md5(data).hexdigest())
            if record is not None:
                yield record

    def read_record(self, record: RecordInfo) -> bytes:
        with self._lock:
            self.reads += 1
            self.reading += 1
            self.most_reading = max(self.most_reading, self.reading)
        if self.read_delay:
            time.sleep(self.read_delay)
        with self._lock:
            self.reading -= 1
        return self.objects[record.key]

    def dead_letter_count(self) -> int | None:
        return len(self.dead) + len(self.locked)

    def receive_dead_letters(self, max_messages: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        while self.dead and len(letters) < max_messages:
            body = self.dead.pop(0)
            self._next_handle += 1
            self.locked[self._next_handle] = body
            letters.append(DeadLetter(body, self._next_handle))
        return letters

    def delete_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            assert isinstance(letter.handle, int)
            del self.locked[letter.handle]

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            assert isinstance(letter.handle, int)
            self.dead.append(self.locked.pop(letter.handle))

    def close(self) -> None:
        self.closed = True
