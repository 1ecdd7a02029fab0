"""Store faults on every cloud: transient ones are absorbed, permanent ones end dead-lettered.

Each test pushes a few hundred messages (good tasks, bad tasks, and good tasks whose writes
always fail) through the real entry point and store adapter of one cloud, with faults injected
at the SDK's transport: botocore's ``before-send`` seam for S3 (tools/aws_faults.py),
the fault proxy (tools/fault_proxy.py) between the SDK and gcp-storage-emulator or
Azurite for GCS and Blob Storage. Then the ledger: results + error records + dead letters =
messages, every result exact, and the dead letters exactly the messages whose writes always
failed.

What the SDKs retry (checked in their sources): botocore's standard mode retries 5xx and
throttling (the store's ``total_max_attempts`` gives 3 attempts a call, checked below),
within a retry quota of 500 tokens per client at 14 a retry; google-cloud-storage's
``DEFAULT_RETRY`` retries 429/500/502/503/504 and connection errors until its deadline (30 s
here); azure-storage-blob's ``ExponentialRetry`` retries 408, 5xx except 501/505, and
connection errors, 3 retries (not 429: Blob Storage signals throttling with 503 ServerBusy).
A 403 is retried by none of them, which is how the tests make a fault reach the function's
boundary on GCP and Azure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from aws_lambda import handler as lambda_module
from aws_lambda.s3_store import ATTEMPTS as S3_ATTEMPTS
from aws_lambda.s3_store import S3ResultStore, default_client_config
from aws_lambda.sandbox.esm import EventSourceMapping
from azure_function import function_app
from azure_function.blob_store import RETRIES, BlobResultStore, default_retry
from core.cli import main as adder
from core.errors import StoreWriteError
from tests.integration.aws.conftest import REGION, Queues, all_keys, read_object
from tests.integration.azure.conftest import ACCOUNT, connection_string
from tests.integration.azure.messages import make_message, registered_function
from tests.integration.gcp.conftest import function_running
from tests.reliability.ledger import Row
from tools.aws_faults import S3PutFaults
from tools.fault_proxy import FaultProxy, FaultRule, Mode

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from azure.storage.blob import ContainerClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from tests.integration.azure.conftest import Azurite

pytestmark = pytest.mark.integration

MAX_DELIVERIES = 5
"""Pub/Sub ``max_delivery_attempts`` and Service Bus ``max_delivery_count`` of the stacks."""


@dataclass(frozen=True)
class Message:
    """One message of a workload and how it must end."""

    task_id: str
    body: bytes
    record: str
    """The object it must produce: ``{id}.out`` or ``{name}.err``."""
    expected: str | None
    """The exact result text (None for a bad task)."""
    error: str | None
    """The error code of a bad task's record."""


def good_message(i: int, prefix: str = "t") -> Message:
    """A valid task whose exact sum is known without the code under test: big integers,
    decimals with a negative addend, an exponent."""
    task_id = f"{prefix}-{i:06d}"
    if i % 3 == 0:
        numbers, expected = f"{10**30 + i}, {i}", str(10**30 + 2 * i)
    elif i % 3 == 1:
        numbers, expected = f"{i}.25, -0.5", f"{i - 1}.75"
    else:
        numbers, expected = f"{-i}, 1e2", str(100 - i)
    num1, num2 = numbers.split(", ")
    body = f'{{"id": "{task_id}", "data": {{"num1": {num1}, "num2": {num2}}}}}'
    return Message(task_id, body.encode(), f"{task_id}.out", expected, None)


