"""The Lambda handler in the packed layout (RESULTS_LAYOUT=packed) with an in-memory store:
one write per batch, the partial batch response, the deadline, and reading the setting."""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.batch import UnreportableFailureError, process_batch
from aws_lambda.handler import handle_event
from core.errors import ConfigError, StoreWriteError
from core.packing import PACK_CONTENT_TYPE, ResultsLayout, is_pack_name, unpack
from core.pipeline import process_message
from core.ports import ResultStore
from tests.conftest import load_event

if TYPE_CHECKING:
    from collections.abc import Iterator

PACKED = ResultsLayout.PACKED


class CountingStore(ResultStore):
    """Keeps every put in order; ``fail`` makes each put raise the store's transient error."""

    def __init__(self, prefix: str = "jobs/p", *, fail: bool = False) -> None:
        self.prefix = prefix
        self.fail = fail
        self.puts: list[tuple[str, bytes, str]] = []
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self.fail:
            raise StoreWriteError(f"injected failure writing {key}")
        with self._lock:
            self.puts.append((key, data, content_type))

    def files(self) -> dict[str, bytes]:
        """Every record of every pack written, by file name (``{id}.out``, ``{name}.err``)."""
        return {r.file_name: r.content for _, data, _ in self.puts for r in unpack(data)}


def record(message_id: str | None, body: str, count: int = 1) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "body": body,
        "attributes": {"ApproximateReceiveCount": str(count)},
        "eventSource": "aws:sqs",
    }
    if message_id is not None:
        entry["messageId"] = message_id
    return entry


def task(task_id: str, num1: object, num2: object) -> str:
    return json.dumps({"id": task_id, "data": {"num1": num1, "num2": num2}})


def event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


MIXED = event(
    record("m1", task("a", 1, 2)),
    record("m2", task("b", 0.1, 0.2)),
    record("m3", task("bad", True, 2)),
    record("m4", "not json"),
)


