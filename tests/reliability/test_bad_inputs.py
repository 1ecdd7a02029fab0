"""Bad input: the shared corpus (tests/data/bad_inputs.json) through every entry point.

Each case goes through the local runner (in process and as ``python -m core.local`` on a JSON
Lines file), the AWS Lambda handler (all cases in one SQS batch, S3 on a moto server), the GCP
function in the real functions-framework server (raw push, structured and binary CloudEvents,
GCS emulator) and the Azure function through its registered FunctionApp (Azurite). Each must be
handled (no crash, no retry), end as exactly its record with the right error code and the
original bytes, and nothing may be written anywhere else. A case a transport cannot carry is
not sent through it; the corpus says why, and a test checks that ``adder submit aws`` reports
such tasks instead of dropping them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import requests
from google.api_core.exceptions import NotFound

from aws_lambda.handler import handle_event
from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.s3_store import S3ResultStore, default_client_config
from core.ops.manifest import Manifest
from core.ops.submit import submit
from core.records import MAX_RAW_KEPT
from core.runner import RunOptions, run_chunks
from core.task import MAX_ID_BYTES, MAX_TASK_BYTES
from tests.conftest import REPO_ROOT, files_outside
from tests.integration.aws.conftest import REGION, all_keys, read_object
from tests.integration.azure.messages import app_settings_for, make_message, registered_function
from tests.integration.gcp.conftest import function_running
from tests.reliability.corpus import (
    TRANSPORTS,
    Case,
    content_problems,
    load_corpus,
    record_problems,
    transport_refuses,
)
from tests.reliability.ledger import Row

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from azure.storage.blob import ContainerClient
    from mypy_boto3_sqs import SQSClient

    from core.task_source import Item
    from tests.integration.azure.conftest import Azurite

CORPUS = load_corpus()
PREFIX = "jobs/bad-inputs"


def readme_codes() -> set[str]:
    """The error codes the README lists ("`error` is one of: ..."), without GCP's own."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    listed = text.split("`error` is one of:", 1)[1].split("and on GCP", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", listed))


def problems_of(cases: Iterable[Case], read: Callable[[Case], bytes | None]) -> dict[str, Any]:
    """Every case whose stored object is missing or wrong, with what is wrong."""
    found: dict[str, Any] = {}
    for case in cases:
        problems = content_problems(case, read(case))
        if problems:
            found[case.name] = problems
    return found


def not_carried_note(transport: str) -> str:
    """Which cases ``transport`` cannot carry, grouped by why (for the row's note)."""
    reasons: dict[str, list[str]] = {}
    for case in CORPUS.cases:
        if not case.carried_by(transport):
            reasons.setdefault(case.not_on[transport], []).append(case.name)
    groups = [f"{', '.join(names)} ({why})" for why, names in reasons.items()]
    return "not sent: " + "; ".join(groups) if groups else ""


# --- the corpus itself --------------------------------------------------------------------


