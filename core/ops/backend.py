"""The operator port: what each cloud's adapter does for submit, watch, fetch and redrive.

The drivers (``core.ops.submit`` and friends) own batching, concurrency, retry rounds, the
manifest, progress and summary lines; an adapter only talks to its cloud. Every method
raises :class:`~core.errors.ConfigError` for what no retry can fix (no region, no
credentials, no such queue or bucket, access denied, unreachable endpoint), as one line that
names the fix, and :class:`~core.errors.CloudUnavailableError` for what another try may fix.
SDK exceptions never leave an adapter.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.packing import PACK_SUFFIX, PACKED_DIR, is_pack_name
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


@dataclass(frozen=True)
class RecordInfo:
    """One result (``.out``), error record (``.err``) or pack (``.jsonl``) as the store lists it."""

    name: str
    """The record's name: a task id, or ``invalid-<sha256>``."""
    suffix: str
    """``.out``, ``.err``, or ``.jsonl`` for a pack (then ``name`` is its hash)."""
    key: str
    """The object's key (or blob name) in the store."""
    size: int
    md5: str | None = None
    """The content's MD5 as hex, when the listing gives one (to skip identical local files)."""

    @property
    def file_name(self) -> str:
        """``{name}{suffix}``: the file the local runner would write (for a record)."""
        return self.name + self.suffix

    @property
    def is_pack(self) -> bool:
        """True for a pack of records (:mod:`core.packing`), not one record."""
        return self.suffix == PACK_SUFFIX


def record_from_key(key: str, prefix: str, size: int, md5: str | None = None) -> RecordInfo | None:
    """The record (or pack) a listed key holds, or None for anything else under the prefix.

    A pack (``{prefix}/packed/<hash>.jsonl``, see :mod:`core.packing`) is listed with the
    hash as its name and ``.jsonl`` as its suffix: :mod:`core.ops.packs` reads what it holds.
    """
    start = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    if not key.startswith(start):
        return None
    file_name = key[len(start) :]
    folder, _, pack_name = file_name.rpartition("/")
    if folder == PACKED_DIR and is_pack_name(pack_name):
        return RecordInfo(pack_name.removesuffix(PACK_SUFFIX), PACK_SUFFIX, key, size, md5)
    if folder:
        return None
    for suffix in (RESULT_SUFFIX, ERROR_SUFFIX):
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return RecordInfo(file_name[: -len(suffix)], suffix, key, size, md5)
    return None


@dataclass(frozen=True)
class Refused:
    """A message of a batch the queue did not take."""

    index: int
    """Its position in the batch given to :meth:`JobBackend.send_batch`."""
    reason: str
    retry: bool
    """True when sending it again may work (throttled, internal error)."""


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message, received (locked) for a redrive."""

    body: bytes
    handle: object
    """Whatever the adapter needs to delete or release it (receipt handle, ack id...)."""


@dataclass(frozen=True)
class QueueDepth:
    """Messages waiting and in flight on the task queue; None where the cloud cannot say."""

    waiting: int | None
    in_flight: int | None


class JobBackend(abc.ABC):
    """One deployed job's queue, dead-letter queue and results store (see the module doc)."""

    queue_label: str = "the queue"
    """How summary lines name the queue or topic, e.g. ``SQS queue https://...``."""
    results_label: str = "the results store"
    """How summary lines name where results are, e.g. ``s3://bucket/prefix/``."""
    max_batch_messages: int = 10
    max_batch_bytes: int = 256 * 1024
    max_concurrency: int = 64
    """Batches the adapter can have in flight at once (1 if its client is not thread-safe)."""
    max_fetch_concurrency: int = 32
    """Downloads the adapter can have in flight at once (its results client's pool size)."""

    def unsendable(self, body: bytes) -> str | None:
        """Why the queue can never take ``body`` (too large, refused characters), or None."""
        return None

    @abc.abstractmethod
    def send_batch(self, bodies: Sequence[bytes]) -> list[Refused]:
        """Send ``bodies`` as one message each; return those the queue refused.

        Raising means no message of the batch is known to be sent.
        """

    @abc.abstractmethod
    def list_records(self) -> Iterator[RecordInfo]:
        """Every result, error record and pack under the job's prefix (one list call per page)."""

    @abc.abstractmethod
    def read_record(self, record: RecordInfo) -> bytes:
        """The whole content of one record."""

    @abc.abstractmethod
    def dead_letter_count(self) -> int | None:
        """Messages in the dead-letter queue now, or None when the cloud cannot say."""

    def queue_depth(self) -> QueueDepth:
        """The task queue's backlog, as far as the cloud reports it."""
        return QueueDepth(None, None)

    @abc.abstractmethod
    def receive_dead_letters(self, max_messages: int) -> list[DeadLetter]:
        """Up to ``max_messages`` dead letters, locked for this caller; [] when none came."""

    @abc.abstractmethod
    def delete_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Remove ``letters`` (already sent again) from the dead-letter queue for good."""

    def release_dead_letters(self, letters: Sequence[DeadLetter]) -> None:  # noqa: B027
        """Give ``letters`` back to the dead-letter queue now (default: let their lock expire)."""

    def close(self) -> None:  # noqa: B027
        """Release clients and connections."""
