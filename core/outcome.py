"""What became of one task message, the same three ways on every platform."""

from __future__ import annotations

import enum
from typing import NamedTuple


class OutcomeKind(enum.Enum):
    """``SUCCEEDED`` wrote ``{id}.out``; ``REJECTED`` wrote an error record (permanent failure);
    ``SKIPPED`` found ``{id}.out`` already there and wrote nothing (the local ``--resume``).

    The third outcome, a transient failure, is not a value: it is
    :class:`~core.errors.StoreWriteError`, raised so that the queue delivers the message again.
    """

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    SKIPPED = "skipped"


class Outcome(NamedTuple):
    """The handled result of one message: its kind, the task id if any, and the record name."""

    kind: OutcomeKind
    name: str
    """The task id for a success; the error record's name (without ``.err``) for a rejection."""
    task_id: str | None = None
    code: str | None = None
    reason: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the result was written."""
        return self.kind is OutcomeKind.SUCCEEDED