def test_corpus_covers_every_code_and_every_kind_of_bad_input() -> None:
    # GIVEN the corpus
    bad, good = CORPUS.bad, CORPUS.good
    # THEN it has at least 40 bad cases, using every error code of the README
    assert len(bad) >= 40
    codes = readme_codes()
    assert len(codes) >= 13
    assert {case.code for case in bad} == codes
    # AND each kind of bad input the reliability issue names is there
    ids = [case.raw for case in bad if case.code == "invalid_id"]
    kinds = {
        "not UTF-8": any(case.code == "invalid_encoding" for case in bad),
        "empty": any(case.raw == b"" for case in bad),
        "NaN": any(b"NaN" in case.raw for case in bad),
        "Infinity": any(b"Infinity" in case.raw for case in bad),
        "5,000+ digits": any(re.search(rb"\d{5000}", case.raw) for case in bad),
        "deeply nested": any(case.code == "too_deep" for case in bad),
        "over 256 KiB": any(len(case.raw) > 256 * 1024 for case in bad),
        "over 1 MiB": any(len(case.raw) > 1024 * 1024 for case in bad),
        "raw kept cut": any(len(case.raw) > MAX_RAW_KEPT for case in bad),
        "id /": any(b"a/b" in raw for raw in ids),
        "id \\": any(b"a\\\\b" in raw for raw in ids),
        "id ..": any(b'"..' in raw for raw in ids),
        "id NUL": any(b"\\u0000" in raw for raw in ids),
        "id 1000 long": any(b"i" * 1000 in raw for raw in ids),
        "id empty": any(b'"id": ""' in raw for raw in ids),
    }
    assert [kind for kind, present in kinds.items() if not present] == []
    # AND valid tricky ids: the boundary cases are exactly at the limits
    sizes = {case.name: len(case.raw) for case in good}
    assert sizes["message_exactly_16_kib"] == MAX_TASK_BYTES
    (at_limit,) = [case for case in good if case.name == "id_exactly_200_bytes"]
    assert at_limit.task_id is not None and len(at_limit.task_id.encode()) == MAX_ID_BYTES


def test_corpus_names_are_unique_and_transport_limits_match_their_rules() -> None:
    # GIVEN the corpus / THEN case names and stored names are unique (no case hides another)
    cases = CORPUS.cases
    assert len({case.name for case in cases}) == len(cases)
    assert len({case.file_name for case in cases}) == len(cases)
    # AND each case's not_on list is exactly what the transport rules say, each with a reason
    for case in cases:
        refused = {t for t in TRANSPORTS if transport_refuses(t, case.raw)}
        assert refused == set(case.not_on), case.name
        assert all(reason.strip() for reason in case.not_on.values()), case.name


# --- local runner -------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_local_runner_gives_each_case_its_record(
    tmp_path: Path, workers: int, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN every case as raw bytes, in chunks of 16 (as the runner reads a file)
    cases = CORPUS.carried_by("local")
    items: list[Item] = [(index, case.raw) for index, case in enumerate(cases)]
    chunks = [items[start : start + 16] for start in range(0, len(items), 16)]
    results = tmp_path / "results"
    started = time.monotonic()
    # WHEN the runner runs them
    summary = run_chunks(chunks, RunOptions(results, workers=workers))
    # THEN each good case succeeded, each bad one was rejected, none failed in the store
    assert (summary.succeeded, summary.rejected, summary.errored) == (
        len(CORPUS.good),
        len(CORPUS.bad),
        0,
    )
    # AND the results directory holds exactly one file per case, named as expected
    assert sorted(os.listdir(results)) == sorted(case.file_name for case in cases)
    assert problems_of(cases, lambda case: (results / case.file_name).read_bytes()) == {}
    # AND nothing was written outside it
    assert files_outside(tmp_path, results) == []
    reliability_row(
        Row(
            "bad input",
            "local runner",
            f"corpus through run_chunks ({workers} worker{'s' if workers > 1 else ''})",
            cases=len(cases),
            messages=len(cases),
            results=len(CORPUS.good),
            error_records=len(CORPUS.bad),
            seconds=time.monotonic() - started,
        )
    )


