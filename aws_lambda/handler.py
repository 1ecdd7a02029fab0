"""AWS Lambda entry point: ``aws_lambda.handler.lambda_handler`` (SQS event source mapping).

Settings (environment): ``RESULTS_BUCKET`` (required), ``RESULTS_PREFIX`` (default empty),
``RESULTS_LAYOUT`` (``per_task``, the default: one object per task; ``packed``: one object per
batch, see ``core.packing``), ``ADDER_MAX_CONCURRENCY`` (records written at once, default 32),
``ADDER_DEADLINE_MARGIN_MS`` (no record starts when less time than this is left, default 3000).

A missing ``RESULTS_BUCKET`` or an unknown ``RESULTS_LAYOUT`` fails the invocation with one
ConfigError line naming the setting, before any record runs: Lambda returns the whole batch to
the queue (after ``max_receive_count`` receives, to the dead-letter queue); nothing is lost.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aws_lambda.batch import PartialBatchResponse, process_batch
from aws_lambda.envelope import sqs_records
from aws_lambda.s3_store import S3ResultStore, store_from_environment
from core.packing import ResultsLayout, results_layout_from_environment

if TYPE_CHECKING:
    from collections.abc import Mapping

    from core.ports import ResultStore

DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_DEADLINE_MARGIN_MS = 3000

_lock = threading.Lock()
_store: S3ResultStore | None = None
_layout: ResultsLayout | None = None
_executor: ThreadPoolExecutor | None = None


def _setting(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


def default_store() -> S3ResultStore:
    """The container's S3 store, built from the environment on first use."""
    global _store
    if _store is None:
        with _lock:
            if _store is None:
                _store = store_from_environment()
    return _store


def default_layout() -> ResultsLayout:
    """The container's results layout (``RESULTS_LAYOUT``), read on first use."""
    global _layout
    if _layout is None:
        with _lock:
            if _layout is None:
                _layout = results_layout_from_environment()
    return _layout


def _default_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                workers = max(1, _setting("ADDER_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY))
                _executor = ThreadPoolExecutor(workers, thread_name_prefix="adder")
    return _executor


def handle_event(
    event: Mapping[str, Any],
    context: Any,
    store: ResultStore | None = None,
    layout: ResultsLayout | None = None,
) -> PartialBatchResponse:
    """Process an SQS event with ``store`` (default: the container's S3 store) in ``layout``
    (default: the container's ``RESULTS_LAYOUT``)."""
    records = sqs_records(event)
    layout = layout or default_layout()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return process_batch(
        records,
        store or default_store(),
        executor=_default_executor(),
        remaining_ms=remaining if callable(remaining) else (lambda: float("inf")),
        margin_ms=_setting("ADDER_DEADLINE_MARGIN_MS", DEFAULT_DEADLINE_MARGIN_MS),
        layout=layout,
    )


def lambda_handler(event: Mapping[str, Any], context: Any) -> PartialBatchResponse:
    """The function's handler, as configured in infra/aws."""
    return handle_event(event, context)
