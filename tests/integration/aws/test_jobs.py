"""The AWS job backend (SQS + S3) against a real moto server: the shared backend contract, and
``adder submit|status|redrive aws`` end to end, in process and as ``python -m core.cli``.

The error cases run the CLI as a subprocess with an environment built from nothing (no
credentials file, no config file, no instance metadata), so what they see is what a user
with that setup sees: one line on stderr, exit code 2, within seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import boto3
import pytest

from aws_lambda.job_backend import AwsJobBackend
from aws_lambda.jobs import make_clients
from aws_lambda.sandbox import moto_server
from core.cli import main as adder
from core.errors import ConfigError
from core.ops.manifest import Manifest
from tests.conftest import REPO_ROOT
from tests.integration.aws.conftest import REGION, Queues
from tests.job_backend_contract import JobBackendContract, PlantDeadLetter, PlantRecord, Queued
from tools.aws_faults import SqsBatchSendFaults
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

PREFIX = "out"
ONE_LINE_SECONDS = 15
"""The issue's bound for a configuration error's one line."""


def drain(sqs: SQSClient, url: str) -> list[bytes]:
    """Every body on ``url`` now, each received once (hidden for 10 minutes, not deleted)."""
    bodies: list[bytes] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return bodies
        bodies += [message["Body"].encode("utf-8", "surrogatepass") for message in messages]


def task_line(i: int) -> str:
    return json.dumps({"id": f"t-{i}", "data": {"num1": i, "num2": 0.5}})


def tasks_file(directory: Path, count: int, name: str = "tasks.jsonl") -> Path:
    path = directory / name
    path.write_text("".join(task_line(i) + "\n" for i in range(count)), encoding="utf-8")
    return path


def ids(bodies: list[bytes]) -> list[str]:
    return [json.loads(body)["id"] for body in bodies]


# --- the shared contract ----------------------------------------------------------------


class TestAwsJobBackend(JobBackendContract):
    """The contract, with the production client settings; the dead-letter queue is found
    from the task queue's redrive policy."""

    @pytest.fixture
    def backend(self, aws_env: str, queues: Queues, bucket: str) -> Iterator[AwsJobBackend]:
        sqs, s3 = make_clients(REGION, aws_env)
        backend = AwsJobBackend(
            sqs, s3, queue_url=queues.url, bucket=bucket, prefix=PREFIX, owns_clients=True
        )
        yield backend
        backend.close()

    @pytest.fixture
    def queued(self, sqs: SQSClient, queues: Queues) -> Queued:
        return lambda: drain(sqs, queues.url)

    @pytest.fixture
    def plant_record(self, s3: S3Client, bucket: str) -> PlantRecord:
        def plant(file_name: str, data: bytes) -> None:
            s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{file_name}", Body=data)

        return plant

    @pytest.fixture
    def plant_dead_letter(self, sqs: SQSClient, queues: Queues) -> PlantDeadLetter:
        def plant(body: bytes) -> None:
            sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=body.decode("utf-8"))

        return plant

    @pytest.fixture
    def missing_backend(self, aws_env: str) -> Iterator[AwsJobBackend]:
        sqs, s3 = make_clients(REGION, aws_env)
        missing = f"{aws_env}/123456789012/no-such-queue-{uuid.uuid4().hex[:8]}"
        backend = AwsJobBackend(
            sqs,
            s3,
            queue_url=missing,
            dead_letter_queue_url=missing,
            bucket=f"no-such-bucket-{uuid.uuid4().hex[:8]}",
            owns_clients=True,
        )
        yield backend
        backend.close()


# --- the backend's AWS specifics ----------------------------------------------------------


def test_a_queue_name_and_its_dead_letter_queue_are_resolved(
    aws_env: str, sqs: SQSClient, s3: S3Client, queues: Queues
) -> None:
    # GIVEN the task queue by name only (as the seed config's queue_name gives it)
    name = queues.url.rsplit("/", 1)[1]
    backend = AwsJobBackend(sqs, s3, queue_url=name)
    # WHEN a task is sent and a dead letter is planted
    assert backend.send_batch([b'{"id": "n-1", "data": {"num1": 1, "num2": 2}}']) == []
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="dead")
    # THEN the name resolved to the queue's URL and the DLQ came from its redrive policy
    assert backend.task_queue_url() == queues.url
    assert backend.dead_letter_queue_url() == queues.dlq_url
    assert backend.queue_label == f"SQS queue {queues.url}"
    assert drain(sqs, queues.url) == [b'{"id": "n-1", "data": {"num1": 1, "num2": 2}}']