def bad_message(j: int, prefix: str = "bad") -> Message:
    """A task that can never succeed, of one of five kinds (one without a usable id)."""
    task_id = f"{prefix}-{j:06d}"
    kinds = [
        (f'{{"id": "{task_id}", "data": {{"num1": true, "num2": 1}}}}', "invalid_number"),
        (f'{{"id": "{task_id}", "data": {{"num1": 1}}}}', "missing_field"),
        (f'{{"id": "{task_id}", "data": {{"num1": "1", "num2": 2}}}}', "invalid_number"),
        (f'{{"id": "{task_id}", "data": {{"num1": 1, "num2": 2}}, "x": 1}}', "unexpected_field"),
        (f"not json {task_id}", "invalid_json"),
    ]
    text, error = kinds[j % len(kinds)]
    body = text.encode()
    name = task_id if error != "invalid_json" else "invalid-" + hashlib.sha256(body).hexdigest()
    return Message(task_id, body, f"{name}.err", None, error)


def workload(good: int, bad: int, *, seed: int) -> list[Message]:
    """``good`` valid and ``bad`` invalid messages, shuffled."""
    messages = [good_message(i) for i in range(good)] + [bad_message(j) for j in range(bad)]
    random.Random(seed).shuffle(messages)
    return messages


@dataclass
class Ledger:
    """Where every message ended, checked against what it should have produced."""

    results: int = 0
    error_records: int = 0
    dead_lettered: int = 0
    lost: int = 0
    wrong: int = 0


def settle(
    messages: Sequence[Message],
    objects: dict[str, bytes],
    dead: set[str],
) -> Ledger:
    """Account for each message: its object exists and is right, or it is dead-lettered.

    ``objects`` maps record names (``{id}.out``/``.err``) to their bytes; ``dead`` holds task
    ids. A message with neither is lost; an ``.out`` with other bytes is wrong.
    """
    ledger = Ledger()
    for message in messages:
        data = objects.get(message.record)
        if message.task_id in dead:
            ledger.dead_lettered += 1
            ledger.wrong += data is not None  # a dead letter has no result
        elif data is None:
            ledger.lost += 1
        elif message.expected is not None:
            ledger.results += 1
            ledger.wrong += data != message.expected.encode()
        else:
            ledger.error_records += 1
            ledger.wrong += json.loads(data)["error"] != message.error
    unexpected = set(objects) - {m.record for m in messages}
    ledger.wrong += len(unexpected)
    return ledger


def pick(messages: Sequence[Message], count: int, seed: int) -> list[Message]:
    """A seeded sample of ``count`` messages."""
    return random.Random(seed).sample(list(messages), count)


def names_pattern(prefix: str, messages: Sequence[Message]) -> str:
    """A regex alternation of the objects these messages write, as one capture group."""
    return "(" + "|".join(re.escape(f"{prefix}/{m.record}") for m in messages) + ")"


# ---------------------------------------------------------------------------------------------
# AWS: SQS (redrive to a DLQ) -> handler (event source mapping, 2 pollers) -> S3 on moto


