"""The reliability gauntlet on Azure in the packed layout: one pack blob per batch of messages.

The same inputs and checks as the per-task Azure tests (test_bad_inputs.py, test_faults.py,
test_duplicates.py, whose helpers are imported), through the function the app registers with
``RESULTS_LAYOUT=packed`` (the ``cardinality=many`` batch trigger), writing to Azurite. Results
are read the way an operator reads them: ``adder fetch``'s code (``core.ops.fetch.fetch`` over
``AzureJobBackend``) unpacks the packs into a directory, which must hold exactly the files the
per-task layout gives.

No Service Bus emulator exists here, so the host's batch dispatch is simulated
(:func:`deliver_in_batches`): each round, the messages still on the queue are cut, in queue
order, into batches of the trigger's batch size and handed to the function (a few batches at a
time: instances; each instance runs one batch at a time, as the extension's batch receive loop
does); a batch whose call raises is abandoned whole, each of its messages comes back with its
delivery count + 1, and is dead-lettered after MAX_DELIVERIES deliveries. Real Service Bus
may regroup redelivered messages differently; the batch's outcome does not depend on it.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from azure_function import function_app
from azure_function.blob_store import RETRIES, BlobResultStore, default_retry
from azure_function.job_backend import AzureJobBackend
from azure_function.jobs import container_client
from core.delivery import Delivery, deliver_packed
from core.errors import StoreWriteError
from core.ops.fetch import fetch
from core.packing import PACK_SUFFIX, PACKED_DIR, is_pack_name, pack_key, unpack
from core.ports import ResultStore
from tests.conftest import REPO_ROOT
from tests.integration.azure.batches import Sent, batch_of, packed_settings, packed_user_function
from tests.integration.azure.conftest import ACCOUNT, connection_string
from tests.integration.azure.messages import app_settings_for, make_message, registered_function
from tests.reliability.ledger import Row, load_messages
from tests.reliability.test_bad_inputs import CORPUS, not_carried_note, problems_of
from tests.reliability.test_duplicates import AT_ONCE, Target, run_scenarios, save, task
from tests.reliability.test_faults import (
    FAST_RETRY,
    MAX_DELIVERIES,
    Message,
    azure_rule,
    blob_error,
    leading_faults,
    settle,
    workload,
)
from tools.fault_proxy import FaultProxy, FaultRule

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from azure.storage.blob import ContainerClient

    from tests.integration.azure.conftest import Azurite
    from tests.reliability.corpus import Case

pytestmark = pytest.mark.integration

TARGET = "azure (packed)"
HOST_BATCH_SIZE: int = json.loads((REPO_ROOT / "azure_function" / "host.json").read_text())[
    "extensions"
]["serviceBus"]["maxMessageBatchSize"]
"""The batch trigger's maxMessageBatchSize (infra/azure's max_message_batch_size default)."""


# --- reading results as `adder fetch` does ----------------------------------------------------


def fetch_into(azurite: Azurite, container: str, prefix: str, directory: Path) -> dict[str, bytes]:
    """``adder fetch`` of ``prefix`` into ``directory`` (packs unpacked): every file's bytes."""
    client = container_client(container, connection_string=azurite.connection_string)
    backend = AzureJobBackend(None, client, prefix)
    try:
        summary = fetch(backend, directory)
    finally:
        backend.close()
    assert (summary.failed, summary.refused) == (0, 0)
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def pack_problems(container: ContainerClient, prefix: str) -> list[str]:
    """Every blob under ``prefix`` that is not a whole pack named by its own content."""
    problems = []
    for name in container.list_blob_names():
        folder, _, file_name = name.rpartition("/")
        if folder != f"{prefix}/{PACKED_DIR}" or not is_pack_name(file_name):
            problems.append(f"{name}: not a pack under {prefix}/{PACKED_DIR}/")
            continue
        body = container.download_blob(name).readall()
        if pack_key(prefix, body) != name:
            problems.append(f"{name}: its bytes are not the pack of that name")
        unpack(body)  # raises on a line that is not a record
    return problems


class _KeyOnly(ResultStore):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.keys: list[str] = []

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.keys.append(key)


def expected_pack_key(prefix: str, bodies: Sequence[bytes]) -> str:
    """The pack a batch of these bodies makes (computed here, without the function)."""
    store = _KeyOnly(prefix)
    deliver_packed([Delivery(body) for body in bodies], store, lambda *args: None)
    (key,) = store.keys
    return key


