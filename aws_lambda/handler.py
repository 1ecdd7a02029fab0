"""AWS Lambda entry point: ``aws_lambda.handler.lambda_handler`` (SQS event source mapping).

Settings (environment): ``RESULTS_BUCKET`` (required), ``RESULTS_PREFIX`` (default empty),
``ADDER_MAX_CONCURRENCY`` (records written at once, default 32), ``ADDER_DEADLINE_MARGIN_MS``
(no record starts when less time than this is left, default 3000).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aws_lambda.batch import PartialBatchResponse, process_batch
from aws_lambda.envelope import sqs_records
from aws_lambda.s3_store import S3ResultStore, store_from_environment

if TYPE_CHECKING:
    from collections.abc import Mapping

    from core.ports import ResultStore

DEFAULT_MAX_CONCURRENCY = 32
DEFAULT_DEADLINE_MARGIN_MS = 3000

_lock = threading.Lock()
_store: S3ResultStore | None = None
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


def _default_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                workers = max(1, _setting("ADDER_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY))
                _executor = ThreadPoolExecutor(workers, thread_name_prefix="adder")
    return _executor


def handle_event(
    event: Mapping[str, Any], context: Any, store: ResultStore | None = None
) -> PartialBatchResponse:
    """Process an SQS event with ``store`` (default: the container's S3 store)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return process_batch(
        sqs_records(event),
        store or default_store(),
        executor=_default_executor(),
        remaining_ms=remaining if callable(remaining) else (lambda: float("inf")),
        margin_ms=_setting("ADDER_DEADLINE_MARGIN_MS", DEFAULT_DEADLINE_MARGIN_MS),
    )


def lambda_handler(event: Mapping[str, Any], context: Any) -> PartialBatchResponse:
    """The function's handler, as configured in infra/aws."""
    return handle_event(event, context)