def test_aws_transient_s3_faults_are_absorbed_and_permanent_ones_dead_letter(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    s3: S3Client,
    bucket: str,
    capsys: pytest.CaptureFixture[str],
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN 300 messages: 290 good (5 of them doomed: S3 refuses their result every time) and
    # 10 bad; ~10% of the other objects fail their first 1 or 2 PutObject attempts (botocore
    # retries them) or their first 3 or 4 (a whole delivery fails: SQS redelivers)
    prefix = "out"
    messages = workload(290, 10, seed=11)
    doomed = pick([m for m in messages if m.expected], 5, seed=12)
    others = [m for m in messages if m not in doomed]
    failing = {f"{prefix}/{m.record}": 1 + n % 4 for n, m in enumerate(pick(others, 30, seed=13))}
    failing |= {f"{prefix}/{m.record}": 10**6 for m in doomed}
    queues = Queues(sqs, visibility_timeout=3, max_receive_count=MAX_DELIVERIES)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(m.body + b"\n" for m in messages))

    # WHEN they are submitted with the CLI
    code = adder(["submit", "aws", "--queue-url", queues.url, "--no-progress", str(tasks)])
    assert code == 0
    assert f"sent 300 tasks to SQS queue {queues.url}" in capsys.readouterr().out
    # AND delivered like the event source mapping does (2 pollers) to the real handler, whose
    # S3 store has the production client settings (botocore's standard retry mode)
    store = S3ResultStore(bucket, prefix)
    faults = S3PutFaults(store.client, lambda key, attempt: attempt <= failing.get(key, 0))
    mapping = EventSourceMapping(
        serialized(sqs),
        queues.url,
        lambda event, ctx: lambda_module.handle_event(event, ctx, store=store),
    )
    stats = mapping.drain(pollers=2, timeout=240)

    # THEN the doomed messages, and only they, are in the DLQ, after maxReceiveCount
    # deliveries of 1 to `per_call` attempts each (botocore stops retrying while its retry
    # quota, 500 tokens at 14 a retry, is spent: then a delivery ends at the first fault)
    per_call = sdk_attempts_per_call()
    dead_bodies = drain_queue(sqs, queues.dlq_url)
    assert sorted(dead_bodies) == sorted(m.body.decode() for m in doomed)
    doomed_attempts = [faults.attempts[f"{prefix}/{m.record}"] for m in doomed]
    assert all(MAX_DELIVERIES <= n <= per_call * MAX_DELIVERIES for n in doomed_attempts)
    # AND each transient object was written after its planned failures, every one injected
    transient = {key: n for key, n in failing.items() if n < 10**6}
    for key, failures in transient.items():
        assert faults.attempts[key] >= failures + 1, key
    assert faults.injected == sum(transient.values()) + sum(doomed_attempts)
    # AND both layers absorbed faults: a fault either ends a delivery (the record is
    # reported for retry) or is retried by botocore within it; objects failing on every
    # attempt of a call, and the doomed ones on every delivery, always needed a redelivery
    needed = sum(1 for n in transient.values() if n >= per_call)
    assert stats.retried >= needed + MAX_DELIVERIES * len(doomed)
    absorbed_by_sdk = faults.injected - stats.retried
    assert absorbed_by_sdk > 0
    # AND the ledger: every other message has its exact result or error record
    keys = all_keys(s3, bucket)
    objects = {key.removeprefix(f"{prefix}/"): read_object(s3, bucket, key) or b"" for key in keys}
    by_body = {m.body.decode(): m.task_id for m in messages}
    ledger = settle(messages, objects, {by_body[body] for body in dead_bodies})
    reliability_row(
        Row(
            "store faults",
            "aws",
            "S3 PutObject 500s at botocore's transport: 10% of objects fail 1-4 attempts,"
            " 5 always; SQS redrive after 5 receives",
            cases=len(failing),
            messages=len(messages),
            faults_injected=faults.injected,
            results=ledger.results,
            error_records=ledger.error_records,
            dead_lettered=ledger.dead_lettered,
            lost=ledger.lost,
            wrong=ledger.wrong,
            duplicates=stats.delivered - len(messages),
            seconds=time.monotonic() - started,
            note=f"{absorbed_by_sdk} faults retried by botocore ({per_call} attempts a call),"
            f" {stats.retried} deliveries failed (record back to the queue); attempts on"
            f" doomed objects: {doomed_attempts}",
        )
    )


class SerializedQueueCalls:
    """An SQS client whose calls that change a queue run one at a time.

    moto's SQS model (5.x) is not thread-safe: DeleteMessage rebuilds the queue's message list
    without the lock SendMessage takes, so a message sent during a delete is lost and one
    deleted during another delete comes back, and two concurrent ReceiveMessage calls can both
    return the same message. Real SQS does none of this; serializing these calls (moto's
    single process runs them one at a time under its GIL anyway) keeps the figures about the
    code under test.
    """

    SERIALIZED = frozenset(
        {
            "send_message",
            "send_message_batch",
            "receive_message",
            "delete_message",
            "delete_message_batch",
            "change_message_visibility",
            "change_message_visibility_batch",
        }
    )

    def __init__(self, client: SQSClient) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self.SERIALIZED:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


def serialized(client: SQSClient) -> SQSClient:
    """``client``, with the queue-changing calls serialized (see SerializedQueueCalls)."""
    return cast("SQSClient", SerializedQueueCalls(client))