# --- the host's batch dispatch, simulated ----------------------------------------------------


@dataclass
class BatchRun:
    """What each message saw, batch by batch, until it was completed or dead-lettered."""

    seen: dict[str, list[str]] = field(default_factory=dict)
    """Per message id, one entry per delivery: ``returned`` or the exception's type."""
    batchmates: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    """Per message id, the ids of its batch at each delivery."""
    dead: list[str] = field(default_factory=list)
    calls: int = 0

    @property
    def deliveries(self) -> int:
        return sum(len(seen) for seen in self.seen.values())


def deliver_in_batches(
    messages: Sequence[Sent],
    batch_size: int,
    function: Callable[[list[Any]], object],
    *,
    instances: int,
) -> BatchRun:
    """Hand ``messages`` to the batch ``function`` as the host would (see the module's doc)."""
    run = BatchRun({m.message_id: [] for m in messages}, {m.message_id: [] for m in messages})
    pending = list(messages)
    for delivery in range(1, MAX_DELIVERIES + 1):
        if not pending:
            break
        batches = [
            [Sent(m.body, m.message_id, delivery) for m in pending[start : start + batch_size]]
            for start in range(0, len(pending), batch_size)
        ]

        def call(batch: list[Sent]) -> str:
            try:
                function(batch_of(batch))
            except StoreWriteError as error:
                return type(error).__name__
            return "returned"

        with ThreadPoolExecutor(instances) as pool:
            answers = list(pool.map(call, batches))
        run.calls += len(batches)
        failed: set[str] = set()
        for batch, answer in zip(batches, answers, strict=True):
            ids = frozenset(m.message_id for m in batch)
            for message in batch:
                run.seen[message.message_id].append(answer)
                run.batchmates[message.message_id].append(ids)
            if answer != "returned":
                failed |= ids
        pending = [m for m in pending if m.message_id in failed]
    run.dead = [m.message_id for m in pending]
    return run


def sent(messages: Sequence[Message]) -> list[Sent]:
    """The workload's messages on the queue, in order, each with its message id."""
    return [Sent(m.body, f"m-{m.task_id}") for m in messages]


# --- bad input ----------------------------------------------------------------------------


