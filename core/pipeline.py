"""The one pipeline every entry point runs: parse, add, write, and say what happened."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import InvalidTaskError, StoreWriteError
from core.outcome import Outcome, OutcomeKind
from core.records import ErrorRecord
from core.task import RawTask, parse_task

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.ports import ResultStore


def process_message(
    raw: RawTask, store: ResultStore, *, skip_if: Callable[[str], bool] | None = None
) -> Outcome:
    """Handle one task message end to end.

    ``skip_if(task_id)`` returning true skips a valid task without writing (``SKIPPED``).

    Returns a ``SUCCEEDED`` outcome (result written) or a ``REJECTED`` one (the task is bad
    and its error record was written: acknowledge the message). Raises
    :class:`~core.errors.StoreWriteError` when the store failed: let the message be retried.
    """
    try:
        task = parse_task(raw)
    except InvalidTaskError as error:
        return reject(error, raw, store)
    if skip_if is not None and skip_if(task.task_id):
        return Outcome(OutcomeKind.SKIPPED, task.task_id, task.task_id)
    try:
        store.write_result(task.task_id, task.result_text())
    except StoreWriteError as error:
        error.task_id = task.task_id  # so the retry's log line can name the task
        raise
    return Outcome(OutcomeKind.SUCCEEDED, task.task_id, task.task_id)


def reject(error: InvalidTaskError, raw: object, store: ResultStore) -> Outcome:
    """Write the error record of a message that can never succeed, and say so.

    Entry points also call it for an envelope they cannot decode (the message never reaches
    the task parser): the record keeps whatever bytes arrived.
    """
    record = ErrorRecord.for_rejection(error, raw)
    try:
        store.write_error(record)
    except StoreWriteError as store_error:
        store_error.task_id = record.task_id
        raise
    return Outcome(OutcomeKind.REJECTED, record.name, record.task_id, error.code, error.message)


def record_name(raw: RawTask) -> str:
    """The name the pipeline gives the result or error record of ``raw`` (no store needed).

    Submit writes it to the job's manifest, so watch and fetch know what to look for.
    """
    try:
        return parse_task(raw).task_id
    except InvalidTaskError as error:
        return ErrorRecord.for_rejection(error, raw).name
