"""The AWS gauntlet again, in the packed layout (RESULTS_LAYOUT=packed): one object per batch.

The same inputs, faults and load as the default layout's tests (test_bad_inputs.py,
test_faults.py, test_duplicates.py, test_load.py, whose helpers are imported here), through
the real handler and S3 store on moto servers, with ``layout=ResultsLayout.PACKED``. Results
are read the way a packed job is: list ``{prefix}/packed/`` and ``core.packing.unpack`` each
object. Then the same ledger: every message ends as its exact result, its error record, or a
dead letter; nothing lost, nothing wrong, nothing written outside ``packed/``. A record found
in several packs (a redelivered message) must be the same, or one of the valid sums, in each.

What differs by design: a pack is written whole or not at all, so a write that always fails
dead-letters its whole batch (the messages that shared a batch with a doomed one on every
delivery), not just the doomed message; and faults are planned per pack key (a hash of the
pack's bytes), since which messages share a batch is up to the queue.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from aws_lambda import handler as lambda_module
from aws_lambda.s3_store import S3ResultStore, default_client_config
from aws_lambda.sandbox.esm import EventSourceMapping
from core.cli import main as adder
from core.packing import PACKED_DIR, ResultsLayout, is_pack_name, unpack
from tests.integration.aws.conftest import REGION, Queues, all_keys, read_object
from tests.reliability.corpus import content_problems
from tests.reliability.ledger import Row, load_messages
from tests.reliability.test_bad_inputs import (
    CORPUS,
    LambdaContext,
    not_carried_note,
    problems_of,
    sqs_record,
)
from tests.reliability.test_duplicates import AT_ONCE, Target, run_scenarios, save, task
from tests.reliability.test_duplicates import sqs_event as duplicate_event
from tests.reliability.test_faults import (
    MAX_DELIVERIES,
    drain_queue,
    pick,
    sdk_attempts_per_call,
    serialized,
    settle,
    workload,
)
from tests.reliability.test_load import (
    POLLERS,
    VISIBILITY_TIMEOUT,
    WAVE,
    LoadAws,
    deliver_in_waves,
    load_aws,  # noqa: F401  (the fixture, used by name)
)
from tools.aws_faults import S3PutFaults

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from aws_lambda.batch import PartialBatchResponse

pytestmark = pytest.mark.integration

PACKED = ResultsLayout.PACKED
TARGET = "aws (packed)"


# --- reading a packed job ---------------------------------------------------------------------


@dataclass
class PackedJob:
    """What a packed job's prefix holds: its packs, and every record in them."""

    packs: dict[str, bytes]
    """Pack key -> its bytes."""
    copies: dict[str, list[bytes]] = field(default_factory=dict)
    """Record file name (``{id}.out``, ``{name}.err``) -> its content in each pack holding it."""
    stray: list[str] = field(default_factory=list)
    """Keys that are not a pack under ``{prefix}/packed/``: must stay empty."""

    def files(self) -> dict[str, bytes]:
        """One content per record (the first pack's, by key); see :meth:`disagreeing`."""
        return {name: contents[0] for name, contents in self.copies.items()}

    def disagreeing(self) -> list[str]:
        """Records whose copies differ between packs."""
        return sorted(name for name, contents in self.copies.items() if len(set(contents)) > 1)


def read_packed_job(
    s3: S3Client, bucket: str, prefix: str, known: dict[str, bytes] | None = None
) -> PackedJob:
    """List the bucket, read every pack under ``{prefix}/packed/`` (8 at a time), unpack it.

    A pack never changes once written (its name is the hash of its bytes), so packs already
    in ``known`` are not read again, and the ones read are added to it.
    """
    known = {} if known is None else known
    keys = sorted(all_keys(s3, bucket))
    pack_dir = f"{prefix}/{PACKED_DIR}/"
    pack_keys = [k for k in keys if k.startswith(pack_dir) and is_pack_name(k[len(pack_dir) :])]
    unread = [key for key in pack_keys if key not in known]
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda key: read_object(s3, bucket, key) or b"", unread))
    known.update(zip(unread, bodies, strict=True))
    job = PackedJob({key: known[key] for key in pack_keys})
    job.stray = [key for key in keys if key not in job.packs]
    for body in job.packs.values():
        for record in unpack(body):
            job.copies.setdefault(record.file_name, []).append(record.content)
    return job