def sdk_attempts_per_call() -> int:
    """Attempts the production S3 client makes for a PutObject that keeps failing, measured:
    the store's ``ATTEMPTS``, as the README says."""
    client = boto3.session.Session().client(
        "s3", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=default_client_config()
    )
    probe = S3PutFaults(client, lambda key, attempt: True)
    with pytest.raises(ClientError):
        client.put_object(Bucket="probe", Key="k", Body=b"")
    assert probe.attempts["k"] == S3_ATTEMPTS
    return probe.attempts["k"]


def drain_queue(sqs: SQSClient, url: str) -> list[str]:
    """Every body in the queue (received, not deleted)."""
    bodies: list[str] = []
    while got := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300
    ).get("Messages"):
        bodies += [m["Body"] for m in got]
    return bodies


# ---------------------------------------------------------------------------------------------
# Redelivery as Pub/Sub and Service Bus do it: a message not acknowledged comes back, up to
# MAX_DELIVERIES deliveries, then it is dead-lettered. (Their backoff between deliveries is
# left out: it changes when a redelivery happens, not what it does.)


@dataclass
class Deliveries:
    """What each delivery of each message saw at the function's boundary."""

    seen: dict[str, list[str]]
    """Per task id, one entry per delivery (an HTTP status, or ``returned``/an exception)."""
    dead: list[Message]

    @property
    def total(self) -> int:
        return sum(len(seen) for seen in self.seen.values())


def deliver_until_settled(
    messages: Sequence[Message],
    deliver: Callable[[Message, int], tuple[bool, str]],
    *,
    workers: int,
) -> Deliveries:
    """Deliver each message (``deliver(message, attempt) -> (acknowledged, what was seen)``),
    concurrently; deliver again what was not acknowledged, up to MAX_DELIVERIES times."""
    seen: dict[str, list[str]] = {m.task_id: [] for m in messages}
    pending = list(messages)
    for attempt in range(1, MAX_DELIVERIES + 1):
        if not pending:
            break
        with ThreadPoolExecutor(workers) as pool:
            answers = list(pool.map(deliver, pending, [attempt] * len(pending)))
        for message, (_, what) in zip(pending, answers, strict=True):
            seen[message.task_id].append(what)
        pending = [m for m, (acked, _) in zip(pending, answers, strict=True) if not acked]
    return Deliveries(seen, pending)


def leading_faults(rule: FaultRule, key: str, limit: int = 50) -> int:
    """How many attempts of ``key`` in a row, from the first, ``rule`` fails."""
    count = 0
    while count < limit and rule.decides(key, count + 1):
        count += 1
    return count


@dataclass(frozen=True)
class FaultPlan:
    """The GCP and Azure workload: 190 good and 10 bad messages, and which good ones fail how."""

    messages: list[Message]
    doomed: list[Message]
    """4 whose every upload fails: dead-lettered after MAX_DELIVERIES."""
    hiccup: list[Message]
    """8 whose first upload fails with an error the SDK does not retry: one redelivery."""
    dropped: list[Message]
    """8 whose first upload loses its connection: the SDK retries it."""


def fault_plan(seed: int) -> FaultPlan:
    """A seeded :class:`FaultPlan`."""
    messages = workload(190, 10, seed=seed)
    doomed = pick([m for m in messages if m.expected], 4, seed=seed + 1)
    rest = [m for m in messages if m not in doomed]
    chosen = pick(rest, 16, seed=seed + 2)
    return FaultPlan(messages, doomed, chosen[:8], chosen[8:])


def check_proxy_attempts(
    rules: dict[str, FaultRule], plan: FaultPlan, prefix: str, doomed_attempts: int
) -> None:
    """Each rule saw the attempts the plan implies: the doomed ``doomed_attempts`` each, the
    hiccups and drops 2 (one fault, one success), the flaky ones their leading faults + 1."""
    key = f"{prefix}/{{}}".format
    assert rules["doomed"].attempts == {key(m.record): doomed_attempts for m in plan.doomed}
    assert rules["hiccup"].attempts == {key(m.record): 2 for m in plan.hiccup}
    assert rules["dropped"].attempts == {key(m.record): 2 for m in plan.dropped}
    flaky = rules["flaky"]
    for name, attempts in flaky.attempts.items():
        assert flaky.faults.get(name, 0) == leading_faults(flaky, name) == attempts - 1, name
    assert flaky.injected > 0


