"""The gauntlet on GCP in the packed layout: bad inputs, store faults, duplicate delivery.

The function runs in the real functions-framework server (the deployment zip) with
``RESULTS_LAYOUT=packed``: the requests one instance holds at once (up to its 4 threads) are
written as one pack, after a 200 ms window at most. Everything is read back through the packs
(:func:`core.packing.unpack`, what ``adder fetch`` does) and held to the default layout's
checks, with the default layout's own helpers: each case ends as exactly its record, nothing
is lost or wrong, and a pack that could not be written is delivered again whole.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.integration.gcp.conftest import MISSING_BUCKET
from tests.integration.gcp.packed import packed_function_running, packs, unpacked_files
from tests.reliability.corpus import Case, record_problems
from tests.reliability.ledger import Row
from tests.reliability.test_bad_inputs import CORPUS, post_case, problems_of
from tests.reliability.test_duplicates import Target, run_scenarios, save
from tests.reliability.test_faults import (
    MAX_DELIVERIES,
    Message,
    bad_message,
    deliver_until_settled,
    gcs_error,
    good_message,
    pick,
    push_body,
    settle,
    workload,
)
from tools.fault_proxy import FaultProxy, FaultRule

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

pytestmark = pytest.mark.integration

WINDOW_MS = 200
"""PACK_MAX_WAIT_MS of the function under test."""


# --- bad inputs ---------------------------------------------------------------------------


def test_gcp_packed_function_handles_every_case_in_every_delivery_mode(
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    new_bucket: Any,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the packed function, with a bucket of its own
    prefix = "jobs/bad-inputs-packed"
    cases = CORPUS.carried_by("pubsub")
    plain = [case for case in cases if not case.on_gcp]
    started = time.monotonic()
    deliveries = refused = pack_count = 0
    with packed_function_running(
        function_source,
        gcs_emulator,
        new_bucket.name,
        prefix,
        tmp_path / "function.log",
        max_wait_ms=WINDOW_MS,
    ) as server:
        for mode in ("push", "structured", "binary"):
            # WHEN every case is delivered in this mode, 4 at a time (packs of up to 4)
            ids = {case.name: f"{mode}-{index}" for index, case in enumerate(cases)}
            with ThreadPoolExecutor(4) as pool:
                futures = {
                    case.name: pool.submit(post_case, server.url, mode, case, ids[case.name])
                    for case in cases
                }
                statuses = {name: future.result().status_code for name, future in futures.items()}
            deliveries += len(cases)
            # THEN each is acknowledged (as in the default layout, where the corpus says so)
            expected_status = {case.name: case.on_gcp.get(f"{mode}_status", 200) for case in cases}
            assert statuses == expected_status, mode
            refused += sum(status >= 300 for status in statuses.values())
            recorded = [c for c in cases if c.on_gcp and expected_status[c.name] < 300]
            # AND the packs (nothing else is under the prefix) hold exactly one record per
            # delivered case, each what the default layout writes for it
            pack_count += len(packs(gcs_client, new_bucket.name, prefix))
            files = unpacked_files(gcs_client, new_bucket.name, prefix)
            extra = sorted(name for name in files if name not in {c.file_name for c in plain})
            assert len(extra) == len(recorded), (mode, extra)
            assert problems_of(plain, reader(files)) == {}, mode
            for case, name in zip(recorded, extra, strict=True):
                content = files[name]
                assert record_problems(case, content, code=case.on_gcp["code"]) == [], mode
                assert json.loads(json.loads(content)["raw"])["messageId"] == ids[case.name]
            for blob in gcs_client.list_blobs(new_bucket.name):
                blob.delete()
    good = 3 * len(CORPUS.good)
    reliability_row(
        Row(
            "bad input",
            "gcp (packed)",
            "corpus through functions-framework in the packed layout as raw push, structured "
            "and binary CloudEvents",
            cases=len(cases),
            messages=deliveries,
            results=good,
            error_records=deliveries - good - refused,
            dead_lettered=refused,
            seconds=time.monotonic() - started,
            note=f"{deliveries - refused} records in {pack_count} packs (4 requests at a time, "
            f"{WINDOW_MS} ms window); read back by unpacking, compared as in the default layout",
        )
    )


def reader(files: dict[str, bytes]) -> Callable[[Case], bytes | None]:
    """Read a case's record from unpacked files (None when it has none)."""
    return lambda case: files.get(case.file_name)