def test_local_cli_on_a_json_lines_file_gives_each_case_its_record(
    tmp_path: Path, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN every case a line can carry, one per line (a good one first: not a JSON array)
    cases = CORPUS.carried_by("jsonl")
    assert cases[0].good and not cases[0].raw.lstrip().startswith(b"[")
    source = tmp_path / "input" / "tasks.jsonl"
    source.parent.mkdir()
    source.write_bytes(b"".join(case.raw + b"\n" for case in cases))
    results = tmp_path / "results"
    good = sum(case.good for case in cases)
    started = time.monotonic()
    # WHEN `python -m core.local --tasks FILE --workers 2` runs it
    done = subprocess.run(
        [
            *(sys.executable, "-m", "core.local", "--tasks", str(source), "--workers", "2"),
            *("--results-dir", str(results), "--no-progress"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # THEN it exits 1 (some tasks failed), counts every line, and shows no traceback
    assert done.returncode == 1, done.stderr
    assert f"{len(cases)} tasks: {good} succeeded, {len(cases) - good} failed, 0 skipped" in (
        done.stdout
    )
    assert "Traceback" not in done.stderr
    assert f"... and {len(cases) - good - 20} more" in done.stderr
    # AND each line gave exactly its record, and nothing else was written anywhere
    assert sorted(os.listdir(results)) == sorted(case.file_name for case in cases)
    assert problems_of(cases, lambda case: (results / case.file_name).read_bytes()) == {}
    assert files_outside(tmp_path, results) == [source]
    reliability_row(
        Row(
            "bad input",
            "local runner",
            "corpus as a JSON Lines file through python -m core.local --workers 2",
            cases=len(cases),
            messages=len(cases),
            results=good,
            error_records=len(cases) - good,
            seconds=time.monotonic() - started,
            note=not_carried_note("jsonl"),
        )
    )


# --- AWS ----------------------------------------------------------------------------------


class LambdaContext:
    """The one method of the Lambda context the handler reads: plenty of time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def sqs_record(index: int, body: str) -> dict[str, Any]:
    """An SQS event record as the event source mapping delivers it."""
    return {
        "messageId": f"00000000-0000-4000-8000-{index:012d}",
        "receiptHandle": f"handle-{index}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764244800000"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # what SQS sends
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:adder-tasks",
        "awsRegion": REGION,
    }


@pytest.mark.integration
def test_aws_handler_handles_every_case_in_one_batch(
    aws_env: str, bucket: str, reliability_row: Callable[[Row], None]
) -> None:
    # GIVEN every case SQS can carry, all in one SQS event
    cases = CORPUS.carried_by("sqs")
    event = {"Records": [sqs_record(i, case.raw.decode()) for i, case in enumerate(cases)]}
    s3 = boto3.session.Session().client(
        "s3", region_name=REGION, endpoint_url=aws_env, config=default_client_config()
    )
    store = S3ResultStore(bucket, PREFIX, client=s3)
    started = time.monotonic()
    # WHEN the handler processes the batch against S3 (moto server)
    response = handle_event(event, LambdaContext(), store)
    # THEN no record is reported for retry: none crashed the batch
    assert response == {"batchItemFailures": []}
    # AND the bucket holds exactly one object per case, under the prefix, each right
    keys = all_keys(s3, bucket)
    assert sorted(keys) == sorted(f"{PREFIX}/{case.file_name}" for case in cases)
    found = problems_of(cases, lambda case: read_object(s3, bucket, f"{PREFIX}/{case.file_name}"))
    assert found == {}
    reliability_row(
        Row(
            "bad input",
            "aws",
            "corpus as one SQS batch through the Lambda handler (S3 on moto)",
            cases=len(cases),
            messages=len(cases),
            results=sum(case.good for case in cases),
            error_records=sum(not case.good for case in cases),
            seconds=time.monotonic() - started,
            note=not_carried_note("sqs"),
        )
    )


@pytest.mark.integration
def test_aws_submit_reports_each_task_sqs_cannot_carry_and_sends_the_rest(
    tmp_path: Path, sqs: SQSClient
) -> None:
    # GIVEN a JSON Lines file of every case a line can carry, some of which SQS cannot
    cases = CORPUS.carried_by("jsonl")
    source = tmp_path / "tasks.jsonl"
    source.write_bytes(b"".join(case.raw + b"\n" for case in cases))
    queue_url = sqs.create_queue(
        QueueName=f"bad-inputs-{uuid.uuid4().hex[:10]}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]
    # WHEN `adder submit aws` sends it
    manifest = Manifest.create(tmp_path / "jobs", "bad-inputs", "aws", {}, str(source))
    backend = AwsJobBackend(sqs, queue_url=queue_url)
    summary = submit(backend, str(source), manifest=manifest, concurrency=2)
    # THEN every task is counted: sent, or reported as not sent, none dropped silently
    assert summary.sent + summary.failed == len(cases)
    # AND exactly the tasks SQS would refuse (not UTF-8, characters XML does not allow, over
    # 256 KiB) are reported, before sending: moto does not check characters as SQS does, and
    # SQS refuses a whole batch for one such body
    unsendable = [case for case in cases if not case.carried_by("sqs")]
    assert unsendable and summary.failed == len(unsendable)
    # AND every message sent arrived byte for byte
    received: list[bytes] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        received += [message["Body"].encode("utf-8", "surrogatepass") for message in batch]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    assert sorted(received) == sorted(case.raw for case in cases if case.carried_by("sqs"))


# --- GCP ----------------------------------------------------------------------------------

TOPIC = "//pubsub.googleapis.com/projects/example-project/topics/adder-tasks"
SUBSCRIPTION = "projects/example-project/subscriptions/adder-tasks-push"
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


def pubsub_message(case: Case, message_id: str) -> dict[str, Any]:
    """A Pub/Sub message as pushed; an empty task is a message with attributes but no data."""
    message: dict[str, Any] = {
        "attributes": {"origin": "bad-inputs"},
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": "2026-11-27T12:00:00.000Z",
        "publish_time": "2026-11-27T12:00:00.000Z",
    }
    if case.raw:
        message["data"] = base64.b64encode(case.raw).decode("ascii")
    return message


def post_case(url: str, mode: str, case: Case, message_id: str) -> requests.Response:
    """Deliver ``case`` to the function as a raw push, a structured or a binary CloudEvent."""
    envelope: dict[str, Any] = {
        "message": pubsub_message(case, message_id),
        "subscription": SUBSCRIPTION,
    }
    if mode == "push":
        return requests.post(url, json={**envelope, "deliveryAttempt": 1}, timeout=60)
    attributes = {
        "specversion": "1.0",
        "type": MESSAGE_PUBLISHED,
        "source": TOPIC,
        "id": message_id,
        "time": "2026-11-27T12:00:00.000Z",
    }
    if mode == "structured":
        event = {**attributes, "datacontenttype": "application/json", "data": envelope}
        headers = {"Content-Type": "application/cloudevents+json"}
        return requests.post(url, data=json.dumps(event), headers=headers, timeout=60)
    headers = {"Content-Type": "application/json"} | {f"ce-{k}": v for k, v in attributes.items()}
    return requests.post(url, data=json.dumps(envelope), headers=headers, timeout=60)


@pytest.mark.integration
def test_gcp_function_handles_every_case_in_every_delivery_mode(
    gcs_emulator: str,
    gcs_client: Any,
    function_source: Path,
    new_bucket: Any,
    tmp_path: Path,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the function in the real functions-framework server, with a bucket of its own
    cases = CORPUS.carried_by("pubsub")
    plain = [case for case in cases if not case.on_gcp]
    started = time.monotonic()
    deliveries = refused = 0
    with function_running(
        function_source, gcs_emulator, new_bucket.name, PREFIX, tmp_path / "function.log"
    ) as server:
        bucket = gcs_client.bucket(new_bucket.name)

        def read(case: Case) -> bytes | None:
            # bucket.blob(...) quotes the name itself; the emulator's mediaLink does not
            try:
                return bytes(bucket.blob(f"{PREFIX}/{case.file_name}").download_as_bytes())
            except NotFound:
                return None

        for mode in ("push", "structured", "binary"):
            # WHEN every case is delivered in this mode (4 at a time)
            ids = {case.name: f"{mode}-{index}" for index, case in enumerate(cases)}
            with ThreadPoolExecutor(4) as pool:
                futures = {
                    case.name: pool.submit(post_case, server.url, mode, case, ids[case.name])
                    for case in cases
                }
                responses = {name: future.result() for name, future in futures.items()}
            deliveries += len(cases)
            # THEN every one is acknowledged (2xx): none is retried, none crashes the server;
            # except where the corpus says Pub/Sub's delivery is refused before the function
            expected_status = {case.name: case.on_gcp.get(f"{mode}_status", 200) for case in cases}
            statuses = {name: response.status_code for name, response in responses.items()}
            assert statuses == expected_status, mode
            refused += sum(status >= 300 for status in statuses.values())
            recorded = [c for c in cases if c.on_gcp and expected_status[c.name] < 300]
            # AND the bucket holds exactly one object per delivered case, all under the prefix
            names = sorted(blob.name for blob in gcs_client.list_blobs(new_bucket.name))
            expected = {f"{PREFIX}/{case.file_name}" for case in plain}
            extra = [name for name in names if name not in expected]
            assert set(names) >= expected, mode
            assert len(extra) == len(recorded), (mode, extra)
            assert problems_of(plain, read) == {}, mode
            # AND a message with no data is an invalid_envelope record of the whole message
            for case, name in zip(recorded, sorted(extra), strict=True):
                content = bucket.blob(name).download_as_bytes()
                assert record_problems(case, content, code=case.on_gcp["code"]) == [], mode
                record = json.loads(content)
                assert name == f"{PREFIX}/invalid-{record['raw_sha256']}.err"
                assert hashlib.sha256(record["raw"].encode()).hexdigest() == record["raw_sha256"]
                assert json.loads(record["raw"])["messageId"] == ids[case.name]
            for blob in gcs_client.list_blobs(new_bucket.name):
                blob.delete()
    reliability_row(
        Row(
            "bad input",
            "gcp",
            "corpus through functions-framework as raw push, structured and binary CloudEvents",
            cases=len(cases),
            messages=deliveries,
            results=3 * len(CORPUS.good),
            error_records=deliveries - 3 * len(CORPUS.good) - refused,
            dead_lettered=refused,
            seconds=time.monotonic() - started,
            note="each case delivered once per mode; an empty task is a Pub/Sub message without "
            "data: in every mode it gets an invalid_envelope record holding the whole message",
        )
    )


# --- Azure --------------------------------------------------------------------------------


@pytest.mark.integration
def test_azure_function_handles_every_case(
    azurite: Azurite,
    container: ContainerClient,
    monkeypatch: pytest.MonkeyPatch,
    reliability_row: Callable[[Row], None],
) -> None:
    # GIVEN the registered function, its app settings pointing at Azurite
    user_function: Callable[[Any], object] = registered_function().get_user_function()
    cases = CORPUS.carried_by("servicebus")
    started = time.monotonic()
    with app_settings_for(monkeypatch, azurite.connection_string, container.container_name, PREFIX):
        # WHEN each case arrives as a real ServiceBusMessage with a bytes body (4 at a time)
        def deliver(pair: tuple[int, Case]) -> object:
            index, case = pair
            return user_function(make_message(case.raw, message_id=f"sb-{index}"))

        with ThreadPoolExecutor(4) as pool:
            returned = list(pool.map(deliver, enumerate(cases)))
    # THEN every invocation returned normally: the host completes each message
    assert returned == [None] * len(cases)
    # AND the container holds exactly one blob per case, under the prefix, each right
    names = sorted(container.list_blob_names())
    assert names == sorted(f"{PREFIX}/{case.file_name}" for case in cases)

    def read(case: Case) -> bytes:
        data: bytes = container.download_blob(f"{PREFIX}/{case.file_name}").readall()
        return data

    assert problems_of(cases, read) == {}
    reliability_row(
        Row(
            "bad input",
            "azure",
            "corpus as Service Bus messages through the registered function (Azurite)",
            cases=len(cases),
            messages=len(cases),
            results=sum(case.good for case in cases),
            error_records=sum(not case.good for case in cases),
            seconds=time.monotonic() - started,
            note=not_carried_note("servicebus"),
        )
    )