def test_bodies_sqs_refuses_are_refused_before_sending_and_the_rest_go(
    aws_env: str, sqs: SQSClient, s3: S3Client, queues: Queues
) -> None:
    # GIVEN a batch with a control character, a lone surrogate, an empty body and an
    # oversized one among good tasks (moto would take some of them; SQS refuses the batch)
    good = [task_line(1).encode(), task_line(2).encode()]
    bad = [b'"\x01"', '"\ud800"'.encode("utf-8", "surrogatepass"), b"", b'"' + b"x" * 262_144]
    backend = AwsJobBackend(sqs, s3, queue_url=queues.url)
    # WHEN it is sent
    refused = backend.send_batch([good[0], *bad, good[1]])
    # THEN exactly the bad ones are refused for good, each with its reason, and the rest arrive
    assert [(r.index, r.retry) for r in refused] == [(1, False), (2, False), (3, False), (4, False)]
    assert "'\\x01' at character 1" in refused[0].reason
    assert "not valid UTF-8" in refused[1].reason
    assert "empty" in refused[2].reason
    assert "over SQS's limit" in refused[3].reason
    assert sorted(drain(sqs, queues.url)) == sorted(good)
    assert all(backend.unsendable(body) for body in bad)
    assert backend.unsendable(good[0]) is None


def test_entries_sqs_reports_failed_are_refused_with_retry(
    aws_env: str, sqs: SQSClient, s3: S3Client, queues: Queues
) -> None:
    # GIVEN SQS answers the next SendMessageBatch with every entry failed (not the sender's
    # fault), as it does when throttled or erring internally
    SqsBatchSendFaults(sqs, failing_calls=1)
    backend = AwsJobBackend(sqs, s3, queue_url=queues.url)
    # WHEN a batch is sent / THEN each entry comes back as "try again", nothing is queued
    refused = backend.send_batch([task_line(1).encode(), task_line(2).encode()])
    assert [(r.index, r.retry) for r in refused] == [(0, True), (1, True)]
    assert "InternalError" in refused[0].reason
    assert drain(sqs, queues.url) == []


def test_queue_depth_counts_waiting_and_in_flight(
    aws_env: str, sqs: SQSClient, s3: S3Client, queues: Queues
) -> None:
    # GIVEN three tasks, one of them received (in flight)
    backend = AwsJobBackend(sqs, s3, queue_url=queues.url)
    assert backend.send_batch([task_line(i).encode() for i in range(3)]) == []
    sqs.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)  # the test server caches counts briefly
    # WHEN the depth is asked / THEN two wait and one is in flight
    depth = backend.queue_depth()
    assert (depth.waiting, depth.in_flight) == (2, 1)