def packed_handler(
    store: S3ResultStore,
) -> Callable[[Mapping[str, Any], Any], PartialBatchResponse]:
    """The real handler, packed, writing with ``store``."""

    def handle(event: Mapping[str, Any], context: Any) -> PartialBatchResponse:
        return lambda_module.handle_event(event, context, store=store, layout=PACKED)

    return handle


class PackWrites:
    """What each PutObject of a pack carried, seen at botocore's ``before-parameter-build``
    (the call's own parameters, before any attempt), and how each ``store.put`` ended."""

    def __init__(self, client: Any) -> None:
        self.names: dict[str, set[str]] = {}
        """Pack key -> the record file names in it."""
        self.failed_puts: list[str] = []
        """The key of every put that raised (its whole batch went back to the queue)."""
        self._lock = threading.Lock()
        client.meta.events.register("before-parameter-build.s3.PutObject", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        names = {record.file_name for record in unpack(params["Body"])}
        with self._lock:
            self.names[params["Key"]] = names

    def failed(self, key: str) -> None:
        with self._lock:
            self.failed_puts.append(key)

    def records_in_failed_puts(self) -> int:
        return sum(len(self.names[key]) for key in self.failed_puts)


class WatchedS3Store(S3ResultStore):
    """The production S3 store, telling ``writes`` which puts failed."""

    def __init__(self, bucket: str, prefix: str, writes_for: Callable[[Any], PackWrites]) -> None:
        super().__init__(bucket, prefix)
        self.writes = writes_for(self.client)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            super().put(key, data, content_type)
        except Exception:
            self.writes.failed(key)
            raise


def key_fraction(key: str) -> float:
    """A number in [0, 1) fixed by the pack key: plans faults for packs no one can name ahead."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8


# --- bad input ------------------------------------------------------------------------------


def test_packed_aws_handler_handles_every_case_in_one_batch(
    aws_env: str, bucket: str, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN every case SQS can carry, all in one SQS event, for a packed function
    prefix = "jobs/bad-inputs-packed"
    cases = CORPUS.carried_by("sqs")
    event = {"Records": [sqs_record(i, case.raw.decode()) for i, case in enumerate(cases)]}
    s3 = boto3.session.Session().client(
        "s3", region_name=REGION, endpoint_url=aws_env, config=default_client_config()
    )
    store = S3ResultStore(bucket, prefix, client=s3)
    started = time.monotonic()
    # WHEN the handler processes the batch against S3 (moto server)
    response = lambda_module.handle_event(event, LambdaContext(), store, PACKED)
    # THEN no record is reported for retry: none crashed the batch
    assert response == {"batchItemFailures": []}
    # AND the bucket holds one pack and nothing else, holding exactly one record per case
    job = read_packed_job(s3, bucket, prefix)
    assert (len(job.packs), job.stray) == (1, [])
    assert sorted(job.copies) == sorted(case.file_name for case in cases)
    # AND each record is exactly what the default layout writes for the case
    files = job.files()
    assert problems_of(cases, lambda case: files.get(case.file_name)) == {}
    reliability_row(
        Row(
            "bad input",
            TARGET,
            "corpus as one SQS batch through the packed Lambda handler (S3 on moto): one pack",
            cases=len(cases),
            messages=len(cases),
            results=sum(case.good for case in cases),
            error_records=sum(not case.good for case in cases),
            seconds=time.monotonic() - started,
            note=not_carried_note("sqs"),
        )
    )


# --- store faults ---------------------------------------------------------------------------


def test_packed_aws_transient_s3_faults_are_absorbed_and_doomed_batches_dead_letter(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    s3: S3Client,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN 300 messages: 290 good (5 doomed: S3 refuses every pack holding one of them) and
    # 10 bad; 2 packs in 5 fail their first 1 to 4 PutObject attempts (botocore retries 1 or
    # 2 away; 3 or 4 fail the whole write: its batch goes back to the queue)
    prefix = "out"
    messages = workload(290, 10, seed=21)
    doomed = pick([m for m in messages if m.expected], 5, seed=22)
    doomed_records = {m.record for m in doomed}
    queues = Queues(sqs, visibility_timeout=3, max_receive_count=MAX_DELIVERIES)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(m.body + b"\n" for m in messages))

    def planned_failures(key: str) -> int:
        fraction = key_fraction(key)
        return 1 + int(fraction * 10) if fraction < 0.4 else 0

    # WHEN they are submitted with the CLI
    code = adder(["submit", "aws", "--queue-url", queues.url, "--no-progress", str(tasks)])
    assert code == 0
    assert f"sent 300 tasks to SQS queue {queues.url}" in capsys.readouterr().out
    # AND delivered like the event source mapping does (2 pollers) to the packed handler,
    # whose store has the production client settings
    store = WatchedS3Store(bucket, prefix, PackWrites)
    writes = store.writes

    def decide(key: str, attempt: int) -> bool:
        if writes.names[key] & doomed_records:
            return True
        return attempt <= planned_failures(key)

    faults = S3PutFaults(store.client, decide)
    mapping = EventSourceMapping(serialized(sqs), queues.url, packed_handler(store))
    stats = mapping.drain(pollers=2, timeout=240)

    # THEN the DLQ holds every doomed message, and otherwise only messages that shared a pack
    # with a doomed one: each of their deliveries failed whole
    dead_bodies = drain_queue(sqs, queues.dlq_url)
    by_body = {m.body.decode(): m for m in messages}
    dead = [by_body[body] for body in dead_bodies]
    assert len(dead) == len(set(dead_bodies))
    assert {m.record for m in dead} >= doomed_records
    with_doomed = set().union(*(n for n in writes.names.values() if n & doomed_records))
    assert {m.record for m in dead} <= with_doomed
    # AND each dead message went back to the queue on each of its MAX_DELIVERIES deliveries,
    # and each failed write sent its whole batch back
    assert stats.retried >= MAX_DELIVERIES * len(dead)
    assert stats.retried == writes.records_in_failed_puts()
    # AND botocore absorbed faults within a write: packs written after a failed attempt
    job = read_packed_job(s3, bucket, prefix)
    absorbed = [key for key in job.packs if faults.attempts[key] > 1]
    assert absorbed
    assert len(writes.failed_puts) > MAX_DELIVERIES  # doomed batches and whole-call failures
    # AND the ledger: every other message has its exact result or error record, in every pack
    # that holds it, and nothing was written outside packed/
    assert (job.stray, job.disagreeing()) == ([], [])
    ledger = settle(messages, job.files(), {m.task_id for m in dead})
    reliability_row(
        Row(
            "store faults",
            TARGET,
            "packed: S3 PutObject 500s at botocore's transport: 2 packs in 5 fail 1-4 attempts,"
            " every pack holding one of 5 doomed tasks always; SQS redrive after 5 receives",
            cases=len(doomed),
            messages=len(messages),
            faults_injected=faults.injected,
            results=ledger.results,
            error_records=ledger.error_records,
            dead_lettered=ledger.dead_lettered,
            lost=ledger.lost,
            wrong=ledger.wrong,
            duplicates=stats.delivered - len(messages),
            seconds=time.monotonic() - started,
            note=f"{len(job.packs)} packs written for {len(messages)} messages;"
            f" {len(absorbed)} written after botocore retried a fault"
            f" ({sdk_attempts_per_call()} attempts a call); {len(writes.failed_puts)} pack"
            f" writes failed, sending {stats.retried} records back to the queue;"
            f" {len(dead) - len(doomed)} messages dead-lettered with a doomed one in their"
            " batch on every delivery",
        )
    )


# --- duplicate delivery ---------------------------------------------------------------------


def test_packed_aws_handler_duplicates(
    aws_env: str, bucket: str, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN the packed handler writing to S3 on moto; each delivery is its own invocation
    prefix = "jobs/duplicates-packed"
    s3 = boto3.session.Session().client(
        "s3", region_name=REGION, endpoint_url=aws_env, config=default_client_config()
    )
    store = S3ResultStore(bucket, prefix, client=s3)
    bodies: set[bytes] = set()
    lock = threading.Lock()

    def deliver(body: bytes, message_id: str) -> None:
        with lock:
            bodies.add(body)
        event = duplicate_event((body, message_id))
        assert lambda_module.handle_event(event, None, store, PACKED) == {"batchItemFailures": []}

    known: dict[str, bytes] = {}

    def names() -> list[str]:
        job = read_packed_job(s3, bucket, prefix, known)
        assert job.stray == []
        return sorted(job.copies)

    def read(name: str) -> bytes | None:
        return read_packed_job(s3, bucket, prefix, known).files().get(name)

    started = time.monotonic()
    # WHEN every scenario runs
    tally = run_scenarios(Target(TARGET, deliver, names, read))
    # AND the same message arrives 16 times in ONE batch
    body, out = task("dup-in-one-batch", 7, 8), "15"
    batch = duplicate_event(*[(body, "same-message")] * AT_ONCE)
    assert lambda_module.handle_event(batch, None, store, PACKED) == {"batchItemFailures": []}
    bodies.add(body)
    tally.expected["dup-in-one-batch.out"] = {out}
    tally.deliveries += AT_ONCE
    tally.results += 1
    # THEN every copy of every record, in every pack, is whole and allowed (the scenarios
    # checked one copy each)
    job = read_packed_job(s3, bucket, prefix)
    assert sorted(job.copies) == sorted(tally.expected)
    for name, contents in job.copies.items():
        allowed = tally.expected[name]
        for content in contents:
            if isinstance(allowed, set):
                assert content.decode() in allowed, name
            else:
                assert content_problems(allowed, content) == [], name
    # AND a message delivered again rewrote its own pack: one pack per distinct message body
    # (the 16 copies in one batch make one pack of one record)
    assert len(job.packs) == len(bodies)
    assert job.copies["dup-in-one-batch.out"] == [out.encode()]
    save(tally, TARGET, started, reliability_row, f"; {AT_ONCE} copies in one SQS batch")


# --- load -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600 + load_messages() // 20)
def test_packed_load_through_sqs_handler_and_s3_loses_nothing_and_gets_nothing_wrong(
    tmp_path: Path,
    load_aws: LoadAws,  # noqa: F811  (the fixture imported from test_load)
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    sqs, s3, bucket = load_aws.sqs, load_aws.s3, load_aws.bucket
    prefix = "load-packed"
    # GIVEN load_messages() tasks, 1% bad; 1 pack in 10 fails its first PutObject attempt,
    # or (a quarter of those) every attempt of its first write
    total = load_messages()
    bad = total // 100
    messages = workload(total - bad, bad, seed=41)
    per_call = sdk_attempts_per_call()

    def planned_failures(key: str) -> int:
        fraction = key_fraction(key)
        return 0 if fraction >= 0.1 else per_call if fraction < 0.025 else 1

    queues = Queues(sqs, visibility_timeout=VISIBILITY_TIMEOUT, max_receive_count=MAX_DELIVERIES)
    store = WatchedS3Store(bucket, prefix, PackWrites)
    faults = S3PutFaults(store.client, lambda key, attempt: attempt <= planned_failures(key))
    queue_client = serialized(sqs)
    mapping = EventSourceMapping(queue_client, queues.url, packed_handler(store))

    # WHEN they are submitted in waves while 4 pollers deliver them to the packed handler,
    # and the pollers then drain the queue
    stats = deliver_in_waves(mapping, queue_client, queues.url, messages, tmp_path)
    processed = time.monotonic() - started

    # THEN nothing is in the DLQ; faults were injected, and every pack write that failed
    # sent its whole batch back to the queue
    dead = drain_queue(queue_client, queues.dlq_url)
    assert dead == []
    assert faults.injected > 0 and store.writes.failed_puts
    assert stats.retried == store.writes.records_in_failed_puts()
    assert stats.delivered >= total + stats.retried
    # AND reading every pack back: each good task's exact sum, each bad one's error record,
    # the same in every pack that holds it, nothing else
    job = read_packed_job(s3, bucket, prefix)
    assert (job.stray, job.disagreeing()) == ([], [])
    ledger = settle(messages, job.files(), set())
    assert (ledger.lost, ledger.wrong) == (0, 0)
    assert (ledger.results, ledger.error_records) == (total - bad, bad)
    # AND one write per batch: far fewer objects than tasks
    assert len(job.packs) <= stats.invocations
    assert len(job.packs) * 5 < total
    seconds = time.monotonic() - started
    reliability_row(
        Row(
            "load",
            TARGET,
            f"{total:,} tasks: moto SQS (submit code path, waves of {WAVE:,}) -> packed handler"
            f" via the event source mapping ({POLLERS} pollers, batches of up to 10) -> moto S3;"
            " 1% bad tasks, 1 pack in 10 with injected S3 500s",
            cases=len(store.writes.failed_puts),
            messages=total,
            faults_injected=faults.injected,
            results=ledger.results,
            error_records=ledger.error_records,
            dead_lettered=len(dead),
            lost=ledger.lost,
            wrong=ledger.wrong,
            duplicates=stats.delivered - total,
            seconds=seconds,
            note=f"{stats.delivered:,} deliveries in {stats.invocations:,} invocations,"
            f" {len(job.packs):,} packs written ({total / len(job.packs):.1f} tasks a write),"
            f" {len(store.writes.failed_puts)} pack writes failed whole"
            f" ({stats.retried} records redelivered); submit and processing {processed:.0f} s,"
            f" reading back {len(job.packs):,} packs {seconds - processed:.0f} s",
        )
    )