def test_packed_azure_function_handles_every_case_like_the_per_task_one(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN every case Service Bus can carry, shuffled onto the queue
    cases = CORPUS.carried_by("servicebus")
    queue = [Sent(case.raw, f"sb-{index}") for index, case in enumerate(cases)]
    random.Random(41).shuffle(queue)
    started = time.monotonic()
    # WHEN the packed function gets them in batches of 16 (4 instances at a time)
    with (
        app_settings_for(
            monkeypatch, azurite.connection_string, container.container_name, "packed"
        ),
        packed_settings(monkeypatch),
    ):
        run = deliver_in_batches(queue, 16, packed_user_function(), instances=4)
    seconds = time.monotonic() - started
    # THEN every batch returned (the host completes it): none was retried
    assert run.dead == [] and run.deliveries == len(cases)
    assert {answer for seen in run.seen.values() for answer in seen} == {"returned"}
    # AND the container holds one whole pack per batch, and nothing else
    assert pack_problems(container, "packed") == []
    assert len(list(container.list_blob_names())) == run.calls
    # AND `adder fetch` unpacks them into exactly one right file per case
    packed = fetch_into(azurite, container.container_name, "packed", tmp_path / "packed")
    assert sorted(packed) == sorted(case.file_name for case in cases)

    def read(case: Case) -> bytes | None:
        return packed.get(case.file_name)

    assert problems_of(cases, read) == {}
    # WHEN the same messages go one by one through the per-task function under another prefix
    with app_settings_for(
        monkeypatch, azurite.connection_string, container.container_name, "per-task"
    ):
        single = registered_function().get_user_function()
        for message in queue:
            single(make_message(message.body, message_id=message.message_id))
    # THEN `adder fetch` gives the very same files, byte for byte
    per_task = fetch_into(azurite, container.container_name, "per-task", tmp_path / "per-task")
    assert per_task == packed
    reliability_row(
        Row(
            "bad input",
            TARGET,
            "corpus as Service Bus batches of 16 through the batch trigger (Azurite); "
            "fetched files identical to the per-task layout's",
            cases=len(cases),
            messages=len(cases),
            results=sum(case.good for case in cases),
            error_records=sum(not case.good for case in cases),
            seconds=seconds,
            note=f"{run.calls} pack blobs for {len(cases)} tasks; "
            + not_carried_note("servicebus"),
        )
    )


# --- store faults -------------------------------------------------------------------------

PREFIX = "jobs/packed-faults"
BATCH = 10


def ids_pattern(ids: Sequence[str]) -> bytes:
    """A pack line holding any of these records, the record's name captured (the rule's key)."""
    names = "|".join(re.escape(name) for name in ids)
    return f'"(?:id|name)": "({names})"'.encode()


def test_packed_azure_faults_retry_whole_batches_and_a_pack_never_written_dead_letters_its_batch(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN 200 messages (190 good, 10 bad) on the queue, which the trigger takes 10 at a time
    # (20 batches), and a fault proxy between the function's blob client and Azurite, choosing
    # packs by a record they hold: 2 batches' packs always get 503 ServerBusy (the SDK retries 3
    # times, then the batch raises on every delivery); 3 get one 403 (not retried by the SDK:
    # one redelivery); 3 are written but answered 403 (the redelivery rewrites the same pack);
    # 3 lose their connection once (the SDK retries); every other pack a seeded 15% chance of
    # 503 on each attempt (the SDK absorbs it, unless all 4 attempts of a delivery fail)
    messages = workload(190, 10, seed=51)
    queue = sent(messages)
    batches = [messages[start : start + BATCH] for start in range(0, len(messages), BATCH)]
    chosen = random.Random(52).sample(range(len(batches)), 11)
    doomed_b, hiccup_b, late_b, dropped_b = chosen[:2], chosen[2:5], chosen[5:8], chosen[8:]

    def marker(index: int) -> str:
        return batches[index][0].record.rsplit(".", 1)[0]

    base = rf"^/{ACCOUNT}/{container.container_name}/"
    packs = base + f"({re.escape(PREFIX)}/{PACKED_DIR}/[0-9a-f]+{re.escape(PACK_SUFFIX)})"
    busy = blob_error(503, "ServerBusy")
    forbidden = blob_error(403, "AuthorizationPermissionMismatch")
    rules = {
        "doomed": FaultRule(
            "PUT", packs, ids_pattern([marker(i) for i in doomed_b]), busy.status,
            body=busy.body, headers=busy.headers, name="doomed",
        ),
        "hiccup": FaultRule(
            "PUT", packs, ids_pattern([marker(i) for i in hiccup_b]), forbidden.status,
            "first_n_per_key", n=1, body=forbidden.body, headers=forbidden.headers,
            name="hiccup",
        ),
        "late": FaultRule(
            "PUT", packs, ids_pattern([marker(i) for i in late_b]), forbidden.status,
            "first_n_per_key", n=1, when="after", body=forbidden.body,
            headers=forbidden.headers, name="late",
        ),
        "dropped": FaultRule(
            "PUT", packs, ids_pattern([marker(i) for i in dropped_b]), None,
            "first_n_per_key", n=1, name="dropped",
        ),
        "flaky": azure_rule(busy, packs, "probability", p=0.15, seed=54, name="flaky"),
    }  # fmt: skip
    attempts_per_delivery = 1 + RETRIES

    with FaultProxy(f"http://127.0.0.1:{azurite.port}", list(rules.values())) as proxy:
        store = BlobResultStore(
            container.container_name,
            PREFIX,
            connection_string=connection_string(proxy.port),
            retry=default_retry(**FAST_RETRY),
        )
        monkeypatch.setattr(function_app, "results_store", lambda: store)
        # WHEN the batches are delivered (4 instances), abandoned batches again, up to
        # max_delivery_count
        run = deliver_in_batches(queue, BATCH, packed_user_function(), instances=4)

    # THEN each message kept its batch on every delivery, and saw what its pack's fate says:
    # the doomed batches raised on every delivery and were dead-lettered whole; a hiccup or
    # a late batch raised once; a flaky pack cost one delivery per 4 failed attempts in a row
    flaky = rules["flaky"]
    for index, batch in enumerate(batches):
        key = expected_pack_key(PREFIX, [m.body for m in batch])
        if index in doomed_b:
            expected = ["StoreWriteError"] * MAX_DELIVERIES
        elif index in hiccup_b or index in late_b:
            expected = ["StoreWriteError", "returned"]
        elif index in dropped_b:
            expected = ["returned"]
        else:
            failed = leading_faults(flaky, key) // attempts_per_delivery
            expected = ["StoreWriteError"] * failed + ["returned"]
        ids = frozenset(f"m-{m.task_id}" for m in batch)
        for message in batch:
            assert run.seen[f"m-{message.task_id}"] == expected, (index, message.task_id)
            assert set(run.batchmates[f"m-{message.task_id}"]) == {ids}
    dead = {f"m-{m.task_id}" for i in doomed_b for m in batches[i]}
    assert set(run.dead) == dead
    # AND at the proxy: 4 attempts per delivery of a doomed pack, a 403 never retried by the
    # SDK (the late ones were written anyway), a dropped connection retried
    assert sum(rules["doomed"].attempts.values()) == (
        len(doomed_b) * attempts_per_delivery * MAX_DELIVERIES
    )
    for name in ("hiccup", "late", "dropped"):
        assert sorted(rules[name].attempts.values()) == [2, 2, 2], name
    assert flaky.injected > 0
    # AND every blob is a whole pack named by its content, one per batch that got through
    assert pack_problems(container, PREFIX) == []
    assert len(list(container.list_blob_names())) == len(batches) - len(doomed_b)
    # AND the ledger, from `adder fetch`'s files: every message not dead-lettered has its exact
    # result or error record, and no dead-lettered one has any
    objects = fetch_into(azurite, container.container_name, PREFIX, tmp_path / "fetched")
    dead_ids = {m.task_id for m in messages if f"m-{m.task_id}" in dead}
    ledger = settle(messages, objects, dead_ids)
    writes = sum(rule.matched for rule in proxy.rules)
    reliability_row(
        Row(
            "store faults",
            TARGET,
            "pack uploads (10 tasks each) through a fault proxy: 503 ServerBusy (15% of attempts)"
            " and dropped connections retried by the SDK, 403 once before or after the write"
            " (batch redelivered), 503 always (batch dead-lettered after 5 deliveries)",
            cases=len(chosen) + len(flaky.faults),
            messages=len(messages),
            faults_injected=proxy.injected,
            results=ledger.results,
            error_records=ledger.error_records,
            dead_lettered=ledger.dead_lettered,
            lost=ledger.lost,
            wrong=ledger.wrong,
            duplicates=run.deliveries - len(messages),
            seconds=time.monotonic() - started,
            note=f"{writes} pack PUT attempts for {len(messages)} messages; a pack that can never"
            f" be written dead-letters its whole batch: {len(doomed_b)} doomed packs,"
            f" {len(dead)} messages dead-lettered; the host's batch dispatch and redelivery are"
            " simulated by the test (no Service Bus emulator); SDK retry count as in production,"
            " no waits",
        )
    )


# --- duplicate delivery -------------------------------------------------------------------


def test_packed_azure_function_duplicates(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the packed function writing to Azurite; each delivery is a batch of its own, and
    # what is stored is what `adder fetch` unpacks from every pack
    prefix = "jobs/packed-duplicates"
    counts: dict[str, int] = {}
    lock = threading.Lock()
    fetches = iter(range(10**6))

    def stored() -> dict[str, bytes]:
        directory = tmp_path / f"fetch-{next(fetches)}"
        return fetch_into(azurite, container.container_name, prefix, directory)

    with (
        app_settings_for(monkeypatch, azurite.connection_string, container.container_name, prefix),
        packed_settings(monkeypatch),
    ):
        function = packed_user_function()

        def deliver(body: bytes, message_id: str) -> None:
            with lock:  # Service Bus redelivers with the same id and a growing count
                counts[message_id] = counts.get(message_id, 0) + 1
                count = counts[message_id]
            assert function(batch_of([Sent(body, message_id, count)])) is None

        started = time.monotonic()
        # WHEN every scenario runs (concurrent deliveries are concurrent batches)
        target = Target(TARGET, deliver, lambda: sorted(stored()), lambda n: stored().get(n))
        tally = run_scenarios(target)
        # AND the same message arrives 16 times in ONE batch
        body = task("dup-in-one-batch", 7, 8)
        copies = [Sent(body, "same-message", 1)] * AT_ONCE
        blobs_before = set(container.list_blob_names())
        assert function(batch_of(copies)) is None
    # THEN that batch wrote one pack holding one record, the sum
    (new,) = set(container.list_blob_names()) - blobs_before
    assert [(r.file_name, r.content) for r in unpack(container.download_blob(new).readall())] == [
        ("dup-in-one-batch.out", b"15")
    ]
    tally.expected["dup-in-one-batch.out"] = {"15"}
    tally.deliveries += AT_ONCE
    tally.results += 1
    # AND every blob is a whole pack, and fetch gives exactly the expected names
    assert pack_problems(container, prefix) == []
    assert sorted(stored()) == sorted(tally.expected)
    save(tally, TARGET, started, reliability_row, f"; {AT_ONCE} copies in one batch")


# --- load ---------------------------------------------------------------------------------


def test_packed_azure_load_loses_nothing_and_writes_one_blob_per_batch(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN load_messages() tasks (1% bad) on the queue, taken in batches of the trigger's
    # maxMessageBatchSize, and a fault proxy in front of Azurite: the packs of 2 batches fail
    # all 4 attempts of their first upload (the batch is redelivered whole), every other pack
    # upload attempt fails with a seeded 30% chance (503: the SDK retries; a delivery fails
    # when 4 in a row do)
    total = load_messages()
    messages = workload(total - total // 100, total // 100, seed=61)
    queue = sent(messages)
    batches = [queue[start : start + HOST_BATCH_SIZE] for start in range(0, total, HOST_BATCH_SIZE)]
    outage_b = random.Random(63).sample(range(len(batches)), 2)
    markers = [batches[i][0].message_id.removeprefix("m-") for i in outage_b]
    packs = rf"^/{ACCOUNT}/{container.container_name}/(jobs/load/{PACKED_DIR}/[^?]+)"
    busy = blob_error(503, "ServerBusy")
    outage = FaultRule(
        "PUT", packs, ids_pattern(markers), busy.status, "first_n_per_key", n=1 + RETRIES,
        body=busy.body, headers=busy.headers, name="outage",
    )  # fmt: skip
    flaky = azure_rule(busy, packs, "probability", p=0.3, seed=62, name="flaky")
    with FaultProxy(f"http://127.0.0.1:{azurite.port}", [outage, flaky]) as proxy:
        store = BlobResultStore(
            container.container_name,
            "jobs/load",
            connection_string=connection_string(proxy.port),
            retry=default_retry(**FAST_RETRY),
        )
        monkeypatch.setattr(function_app, "results_store", lambda: store)
        # WHEN they are delivered by 4 instances, abandoned batches again
        run = deliver_in_batches(queue, HOST_BATCH_SIZE, packed_user_function(), instances=4)
    # THEN nothing was dead-lettered; the outage batches took two deliveries, and every other
    # batch one more per 4 failed attempts in a row
    assert run.dead == []
    for index, batch in enumerate(batches):
        if index in outage_b:
            expected = ["StoreWriteError", "returned"]
        else:
            key = expected_pack_key("jobs/load", [m.body for m in batch])
            expected = ["StoreWriteError"] * (leading_faults(flaky, key) // (1 + RETRIES))
            expected.append("returned")
        assert {tuple(run.seen[m.message_id]) for m in batch} == {tuple(expected)}, index
    # AND the blob writes were one per batch (plus retries), each a whole pack
    assert len(list(container.list_blob_names())) == len(batches)
    assert pack_problems(container, "jobs/load") == []
    # AND `adder fetch` gives every task its exact result or error record
    objects = fetch_into(azurite, container.container_name, "jobs/load", tmp_path / "fetched")
    ledger = settle(messages, objects, set())
    attempts = outage.matched + flaky.matched
    reliability_row(
        Row(
            "load",
            TARGET,
            f"{total:,} tasks in batches of {HOST_BATCH_SIZE:,} through the batch trigger to"
            " Azurite: 30% of pack upload attempts fail with 503, 2 batches fail a whole"
            " delivery",
            cases=1,
            messages=total,
            faults_injected=proxy.injected,
            results=ledger.results,
            error_records=ledger.error_records,
            lost=ledger.lost,
            wrong=ledger.wrong,
            duplicates=run.deliveries - total,
            seconds=time.monotonic() - started,
            note=f"{len(batches)} pack blobs and {attempts} upload attempts for {total:,} tasks"
            f" (the per-task layout: {total:,} blobs); batch dispatch simulated",
        )
    )