def proxy_row(
    target: str,
    what: str,
    plan: FaultPlan,
    proxy: FaultProxy,
    objects: dict[str, bytes],
    deliveries: Deliveries,
    started: float,
    note: str,
) -> Row:
    """The reliability row of a fault-proxy run, from the objects found after it."""
    ledger = settle(plan.messages, objects, {m.task_id for m in deliveries.dead})
    flaky = next(rule for rule in proxy.rules if rule.name == "flaky")
    return Row(
        "store faults",
        target,
        what,
        cases=len(plan.doomed) + len(plan.hiccup) + len(plan.dropped) + len(flaky.faults),
        messages=len(plan.messages),
        faults_injected=proxy.injected,
        results=ledger.results,
        error_records=ledger.error_records,
        dead_lettered=ledger.dead_lettered,
        lost=ledger.lost,
        wrong=ledger.wrong,
        duplicates=deliveries.total - len(plan.messages),
        seconds=time.monotonic() - started,
        note=note,
    )


# ---------------------------------------------------------------------------------------------
# GCP: Pub/Sub push -> functions-framework (the deployment zip) -> fault proxy -> GCS emulator

GCS_PREFIX = "results/faults"


def gcs_error(status: int, reason: str) -> bytes:
    """A JSON API error body as Cloud Storage sends it."""
    error = {"code": status, "message": f"injected: {reason}", "errors": [{"reason": reason}]}
    return json.dumps({"error": error}).encode()


def push_body(message: Message, attempt: int) -> dict[str, Any]:
    """What a push subscription with a dead-letter policy POSTs for one delivery."""
    message_id = f"m-{message.task_id}"
    return {
        "deliveryAttempt": attempt,
        "message": {
            "data": base64.b64encode(message.body).decode(),
            "attributes": {"origin": "reliability"},
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-11-27T12:00:00.000Z",
            "publish_time": "2026-11-27T12:00:00.000Z",
        },
        "subscription": "projects/example-project/subscriptions/adder-tasks-push",
    }