# --- store faults -------------------------------------------------------------------------

FAULT_PREFIX = "results/faults-packed"


def first_id_of(messages: Sequence[Message]) -> bytes:
    """A body regex finding a record of these messages in a pack; its group is the task id."""
    ids = "|".join(re.escape(m.task_id) for m in messages)
    return rb'"id": "(' + ids.encode() + rb')"'


def test_gcp_packed_faults_are_retried_whole_and_an_outage_dead_letters_nothing_lost(
    tmp_path: Path,
    gcs_emulator: str,
    gcs_client: Any,
    new_bucket: Any,
    function_source: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN 200 messages (190 good, 10 bad) and a fault proxy before the emulator: the first
    # upload of a pack holding one of 8 "hiccup" tasks gets a 403 (not retried by the SDK: the
    # whole batch is answered 500 and delivered again); the first upload of a pack holding
    # one of 8 others loses its connection, and every other pack upload a seeded 10% chance
    # of 503 per attempt (both retried by the SDK inside the function)
    messages = workload(190, 10, seed=41)
    chosen = pick([m for m in messages if m.expected], 16, seed=42)
    hiccup, dropped = chosen[:8], chosen[8:]
    upload = rf"^/upload/storage/v1/b/{new_bucket.name}/o\?"
    rules = {
        "hiccup": FaultRule(
            "POST", upload, first_id_of(hiccup), 403, "first_n_per_key", n=1,
            body=gcs_error(403, "forbidden"), name="hiccup",
        ),
        "dropped": FaultRule(
            "POST", upload, first_id_of(dropped), None, "first_n_per_key", n=1, name="dropped"
        ),
        "flaky": FaultRule(
            "POST", upload, rb'"name": ?"(' + FAULT_PREFIX.encode() + rb'/packed/[^"]+)"', 503,
            "probability", p=0.1, seed=43, body=gcs_error(503, "backendError"), name="flaky",
        ),
    }  # fmt: skip
    with (
        FaultProxy(gcs_emulator, list(rules.values())) as proxy,
        packed_function_running(
            function_source,
            proxy.url,
            new_bucket.name,
            FAULT_PREFIX,
            tmp_path / "function.log",
            max_wait_ms=WINDOW_MS,
        ) as server,
    ):

        def deliver(message: Message, attempt: int) -> tuple[bool, str]:
            response = requests.post(server.url, json=push_body(message, attempt), timeout=90)
            return 200 <= response.status_code < 300, str(response.status_code)

        # WHEN each message is pushed, 8 at a time, and pushed again while it answers 5xx
        deliveries = deliver_until_settled(messages, deliver, workers=8)

    # THEN each fault was injected, and a hiccup's first delivery was answered 500: the whole
    # batch it was in went back to the queue
    assert all(rule.injected > 0 for rule in rules.values()), {
        name: rule.injected for name, rule in rules.items()
    }
    assert all(deliveries.seen[m.task_id][0] == "500" for m in hiccup)
    retried = [m for m in messages if deliveries.seen[m.task_id][0] == "500"]
    assert len(retried) > len(hiccup)  # batch-mates were retried with them
    # AND every message ended acknowledged (none dead-lettered): 500s first, then one 200
    assert deliveries.dead == []
    for message in messages:
        seen = deliveries.seen[message.task_id]
        assert seen[-1] == "200" and set(seen[:-1]) <= {"500"}, (message.task_id, seen)
    # AND the packs hold an exact record of every message: nothing lost, nothing wrong
    objects = unpacked_files(gcs_client, new_bucket.name, FAULT_PREFIX)
    ledger = settle(messages, objects, set())
    assert (ledger.lost, ledger.wrong) == (0, 0)

    # GIVEN a store outage longer than the redelivery budget: the packed function writing to
    # a bucket that does not exist, and 12 more messages
    outage = [good_message(i, "outage") for i in range(10)]
    outage += [bad_message(j, "outage-bad") for j in range(2)]
    with packed_function_running(
        function_source,
        gcs_emulator,
        MISSING_BUCKET,
        FAULT_PREFIX,
        tmp_path / "broken.log",
        max_wait_ms=WINDOW_MS,
    ) as broken:

        def deliver_broken(message: Message, attempt: int) -> tuple[bool, str]:
            response = requests.post(broken.url, json=push_body(message, attempt), timeout=90)
            return 200 <= response.status_code < 300, str(response.status_code)

        # WHEN they are pushed until Pub/Sub gives up
        failed = deliver_until_settled(outage, deliver_broken, workers=8)
    # THEN every one was answered 500 on every delivery and dead-lettered, none half-written
    assert failed.dead == outage
    assert all(seen == ["500"] * MAX_DELIVERIES for seen in failed.seen.values())
    after = unpacked_files(gcs_client, new_bucket.name, FAULT_PREFIX)
    dead = {m.task_id for m in outage}
    outage_ledger = settle(
        outage, {k: v for k, v in after.items() if k.startswith("outage-")}, dead
    )
    assert (outage_ledger.dead_lettered, outage_ledger.lost, outage_ledger.wrong) == (12, 0, 0)

    every = messages + outage
    total = settle(every, after, dead)
    reliability_row(
        Row(
            "store faults",
            "gcp (packed)",
            "pack uploads through a fault proxy: 503 (10% of attempts) and dropped connections"
            " retried by the SDK, 403 once per hiccup task (its batch redelivered whole); then"
            " an outage (no bucket) for 12 messages, dead-lettered after 5",
            cases=4,
            messages=len(every),
            faults_injected=proxy.injected + len(outage) * MAX_DELIVERIES,
            results=total.results,
            error_records=total.error_records,
            dead_lettered=total.dead_lettered,
            lost=total.lost,
            wrong=total.wrong,
            duplicates=deliveries.total + failed.total - len(every),
            seconds=time.monotonic() - started,
            note=f"{len(retried)} messages were redelivered because a pack they were in failed "
            f"({len(hiccup)} of them held the fault); Pub/Sub's redelivery is simulated by the "
            "test; the outage's faults are counted as one per delivery",
        )
    )


# --- duplicate delivery -------------------------------------------------------------------


def test_gcp_packed_function_duplicates(
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    new_bucket: Any,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the packed function (4 threads: packs of up to 4), a bucket of its own
    prefix = "jobs/duplicates-packed"
    session_local = threading.local()
    sums: dict[str, set[bytes]] = {}

    def names() -> list[str]:
        return sorted(unpacked_files_any(gcs_client, new_bucket.name, prefix, sums))

    def read(name: str) -> bytes | None:
        unpacked_files_any(gcs_client, new_bucket.name, prefix, sums)
        contents = sums.get(name)
        return min(contents) if contents else None

    with packed_function_running(
        function_source,
        gcs_emulator,
        new_bucket.name,
        prefix,
        tmp_path / "function.log",
        max_wait_ms=WINDOW_MS,
    ) as server:

        def deliver(body: bytes, message_id: str) -> None:
            session = getattr(session_local, "session", None) or requests.Session()
            session_local.session = session
            message = Message(message_id, body, "", None, None)
            response = session.post(server.url, json=push_body(message, 1), timeout=60)
            assert response.status_code == 200, response.text[:300]

        started = time.monotonic()
        # WHEN every duplicate scenario runs (concurrent deliveries are concurrent POSTs)
        tally = run_scenarios(Target("gcp (packed)", deliver, names, read))
    # THEN a name the same task wrote in several packs holds the same bytes in each; the
    # same-id messages with different numbers each left one whole valid sum (checked by the
    # scenarios, on every pack's copy below)
    for name, allowed in tally.expected.items():
        if isinstance(allowed, set):
            found = {content.decode() for content in sums.get(name, set())}
            assert found and found <= allowed, name
        else:
            assert len(sums.get(name, set())) == 1, name
    save(
        tally,
        "gcp (packed)",
        started,
        reliability_row,
        f" (HTTP POSTs to the packed layout; 4 threads, {WINDOW_MS} ms window)",
    )


def unpacked_files_any(
    gcs_client: Any, bucket: str, prefix: str, into: dict[str, set[bytes]]
) -> set[str]:
    """Every record name of the packs under ``prefix``; ``into`` collects each name's
    contents over all packs (same-id messages with different numbers differ between packs)."""
    into.clear()
    for records in packs(gcs_client, bucket, prefix).values():
        for record in records:
            into.setdefault(record.file_name, set()).add(record.content)
    return set(into)