def test_records_of_other_prefixes_and_folders_are_not_listed(
    aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    for key in ("out/a.out", "out/sub/b.out", "outer/c.out", "d.out", "out/e.txt", "out/f.err"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    backend = AwsJobBackend(sqs, s3, bucket=bucket, prefix="/out/")
    assert sorted(record.key for record in backend.list_records()) == ["out/a.out", "out/f.err"]
    assert backend.results_label == f"s3://{bucket}/out/"


def test_a_record_deleted_after_listing_fails_alone_not_as_configuration(
    aws_env: str, sqs: SQSClient, s3: S3Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="out/gone.out", Body=b"1")
    backend = AwsJobBackend(sqs, s3, bucket=bucket, prefix="out")
    (record,) = list(backend.list_records())
    s3.delete_object(Bucket=bucket, Key="out/gone.out")
    with pytest.raises(Exception) as raised:
        backend.read_record(record)
    assert not isinstance(raised.value, ConfigError)
    assert "gone since it was listed" in str(raised.value)


# --- the CLI, in process ------------------------------------------------------------------


def test_submit_with_a_seed_config_file_names_no_provider_and_writes_the_manifest(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    queues: Queues,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the seed's cloud config (queue by name; region and endpoint in it, not in the
    # environment) and 25 tasks
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    config = tmp_path / "job.json"
    config.write_text(
        json.dumps(
            {
                "provider": "aws",
                "job_id": "seed-job",
                "queue_name": queues.url.rsplit("/", 1)[1],
                "result_bucket": bucket,
                "result_prefix": PREFIX,
                "config": {"region": REGION, "endpoint_url": aws_env},
            }
        )
    )
    tasks = tasks_file(tmp_path, 25)
    jobs = tmp_path / "jobs"
    # WHEN `adder submit --config job.json tasks.jsonl` runs
    code = adder(["submit", "--config", str(config), "--jobs-dir", str(jobs), str(tasks)])
    # THEN every task is on the queue, and the manifest (named by job_id) knows them and where
    out = capsys.readouterr().out
    assert code == 0
    assert f"sent 25 tasks to SQS queue {queues.url}" in out and "(job seed-job)" in out
    assert sorted(ids(drain(sqs, queues.url))) == sorted(f"t-{i}" for i in range(25))
    manifest = Manifest.load(jobs, "seed-job")
    assert manifest.cloud == "aws" and manifest.complete
    assert manifest.sent_names() == {f"t-{i}" for i in range(25)}
    assert manifest.settings["bucket"] == bucket
    assert manifest.settings["prefix"] == PREFIX
    assert manifest.settings["region"] == REGION
    assert manifest.settings["endpoint_url"] == aws_env


def test_submit_with_flags_then_status_and_redrive_from_the_manifest_settings(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    s3: S3Client,
    queues: Queues,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN no settings in the environment but the credentials
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    where = ["--region", REGION, "--endpoint-url", aws_env]
    tasks = tasks_file(tmp_path, 12)
    jobs = tmp_path / "jobs"
    # WHEN submitted with flags
    code = adder(
        [
            *["submit", "aws", "--queue-url", queues.url, *where],
            *["--jobs-dir", str(jobs), "--job", "flagged", "--no-progress", str(tasks)],
        ]
    )
    # THEN the tasks are sent and recorded
    assert code == 0
    assert "sent 12 tasks" in capsys.readouterr().out
    assert len(Manifest.load(jobs, "flagged").sent_names()) == 12
    # GIVEN two dead letters and one result
    for i in range(2):
        sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=f'{{"id": "d{i}"}}')
    s3.put_object(Bucket=bucket, Key="p/x.out", Body=b"1")
    time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)
    # WHEN status is asked (the DLQ found through the redrive policy)
    status = ["status", "aws", "--queue-url", queues.url, "--bucket", bucket, "--prefix", "p"]
    assert adder([*status, *where]) == 0
    out = capsys.readouterr().out
    # THEN it shows the depths and counts
    assert "task queue:   12 waiting, 0 in flight" in out
    assert "dead letters: 2" in out
    assert f"results:      1 .out, 0 .err in s3://{bucket}/p/" in out
    # WHEN the DLQ is redriven / THEN its messages are back on the task queue, none left
    assert adder(["redrive", "aws", "--queue-url", queues.url, *where, "--no-progress"]) == 0
    assert (
        f"moved 2 dead-lettered tasks back onto SQS queue {queues.url}" in capsys.readouterr().out
    )
    time.sleep(moto_server.COUNT_CACHE_SECONDS + 0.1)
    assert adder([*status, *where, "--dead-letter-queue-url", queues.dlq_url]) == 0
    out = capsys.readouterr().out
    assert "task queue:   14 waiting" in out and "dead letters: 0" in out


def test_submit_reports_tasks_sqs_cannot_take_and_sends_the_rest(
    tmp_path: Path,
    aws_env: str,
    sqs: SQSClient,
    queues: Queues,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN one good task, one too large for SQS and one with a character SQS refuses
    tasks = tmp_path / "t.jsonl"
    tasks.write_bytes(
        task_line(0).encode() + b"\n" + b'"' + b"x" * 300_000 + b'"\n' + b'"a\x08b"\n'
    )
    # WHEN submitted
    code = adder(
        [
            *["submit", "aws", "--queue-url", queues.url],
            *["--jobs-dir", str(tmp_path / "j"), "--no-progress", str(tasks)],
        ]
    )
    captured = capsys.readouterr()
    # THEN the two are reported (exit 1), the good one is sent
    assert code == 1
    assert "sent 1 tasks" in captured.out and "2 not sent" in captured.out
    assert "over SQS's limit" in captured.err
    assert "which SQS refuses" in captured.err
    assert ids(drain(sqs, queues.url)) == ["t-0"]


# --- the CLI as a user runs it: one line on stderr, exit 2, within seconds ------------------


def bare_environment(home: Path, **extra: str) -> dict[str, str]:
    """An environment with no AWS settings at all: empty credentials and config files,
    no instance metadata; ``extra`` adds some back."""
    home.mkdir(exist_ok=True)
    empty = home / "empty"
    empty.write_text("")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def run_adder(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def assert_one_line_config_error(
    done: subprocess.CompletedProcess[str], seconds: float, *fragments: str
) -> None:
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert done.returncode == 2
    assert seconds < ONE_LINE_SECONDS


KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def test_no_region_is_one_line(tmp_path: Path, aws_env: str, queues: Queues) -> None:
    env = bare_environment(tmp_path / "home", **KEYS)
    tasks = tasks_file(tmp_path, 3)
    done, seconds = run_adder(
        ["submit", "aws", "--queue-url", queues.url, "--endpoint-url", aws_env, str(tasks)],
        env,
        tmp_path,
    )
    assert_one_line_config_error(done, seconds, "no AWS region: give --region or set AWS_REGION")
    assert not (tmp_path / ".adder").exists()


def test_no_credentials_is_one_line(tmp_path: Path, aws_env: str, queues: Queues) -> None:
    env = bare_environment(tmp_path / "home", AWS_REGION=REGION)
    tasks = tasks_file(tmp_path, 3)
    done, seconds = run_adder(
        ["submit", "aws", "--queue-url", queues.url, "--endpoint-url", aws_env, str(tasks)],
        env,
        tmp_path,
    )
    assert_one_line_config_error(
        done,
        seconds,
        f"no usable credentials for AWS in region {REGION} at {aws_env}: run aws configure",
        "AWS_PROFILE",
    )


@pytest.mark.parametrize("form", ["name", "url"])
def test_a_wrong_queue_is_one_line(tmp_path: Path, aws_env: str, form: str) -> None:
    env = bare_environment(tmp_path / "home", AWS_DEFAULT_REGION=REGION, **KEYS)
    queue = "no-such-queue" if form == "name" else f"{aws_env}/123456789012/no-such-queue"
    tasks = tasks_file(tmp_path, 3)
    done, seconds = run_adder(
        ["submit", "aws", "--queue-url", queue, "--endpoint-url", aws_env, str(tasks)],
        env,
        tmp_path,
    )
    assert_one_line_config_error(
        done,
        seconds,
        f"SQS queue {queue} in region {REGION} at {aws_env} does not exist: check --queue-url",
    )
    assert not (tmp_path / ".adder").exists()


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = bare_environment(tmp_path / "home", AWS_REGION=REGION, **KEYS)
    done, seconds = run_adder(
        ["status", "aws", "--queue-url", "tasks", "--endpoint-url", closed], env, tmp_path
    )
    assert_one_line_config_error(
        done,
        seconds,
        f"cannot reach SQS queue tasks in region {REGION} at {closed}",
        "--endpoint-url",
    )


class DenyingMoto:
    """A second moto server that enforces IAM, with a user who may do nothing."""

    def __init__(self, url: str) -> None:
        self.url = url
        admin = boto3.session.Session(
            aws_access_key_id="moto-admin",
            aws_secret_access_key="admin",
            region_name=REGION,
        )
        iam = admin.client("iam", endpoint_url=url)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        self.keys = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        self.queue_url = admin.client("sqs", endpoint_url=url).create_queue(QueueName="tasks")[
            "QueueUrl"
        ]
        self.bucket = "denied-results"
        admin.client("s3", endpoint_url=url).create_bucket(Bucket=self.bucket)


UNAUTHENTICATED_SETUP_CALLS = 4
"""CreateUser, CreateAccessKey, CreateQueue, CreateBucket: moto enforces IAM after these."""


@pytest.fixture(scope="module")
def denying_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DenyingMoto]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto-iam") / "moto.log"
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_SETUP_CALLS)}
    with running_server(
        moto_server.command(port), f"{url}/moto-api/", env=env, log=log, cwd=REPO_ROOT
    ):
        yield DenyingMoto(url)


def test_access_denied_is_one_line_naming_the_permission(
    tmp_path: Path, denying_moto: DenyingMoto
) -> None:
    # GIVEN a moto server that enforces IAM and credentials of a user with no policy
    env = bare_environment(tmp_path / "home", AWS_REGION=REGION, **denying_moto.keys)
    where = ["--endpoint-url", denying_moto.url]
    tasks = tasks_file(tmp_path, 3)
    # WHEN submitting / THEN one line says which permissions the caller lacks on which queue
    done, seconds = run_adder(
        ["submit", "aws", "--queue-url", denying_moto.queue_url, *where, str(tasks)],
        env,
        tmp_path,
    )
    assert_one_line_config_error(
        done,
        seconds,
        f"access denied to SQS queue {denying_moto.queue_url}",
        "the caller needs sqs:GetQueueAttributes and sqs:SendMessage on it",
    )
    # AND fetching from the bucket says the same of s3:ListBucket
    done, seconds = run_adder(
        ["fetch", "aws", "--bucket", denying_moto.bucket, *where, "--into", "r"], env, tmp_path
    )
    assert_one_line_config_error(
        done,
        seconds,
        f"access denied to S3 bucket {denying_moto.bucket}",
        "the caller needs s3:ListBucket on it",
    )


# --- Ctrl-C mid-submit, then --resume -----------------------------------------------------

INTERRUPTED_TASKS = 3_000


def wait_for_lines(path: Path, at_least: int, process: subprocess.Popen[str]) -> int:
    """Block until ``path`` holds ``at_least`` whole lines (or the process ended)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            count = path.read_bytes().count(b"\n")
            if count >= at_least:
                return count
        time.sleep(0.005)  # polling a file the submit appends to; not used as a sync
    raise AssertionError(f"{path} did not reach {at_least} lines while the submit ran")


def test_ctrl_c_mid_submit_then_resume_sends_every_task_exactly_once(
    tmp_path: Path, aws_env: str, sqs: SQSClient, queues: Queues
) -> None:
    # GIVEN a submit of 3,000 tasks, one batch at a time, as a user runs it
    env = bare_environment(tmp_path / "home", AWS_REGION=REGION, **KEYS)
    tasks = tasks_file(tmp_path, INTERRUPTED_TASKS)
    args = ["submit", "aws", "--queue-url", queues.url, "--endpoint-url", aws_env]
    args += ["--concurrency", "1", "--no-progress", "--job", "big", str(tasks)]
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # WHEN Ctrl-C arrives once some batches are confirmed
    wait_for_lines(tmp_path / ".adder" / "jobs" / "big.sent", 50, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    # THEN it exits 130 with one line: how many were sent, and how to send the rest
    assert process.returncode == 130, err
    (line,) = err.splitlines()
    manifest = Manifest.load(tmp_path / ".adder" / "jobs", "big")
    first = manifest.sent_names()
    assert 50 <= len(first) < INTERRUPTED_TASKS
    assert line.startswith(f"interrupted: {len(first):,} tasks sent and recorded; ")
    assert line.endswith(" --resume") and "--job big" in line
    assert not manifest.complete
    assert f"sent {len(first):,} tasks to SQS queue {queues.url}" in out
    # WHEN the submit is resumed
    resumed, _ = run_adder([*args, "--resume"], env, tmp_path)
    # THEN it sends only what the first run did not, and the queue holds every task once
    assert resumed.returncode == 0, resumed.stderr
    rest = INTERRUPTED_TASKS - len(first)
    assert f"sent {rest:,} tasks" in resumed.stdout
    assert f"{len(first):,} skipped (sent before)" in resumed.stdout
    received = ids(drain(sqs, queues.url))
    assert len(received) == INTERRUPTED_TASKS
    assert set(received) == {f"t-{i}" for i in range(INTERRUPTED_TASKS)}
    assert Manifest.load(tmp_path / ".adder" / "jobs", "big").complete