def test_gcp_transient_gcs_faults_are_absorbed_and_permanent_ones_dead_letter(
    tmp_path: Path,
    gcs_emulator: str,
    gcs_client: Any,
    new_bucket: Any,
    function_source: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN 200 messages (190 good, 10 bad) and a fault proxy between the function and its
    # storage: 4 doomed objects always get 403 (no SDK retries it: the function must answer
    # 5xx); 8 get one 403 (the redelivery succeeds); 8 get their connection dropped once and
    # every other upload a seeded 10% chance of 503 on each attempt (the SDK's retry absorbs
    # both inside the function)
    plan = fault_plan(seed=21)
    messages, doomed, hiccup, dropped = plan.messages, plan.doomed, plan.hiccup, plan.dropped
    upload = rf"^/upload/storage/v1/b/{new_bucket.name}/o\?"

    def by_name(selected: Sequence[Message]) -> bytes:
        return rb'"name": ?"' + names_pattern(GCS_PREFIX, selected).encode() + b'"'

    rules = {
        "doomed": FaultRule(
            "POST", upload, by_name(doomed), 403, body=gcs_error(403, "forbidden"), name="doomed"
        ),
        "hiccup": FaultRule(
            "POST", upload, by_name(hiccup), 403, "first_n_per_key", n=1,
            body=gcs_error(403, "forbidden"), name="hiccup",
        ),
        "dropped": FaultRule(
            "POST", upload, by_name(dropped), None, "first_n_per_key", n=1, name="dropped"
        ),
        "flaky": FaultRule(
            "POST", upload, rb'"name": ?"(' + GCS_PREFIX.encode() + rb'/[^"]+)"', 503,
            "probability", p=0.1, seed=25, body=gcs_error(503, "backendError"), name="flaky",
        ),
    }  # fmt: skip

    with (
        FaultProxy(gcs_emulator, list(rules.values())) as proxy,
        function_running(
            function_source, proxy.url, new_bucket.name, GCS_PREFIX, tmp_path / "function.log"
        ) as server,
    ):

        def deliver(message: Message, attempt: int) -> tuple[bool, str]:
            response = requests.post(server.url, json=push_body(message, attempt), timeout=90)
            return 200 <= response.status_code < 300, str(response.status_code)

        # WHEN each message is pushed to the function, and pushed again while it answers 5xx,
        # up to max_delivery_attempts
        deliveries = deliver_until_settled(messages, deliver, workers=8)

    # THEN at the function's boundary: the doomed messages were answered 500 on every delivery
    # and dead-lettered; the hiccups 500 then 200; every other message 200 at once
    for message in messages:
        seen = deliveries.seen[message.task_id]
        if message in doomed:
            assert seen == ["500"] * MAX_DELIVERIES, message.task_id
        elif message in hiccup:
            assert seen == ["500", "200"], message.task_id
        else:
            assert seen == ["200"], message.task_id
    assert deliveries.dead == [m for m in messages if m in doomed]
    # AND at the proxy: a 403 was never retried by the SDK, a dropped connection or a 503
    # was retried until it went through
    check_proxy_attempts(rules, plan, GCS_PREFIX, doomed_attempts=MAX_DELIVERIES)
    # AND the ledger: an exact result or error record for every message not dead-lettered
    # (read by name from the emulator itself: the listing's media links name the proxy, the
    # host the function's client used)
    objects = {
        blob.name.removeprefix(GCS_PREFIX + "/"): new_bucket.blob(blob.name).download_as_bytes()
        for blob in gcs_client.list_blobs(new_bucket.name)
    }
    reliability_row(
        proxy_row(
            "gcp",
            "GCS uploads through a fault proxy: 503 (10% of attempts) and dropped connections"
            " retried by the SDK, 403 once (redelivered), 403 always (dead-lettered after 5)",
            plan,
            proxy,
            objects,
            deliveries,
            started,
            note="functions-framework server from the deployment zip; Pub/Sub's redelivery is"
            " simulated by the test (no emulator here)",
        )
    )


# ---------------------------------------------------------------------------------------------
# Azure: Service Bus messages -> the registered function -> fault proxy -> Azurite

BLOB_PREFIX = "jobs/faults"
FAST_RETRY = {"initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0}
"""The production retry count with no waits (the waits are 2, 4 and 8 s, +-1 s)."""


def blob_error(status: int, code: str) -> FaultRule:
    """Rule defaults for an error as Blob Storage sends it (XML body, x-ms-error-code)."""
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
    body += "<Message>injected fault</Message></Error>"
    return FaultRule(
        status=status,
        body=body.encode(),
        headers=(("Content-Type", "application/xml"), ("x-ms-error-code", code)),
    )


def azure_rule(template: FaultRule, path: str, mode: Mode = "always", **kwargs: Any) -> FaultRule:
    """``template``'s answer for PUTs of the blobs ``path`` (a regex) matches."""
    return FaultRule(
        "PUT",
        path,
        status=template.status,
        mode=mode,
        body=template.body,
        headers=template.headers,
        **kwargs,
    )


def test_azure_transient_blob_faults_are_absorbed_and_permanent_ones_dead_letter(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    reliability_row: Callable[[Row], None],
) -> None:
    started = time.monotonic()
    # GIVEN 200 messages (190 good, 10 bad) and a fault proxy between the function's blob
    # client and Azurite: 4 doomed blobs always get 503 ServerBusy (the SDK retries 3 times,
    # then the function raises on every delivery); 8 get one 403 (not retried by the SDK: the
    # redelivery succeeds); 8 get their connection dropped once and every other upload a
    # seeded 15% chance of 503 on each attempt (the SDK's retries absorb them, except where
    # all 4 attempts of a delivery fail)
    plan = fault_plan(seed=31)
    messages, doomed, hiccup, dropped = plan.messages, plan.doomed, plan.hiccup, plan.dropped
    base = rf"^/{ACCOUNT}/{container.container_name}/"

    def blobs(selected: Sequence[Message]) -> str:
        return base + names_pattern(BLOB_PREFIX, selected) + "$"

    busy = blob_error(503, "ServerBusy")
    rules = {
        "doomed": azure_rule(busy, blobs(doomed), name="doomed"),
        "hiccup": azure_rule(
            blob_error(403, "AuthorizationPermissionMismatch"), blobs(hiccup),
            "first_n_per_key", n=1, name="hiccup",
        ),
        "dropped": FaultRule(
            "PUT", blobs(dropped), status=None, mode="first_n_per_key", n=1, name="dropped"
        ),
        "flaky": azure_rule(
            busy, base + f"({re.escape(BLOB_PREFIX)}/[^?]+)", "probability",
            p=0.15, seed=34, name="flaky",
        ),
    }  # fmt: skip
    attempts_per_delivery = 1 + RETRIES

    with FaultProxy(f"http://127.0.0.1:{azurite.port}", list(rules.values())) as proxy:
        store = BlobResultStore(
            container.container_name,
            BLOB_PREFIX,
            connection_string=connection_string(proxy.port),
            retry=default_retry(**FAST_RETRY),
        )
        monkeypatch.setattr(function_app, "results_store", lambda: store)
        function = registered_function().get_user_function()

        def deliver(message: Message, attempt: int) -> tuple[bool, str]:
            msg = make_message(
                message.body, message_id=f"m-{message.task_id}", delivery_count=attempt
            )
            try:
                function(msg)
            except StoreWriteError:
                return False, "StoreWriteError"
            return True, "returned"

        # WHEN each message is handed to the function (16 at a time, the host's
        # maxConcurrentCalls), and handed again with a higher delivery count while it raises,
        # up to max_delivery_count
        deliveries = deliver_until_settled(messages, deliver, workers=16)

    # THEN at the function's boundary: the doomed messages raised on every delivery and were
    # dead-lettered; the hiccups raised once; the others returned once their upload went
    # through, which the flaky rule's own decisions predict
    flaky = rules["flaky"]
    for message in messages:
        seen = deliveries.seen[message.task_id]
        if message in doomed:
            expected = ["StoreWriteError"] * MAX_DELIVERIES
        elif message in hiccup:
            expected = ["StoreWriteError", "returned"]
        elif message in dropped:
            expected = ["returned"]
        else:
            failed = leading_faults(flaky, f"{BLOB_PREFIX}/{message.record}")
            expected = ["StoreWriteError"] * (failed // attempts_per_delivery) + ["returned"]
        assert seen == expected, message.task_id
    assert deliveries.dead == [m for m in messages if m in doomed]
    # AND at the proxy: 4 attempts (1 + 3 SDK retries) per delivery of a doomed blob, a 403
    # never retried, a dropped connection retried
    check_proxy_attempts(
        rules, plan, BLOB_PREFIX, doomed_attempts=attempts_per_delivery * MAX_DELIVERIES
    )
    # AND the ledger: an exact result or error record for every message not dead-lettered
    objects = {
        name.removeprefix(BLOB_PREFIX + "/"): container.download_blob(name).readall()
        for name in container.list_blob_names()
    }
    reliability_row(
        proxy_row(
            "azure",
            "Blob uploads through a fault proxy: 503 ServerBusy (15% of attempts) and dropped"
            " connections retried by the SDK, 403 once (redelivered), 503 always"
            " (dead-lettered after 5 deliveries of 4 attempts)",
            plan,
            proxy,
            objects,
            deliveries,
            started,
            note="the registered function with real ServiceBusMessage objects; Service Bus's"
            " redelivery is simulated by the test; SDK retry count as in production, no waits",
        )
    )