@pytest.fixture
def fresh_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A new Lambda container: nothing read from the environment yet."""
    monkeypatch.setattr(lambda_module, "_layout", None)
    monkeypatch.setattr(lambda_module, "_store", None)
    yield


def test_a_packed_batch_is_one_write_holding_every_record_good_and_bad() -> None:
    # GIVEN a batch of two good tasks, one invalid task and one that is not JSON
    store = CountingStore()
    # WHEN the handler processes it in the packed layout
    response = handle_event(MIXED, context=None, store=store, layout=PACKED)
    # THEN nothing is retried, and the store was written exactly once: a pack under packed/
    assert response == {"batchItemFailures": []}
    [(key, _, content_type)] = store.puts
    assert key.startswith("jobs/p/packed/") and is_pack_name(key.rsplit("/", 1)[1])
    assert content_type == PACK_CONTENT_TYPE
    # AND the pack holds the results and both error records
    files = store.files()
    assert (files["a.out"], files["b.out"]) == (b"3", b"0.3")
    assert json.loads(files["bad.err"])["error"] == "invalid_number"
    [hashed] = [name for name in files if name.startswith("invalid-")]
    assert json.loads(files[hashed])["error"] == "invalid_json"
    assert len(files) == 4


def test_the_packed_layout_writes_what_the_default_one_writes_for_the_sample_event() -> None:
    # GIVEN the sample SQS event through both layouts
    per_task, packed = CountingStore(), CountingStore()
    handle_event(load_event("sqs_batch.json"), None, store=per_task, layout=ResultsLayout.PER_TASK)
    handle_event(load_event("sqs_batch.json"), None, store=packed, layout=PACKED)
    # THEN one write instead of one per record, and the same files once unpacked
    assert (len(per_task.puts), len(packed.puts)) == (3, 1)
    default_files = {key.removeprefix("jobs/p/"): data for key, data, _ in per_task.puts}
    assert packed.files() == default_files


def test_a_failed_pack_write_lists_every_record_for_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a store whose writes fail
    caplog.set_level(logging.INFO, logger="aws_lambda")
    store = CountingStore(fail=True)
    # WHEN a packed batch with good and bad tasks is handled
    response = handle_event(MIXED, context=None, store=store, layout=PACKED)
    # THEN every record goes back to the queue, the bad ones too (their records were not kept)
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(1, 5)]}
    # AND each record is logged once, as an error to retry
    lines = {r.message_id: r for r in caplog.records}  # type: ignore[attr-defined]
    assert sorted(lines) == ["m1", "m2", "m3", "m4"]
    assert {(r.levelno, r.outcome) for r in caplog.records} == {(logging.ERROR, "retry")}  # type: ignore[attr-defined]


def test_a_record_that_fails_unexpectedly_is_listed_alone_and_the_rest_are_packed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a bug that hits one task only
    def buggy(raw: Any, store: ResultStore) -> Any:
        if b"boom" in (raw if isinstance(raw, bytes) else str(raw).encode()):
            raise KeyError("bug")
        return process_message(raw, store)

    monkeypatch.setattr("core.delivery.process_message", buggy)
    store = CountingStore()
    batch = event(record("m1", task("ok", 1, 1)), record("m2", task("boom", 1, 1)))
    # WHEN the batch is handled packed
    response = handle_event(batch, context=None, store=store, layout=PACKED)
    # THEN only that record is retried; the other's result is in the one pack
    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert len(store.puts) == 1
    assert store.files() == {"ok.out": b"2"}


def test_no_record_starts_when_the_deadline_is_near_and_nothing_is_written() -> None:
    # GIVEN an invocation with 500 ms left and a 3000 ms margin
    store = CountingStore()
    records = [record(f"m{i}", task(f"t{i}", i, 1)) for i in range(3)]
    # WHEN the packed batch runs / THEN every record is retried, and nothing was written
    response = process_batch(
        records, store, executor=None, remaining_ms=lambda: 500, margin_ms=3000, layout=PACKED
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m{i}"} for i in range(3)]}
    assert store.puts == []


def test_a_failed_pack_with_a_record_without_message_id_fails_the_whole_batch() -> None:
    # GIVEN a packed batch holding a record without messageId, and a failing store
    records = [record("m1", task("a", 1, 2)), record(None, task("b", 1, 2))]
    # WHEN it runs / THEN only failing the invocation can retry that record
    with pytest.raises(UnreportableFailureError):
        process_batch(
            records,
            CountingStore(fail=True),
            executor=None,
            remaining_ms=lambda: 1e9,
            margin_ms=0,
            layout=PACKED,
        )


def test_an_empty_batch_writes_nothing() -> None:
    store = CountingStore()
    assert handle_event(event(), context=None, store=store, layout=PACKED) == {
        "batchItemFailures": []
    }
    assert store.puts == []


def test_the_same_batch_delivered_again_rewrites_the_same_pack() -> None:
    # GIVEN a batch, and the same messages delivered again in another order with other ids
    first = event(record("m1", task("x", 1, 2)), record("m2", "not json"))
    again = event(record("n2", "not json", count=2), record("n1", task("x", 1, 2), count=2))
    store = CountingStore()
    # WHEN both are handled
    handle_event(first, None, store=store, layout=PACKED)
    handle_event(again, None, store=store, layout=PACKED)
    # THEN both wrote the same key with the same bytes: the duplicate is harmless
    [(key1, data1, _), (key2, data2, _)] = store.puts
    assert (key1, data1) == (key2, data2)


@pytest.mark.usefixtures("fresh_container")
def test_the_handler_reads_results_layout_once_per_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a container started with RESULTS_LAYOUT=packed
    monkeypatch.setenv("RESULTS_LAYOUT", "packed")
    store = CountingStore()
    handle_event(MIXED, None, store=store)
    # WHEN the environment changes under it (it cannot, on Lambda, without a new container)
    monkeypatch.setenv("RESULTS_LAYOUT", "per_task")
    handle_event(MIXED, None, store=store)
    # THEN both batches were packed: one write each
    assert len(store.puts) == 2
    assert all("/packed/" in key for key, _, _ in store.puts)
    # AND a layout passed in wins over the container's
    handle_event(MIXED, None, store=store, layout=ResultsLayout.PER_TASK)
    assert len(store.puts) == 2 + 4


@pytest.mark.usefixtures("fresh_container")
def test_an_unset_layout_is_one_object_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESULTS_LAYOUT", raising=False)
    store = CountingStore()
    handle_event(MIXED, None, store=store)
    assert len(store.puts) == 4
    assert not any("/packed/" in key for key, _, _ in store.puts)


@pytest.mark.usefixtures("fresh_container")
def test_an_unknown_layout_fails_the_invocation_like_a_missing_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a function deployed with RESULTS_LAYOUT=zip (not through the stack, which refuses it)
    monkeypatch.setenv("RESULTS_BUCKET", "b")
    monkeypatch.setenv("RESULTS_LAYOUT", "zip")
    store = CountingStore()
    # WHEN Lambda invokes it / THEN the invocation fails with one line naming the setting
    # (Lambda then returns the whole batch to the queue), before anything is written
    with pytest.raises(ConfigError) as raised:
        lambda_module.lambda_handler(MIXED, None)
    assert str(raised.value) == "RESULTS_LAYOUT='zip': use 'per_task' or 'packed'"
    with pytest.raises(ConfigError, match="RESULTS_LAYOUT"):
        handle_event(MIXED, None, store=store)
    assert store.puts == []
    # AND as a missing RESULTS_BUCKET does
    monkeypatch.delenv("RESULTS_BUCKET")
    monkeypatch.setenv("RESULTS_LAYOUT", "packed")
    with pytest.raises(ConfigError, match=r"^RESULTS_BUCKET is not set"):
        lambda_module.lambda_handler(MIXED, None)
    # AND once the setting is fixed, the same container works (a failed read is not kept)
    handle_event(MIXED, None, store=store)
    assert len(store.puts) == 1
