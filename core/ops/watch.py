"""``adder watch CLOUD``: follow a submitted job until every task is accounted for.

"Every" is the job's manifest (the record names its submit sent), not a queue depth, which
some clouds cannot give. Each poll lists the results prefix once (one list call per page of
up to 1,000 names), reads the packs it has not read before (packed results, one download
each) and reads the dead-letter count once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from core.ops.packs import PackedNames
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.ops.backend import JobBackend

EXIT_ALL_SUCCEEDED = 0
EXIT_SOME_FAILED = 1
EXIT_STILL_RUNNING = 3


@dataclass(frozen=True)
class JobCounts:
    """Where the tasks of one job are, at one poll."""

    expected: int
    succeeded: int
    rejected: int
    dead_lettered: int | None
    """Messages in the dead-letter queue; None when the cloud cannot say."""

    @property
    def accounted(self) -> int:
        """Tasks with a result, an error record, or a dead letter."""
        return self.succeeded + self.rejected + (self.dead_lettered or 0)

    @property
    def in_flight(self) -> int:
        """Tasks not accounted for yet (queued, running, or being retried)."""
        return max(self.expected - self.accounted, 0)

    @property
    def finished(self) -> bool:
        """True when every task is accounted for."""
        return self.accounted >= self.expected

    def line(self) -> str:
        """One status line."""
        dead = "?" if self.dead_lettered is None else f"{self.dead_lettered:,}"
        return (
            f"{self.succeeded:,} succeeded, {self.rejected:,} rejected, {dead} dead-lettered, "
            f"{self.in_flight:,} in flight, of {self.expected:,}"
        )


def poll(backend: JobBackend, expected: set[str], packed: PackedNames | None = None) -> JobCounts:
    """Count the job's results and error records (one listing) and the dead letters.

    Records in packs count too; ``packed`` keeps what earlier polls read, so each pack is
    read once per watch.
    """
    packed = packed if packed is not None else PackedNames()
    succeeded: set[str] = set()
    rejected: set[str] = set()
    packs = []
    for record in backend.list_records():
        if record.is_pack:
            packs.append(record)
        elif record.name not in expected:
            continue
        elif record.suffix == RESULT_SUFFIX:
            succeeded.add(record.name)
        elif record.suffix == ERROR_SUFFIX:
            rejected.add(record.name)
    packed.add(backend, packs)
    succeeded |= packed.results & expected
    rejected |= packed.errors & expected
    rejected -= succeeded  # a task retried to success after an error record counts once
    return JobCounts(len(expected), len(succeeded), len(rejected), backend.dead_letter_count())


def watch(
    backend: JobBackend,
    expected: set[str],
    *,
    interval: float = 5.0,
    timeout: float | None = None,
    live: bool = False,
    stream: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[JobCounts, int]:
    """Poll until the job is finished or ``timeout`` seconds passed; return counts and exit code.

    ``live`` redraws one line (a terminal); otherwise a line is printed when the counts change.
    Exit code: 0 every task succeeded, 1 some were rejected or dead-lettered, 3 still running
    at the timeout.
    """
    stream = stream or sys.stderr
    started = clock()
    last = ""
    packed = PackedNames()
    while True:
        counts = poll(backend, expected, packed)
        text = f"{counts.line()} ({clock() - started:,.0f}s)"
        if live:
            stream.write("\r" + text.ljust(78))
            stream.flush()
        elif counts.line() != last:
            print(text, file=stream, flush=True)
        last = counts.line()
        if counts.finished:
            break
        if timeout is not None and clock() - started + interval > timeout:
            if live:
                stream.write("\n")
            return counts, EXIT_STILL_RUNNING
        sleep(interval)
    if live:
        stream.write("\n")
    code = EXIT_ALL_SUCCEEDED if counts.succeeded >= counts.expected else EXIT_SOME_FAILED
    return counts, code
