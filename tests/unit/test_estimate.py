"""``adder estimate CLOUD``: each cloud's bill for both results layouts, checked against
figures worked out by hand here from the published list prices (not from the code's output);
the command line; the stack's settings read through ``terraform output``; the README's Cost
table recomputed from the price table."""

from __future__ import annotations

import json
import math
import re
import shlex
from typing import TYPE_CHECKING, Any

import pytest

from core.cli import main
from core.ops.estimate import (
    LIST_PAGE,
    SUBMIT_BATCH,
    WRITE_THREADS,
    Workload,
    aws_items,
    estimate,
)
from core.ops.manifest import Manifest, jobs_dir
from core.ops.prices import PRICES, PRICES_DATE
from tests.conftest import REPO_ROOT
from tests.support.terraform_state import require_terraform, write_state

if TYPE_CHECKING:
    from pathlib import Path

MILLION = 1_000_000
GIB = 2**30
TIB = 2**40


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no ``infra/<cloud>`` state, so only flags and defaults count."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """``adder estimate ARGV --json``, which must succeed."""
    code = main(["estimate", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def costs(document: dict[str, Any]) -> list[float]:
    return [item["cost_usd"] for item in document["items"]]


# --- AWS: SQS -> Lambda (arm64, 256 MB, batches of 10) -> S3 --------------------------------


def test_aws_per_task_bill_by_hand(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a million tasks at the stack's defaults: batches of 10, 256 MB, one object per task
    document = run_json(capsys, "aws", "--tasks", "1000000")
    # THEN every line is the list price times what the job does
    batches = 1_000_000 / 10
    request = 0.40 / MILLION  # SQS: one request per 10 tasks sent, received and deleted
    # one invocation: 2 ms + (10 tasks x 0.1 ms + 10 writes x 1 ms) of CPU at 256/1769 vCPU
    # + one round of writes (10 at once, the pool holds 32) x 30 ms
    batch_ms = 2 + (10 * 0.1 + 10 * 1.0) / (256 / 1769) + 1 * 30
    expected = [
        batches * request,  # SendMessageBatch
        batches * request,  # ReceiveMessage
        batches * request,  # DeleteMessageBatch
        batches * 0.20 / MILLION,  # Lambda requests
        batches * batch_ms / 1000 * (256 / 1024) * 0.0000133334,  # GB-s, arm64
        1_000_000 * 0.005 / 1000,  # S3 PUT, one per task
        1_000 * 0.005 / 1000,  # fetch: LIST, 1,000 keys a page
        1_000_000 * 0.0004 / 1000,  # fetch: GET
        1_000_000 * (3 + 400) / GIB * 0.09,  # fetch: "100" + 400 bytes of headers each
        (1_000_000 * 353 + batches * 600) / GIB * 0.50,  # CloudWatch Logs
    ]
    assert costs(document) == pytest.approx(expected, rel=1e-9)
    assert document["total_usd"] == pytest.approx(sum(expected), rel=1e-9)
    assert document["total_usd"] == pytest.approx(5.8071, abs=1e-4)  # the README's figure
    assert document["per_million_tasks_usd"] == pytest.approx(document["total_usd"])
    assert document["free_tiers_subtracted"] is False


def test_aws_packed_bill_by_hand(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the same job in the packed layout: one object per batch of 10
    document = run_json(capsys, "aws", "--tasks", "1000000", "--layout", "packed")
    batches = 1_000_000 / 10
    request = 0.40 / MILLION
    batch_ms = 2 + (10 * 0.1 + 1 * 1.0) / (256 / 1769) + 1 * 30  # one write per invocation
    expected = [
        batches * request,
        batches * request,
        batches * request,
        batches * 0.20 / MILLION,
        batches * batch_ms / 1000 * (256 / 1024) * 0.0000133334,
        batches * 0.005 / 1000,  # S3 PUT, one per batch
        100 * 0.005 / 1000,  # fetch: 100,000 packs listed 1,000 a page
        batches * 0.0004 / 1000,
        (1_000_000 * 40 + batches * 400) / GIB * 0.09,  # 40-byte lines + headers per pack
        (1_000_000 * 353 + batches * 600) / GIB * 0.50,  # logs do not change
    ]
    assert costs(document) == pytest.approx(expected, rel=1e-9)
    assert document["total_usd"] == pytest.approx(0.8948, abs=1e-4)
    # THEN the per_task layout is quoted beside it: 10 times the writes cost 6.5x the bill
    assert document["other_layout"]["layout"] == "per_task"
    assert document["other_layout"]["total_usd"] == pytest.approx(5.8071, abs=1e-4)


def test_aws_big_batches_wait_for_rounds_of_32_writes(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN batches of 100 in the per_task layout: 100 writes, 32 at a time = 4 rounds
    document = run_json(capsys, "aws", "--tasks", "1000000", "--batch-size", "100")
    invocations = 10_000
    batch_ms = 2 + (100 * 0.1 + 100 * 1.0) / (256 / 1769) + 4 * 30
    duration = next(i for i in document["items"] if i["item"].startswith("Lambda duration"))
    assert duration["quantity"] == pytest.approx(invocations * batch_ms / 1000 * 0.25)
    # SQS still moves 10 messages a request, whatever the batch
    receive = next(i for i in document["items"] if i["item"].startswith("SQS ReceiveMessage"))
    assert receive["quantity"] == 100_000


def test_sqs_bills_each_64_kb_of_a_request() -> None:
    # GIVEN 20 tasks of 10,000 bytes: a batch of 10 carries 100,000 bytes = 2 chunks of 64 KB
    items = aws_items(Workload(tasks=20, batch_size=10, task_bytes=10_000, vcpu=1.0))
    send, receive, delete = (item.quantity for item in items[:3])
    assert (send, receive, delete) == (2 * 2, 2 * 2, 2)  # deletes carry no bodies


# --- Google Cloud: Pub/Sub push -> Cloud Run function -> GCS ----------------------------------


def test_gcp_per_task_bill_by_hand(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a million tasks at 256M (256 x 10^6 bytes), one request per instance at a time,
    # which Cloud Run gives 0.167 vCPU
    document = run_json(capsys, "gcp", "--tasks", "1000000", "--concurrency", "1")
    message = 56 + 20 + 17  # data + timestamp + message id
    request_ms = 2 + (0.1 + 1.0) / 0.167 + 30
    instance_seconds = 1_000_000 * request_ms / 1000  # nothing overlaps at concurrency 1
    expected = [
        1_000 * (1_000 * message) / TIB * 40,  # publish: 1,000 requests of 1,000 messages
        1_000_000 * 1_000 / TIB * 40,  # push: one message a request, billed at 1,000 bytes
        1_000_000 * 0.40 / MILLION,  # Cloud Run requests
        instance_seconds * 0.167 * 0.000024,  # vCPU-s
        instance_seconds * (256e6 / GIB) * 0.0000025,  # GiB-s
        1_000_000 * 0.005 / 1000,  # Class A writes
        1_000 * 0.005 / 1000,  # fetch: listings are Class A
        1_000_000 * 0.0004 / 1000,  # fetch: Class B reads
        1_000_000 * (3 + 400) / GIB * 0.12,
        1_000_000 * (700 + 1000) / GIB * 0.50,  # app line + Cloud Run request log
    ]
    assert costs(document) == pytest.approx(expected, rel=1e-9)


def test_gcp_packed_with_concurrent_requests_by_hand(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the stack's defaults: 80 requests at once per instance (so 1 vCPU); packed, the
    # 80 requests an instance holds share a pack
    document = run_json(capsys, "gcp", "--tasks", "1000000", "--layout", "packed")
    packs = 1_000_000 / 80  # 12,500 objects
    cpu_seconds = (1_000_000 * 0.1 + packs * 1.0) / 1.0 / 1000
    busy_seconds = 1_000_000 * (2 + 30) / 1000 + cpu_seconds  # each request waits one write
    instance_seconds = max(busy_seconds / 80, cpu_seconds)  # 401.4 s: the waits overlap
    vcpu, memory, writes, listings, reads, egress = costs(document)[3:9]
    assert vcpu == pytest.approx(instance_seconds * 1.0 * 0.000024)
    assert memory == pytest.approx(instance_seconds * (256e6 / GIB) * 0.0000025)
    assert writes == pytest.approx(packs * 0.005 / 1000)
    assert listings == pytest.approx(math.ceil(packs / 1000) * 0.005 / 1000)
    assert reads == pytest.approx(packs * 0.0004 / 1000)
    assert egress == pytest.approx((1_000_000 * 40 + packs * 400) / GIB * 0.12)
    assert document["objects_written"] == 12_500


def test_gcp_concurrency_cannot_beat_the_cpu(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 80 requests at once, one object per task: the waits overlap 80-fold...
    document = run_json(capsys, "gcp", "--tasks", "1000000", "--concurrency", "80")
    busy_seconds = 1_000_000 * (2 + 30 + 1.1) / 1000  # 33,100 s of requests
    cpu_seconds = 1_000_000 * (0.1 + 1.0) / 1000  # 1,100 s of CPU at 1 vCPU
    # THEN the instance is billed for its CPU, not 33,100 / 80 = 414 s
    assert busy_seconds / 80 < cpu_seconds
    assert costs(document)[3] == pytest.approx(cpu_seconds * 1.0 * 0.000024)


# --- Azure: Service Bus -> Flex Consumption (2,048 MB, 16 at once) -> Blob ---------------------


def test_azure_per_task_bill_by_hand(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = run_json(capsys, "azure", "--tasks", "1000000")
    operation = 0.80 / MILLION
    busy_seconds = 1_000_000 * (2 + (0.1 + 1.0) / 1.0 + 30) / 1000  # 1 vCPU at 2,048 MB
    instance_seconds = max(busy_seconds / 16, 1_000_000 * 1.1 / 1000)
    expected = [
        2_000 * operation,  # sends: batches of 500 (500 x 116 bytes < 64 KB: one operation)
        1_000_000 * operation,  # receives: one message per execution
        1_000_000 * operation,  # completes
        1_000_000 * 0.40 / MILLION,  # executions
        instance_seconds * (2048 / 1024) * 0.000026,  # GB-s
        1_000_000 * 0.065 / 10_000,  # Blob writes, hot
        200 * 0.065 / 10_000,  # fetch: listings of 5,000
        1_000_000 * 0.005 / 10_000,  # fetch: reads
        1_000_000 * (3 + 400) / 1e9 * 0.087,
        1_000_000 * (600 + 800) / 1e9 * 2.30,  # trace row + request row, GB = 10^9 bytes
    ]
    assert costs(document) == pytest.approx(expected, rel=1e-9)
    assert document["total_usd"] == pytest.approx(12.3655, abs=1e-4)


def test_azure_packed_bill_by_hand(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the packed layout: batches of 1,000 (the stack's default), one batch at a time
    document = run_json(capsys, "azure", "--tasks", "1000000", "--layout", "packed")
    operation = 0.80 / MILLION
    executions = 1_000
    cpu_seconds = (1_000_000 * 0.1 + executions * 1.0) / 1.0 / 1000  # 101 s
    instance_seconds = executions * (2 + 30) / 1000 + cpu_seconds  # nothing overlaps: 133 s
    expected = [
        2_000 * operation,
        executions * 2 * operation,  # 1,000 x 116 bytes = 2 units of 64 KB per receive
        1_000_000 * operation,  # each message is still completed
        executions * 0.40 / MILLION,
        instance_seconds * 2 * 0.000026,
        executions * 0.065 / 10_000,
        1 * 0.065 / 10_000,
        executions * 0.005 / 10_000,
        (1_000_000 * 40 + executions * 400) / 1e9 * 0.087,
        (1_000_000 * 600 + executions * 800) / 1e9 * 2.30,
    ]
    assert costs(document) == pytest.approx(expected, rel=1e-9)
    # THEN per_task is quoted beside it, with its one message per execution
    assert document["other_layout"]["total_usd"] == pytest.approx(12.3655, abs=1e-4)


def test_a_pack_of_one_task_is_flagged_as_no_saving() -> None:
    workload = Workload(tasks=100, layout="packed", batch_size=1, vcpu=1.0)
    assert any("saves nothing" in note for note in estimate("gcp", workload).notes)


# --- the command line -------------------------------------------------------------------------


def test_the_table_has_every_line_a_total_and_the_other_layout(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estimate", "aws", "--tasks", "1,000,000"]) == 0
    out = capsys.readouterr().out
    for text in (
        "line item",
        "S3 PUT (1 per task)",
        "$0.005 / 1,000 requests",
        "CloudWatch Logs ingestion",
        "total",
        "per 1M tasks",
        "$5.807",
        "the packed layout: $0.8948",
        f"list prices of {PRICES_DATE}, us-east-1; free tiers not subtracted",
    ):
        assert text in out, text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "-1"], "--tasks '-1': must be a whole number of 1 or more"),
        (["--tasks", "0"], "must be a whole number of 1 or more"),
        (["--tasks", "many"], "must be a whole number of 1 or more"),
        ([], "needs the number of tasks: give --tasks N, --tasks-file FILE or --job NAME"),
        (["--tasks", "5", "--tasks-file", "t.jsonl"], "takes the tasks one way"),
        (["--tasks", "5", "--layout", "sideways"], "--layout 'sideways'"),
        (["--tasks", "5", "--batch-size", "0"], "--batch-size '0' (from --batch-size)"),
        (["--tasks", "5", "--memory-mb", "lots"], "--memory-mb 'lots'"),
        (["--tasks", "5", "--write-ms", "-3"], "--write-ms '-3'"),
        (["--tasks-file", "missing.jsonl"], "tasks file not found: missing.jsonl"),
        (["--job", "nope"], "no job 'nope'"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["estimate", "aws", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err


def test_a_tasks_file_gives_the_count_and_the_size(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        '{"id": "a", "data": {"num1": 1, "num2": 2}}',
        '{"id": "b", "data": {"num1": 10, "num2": 20}}',
        "not json at all",  # a bad task still travels through the queue
    ]
    (elsewhere / "tasks.jsonl").write_text("\n".join(lines) + "\n\n")
    document = run_json(capsys, "gcp", "--tasks-file", "tasks.jsonl")
    assert document["tasks"] == 3
    assert document["workload"]["task_bytes"] == pytest.approx(sum(map(len, lines)) / 3)


def test_a_job_manifest_gives_the_count_and_the_cloud(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a job submitted to Azure that sent 3 tasks
    manifest = Manifest.create(jobs_dir(), "j1", "azure", {"queue": "q"}, "t.jsonl")
    manifest.record_sent(["a", "b", "c"])
    manifest.finish(read=3, sent=3, failed=0)
    # WHEN it is estimated without naming the cloud
    document = run_json(capsys, "--job", "j1")
    assert (document["cloud"], document["tasks"]) == ("azure", 3)
    # and a cloud it was not submitted to is refused in one line
    assert main(["estimate", "aws", "--job", "j1"]) == 2
    assert "was submitted to azure, not aws" in capsys.readouterr().err


# --- the stack's settings ---------------------------------------------------------------------


@pytest.fixture
def terraform() -> None:
    require_terraform()


def settings_of(document: dict[str, Any]) -> dict[str, Any]:
    return {name: setting["value"] for name, setting in document["settings"].items()}


def test_aws_reads_batch_memory_and_layout_from_the_stack(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], terraform: None
) -> None:
    # GIVEN a stack whose outputs say batches of 100, 512 MB, packed
    stack = write_state(
        elsewhere / "stack",
        {"batch_size": "100", "lambda_memory_size": "512", "results_layout": "packed"},
    )
    document = run_json(capsys, "aws", "--tasks", "1000000", "--stack", str(stack))
    assert settings_of(document) | {"layout": document["workload"]["layout"]} == {
        "layout": "packed",
        "batch_size": 100,
        "memory_mb": 512,
        "task_ms": 0.1,
        "write_ms": 30,
        "vcpu": pytest.approx(512 / 1769),
    }
    assert document["settings"]["batch_size"]["from"] == f"stack {stack}"
    assert document["objects_written"] == 10_000
    # THEN a flag still wins over the stack
    flagged = run_json(
        capsys, "aws", "--tasks", "1000000", "--stack", str(stack), "--batch-size", "10"
    )
    assert flagged["objects_written"] == 100_000
    assert flagged["settings"]["batch_size"]["from"] == "--batch-size"


def test_aws_reads_the_repos_stack_by_default(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], terraform: None
) -> None:
    write_state(elsewhere / "infra" / "aws", {"batch_size": "1000", "results_layout": "packed"})
    document = run_json(capsys, "aws", "--tasks", "1000000")
    assert document["invocations"] == 1_000 and document["workload"]["layout"] == "packed"


def test_gcp_reads_memory_concurrency_and_layout_from_the_stack(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], terraform: None
) -> None:
    stack = write_state(
        elsewhere / "stack",
        {"function_memory": "512M", "request_concurrency": "80", "results_layout": "packed"},
    )
    document = run_json(capsys, "gcp", "--tasks", "1000000", "--stack", str(stack))
    workload = document["workload"]
    assert workload["memory_mb"] == pytest.approx(512e6 / 2**20)  # M: 10^6 bytes
    assert (workload["concurrency"], workload["layout"]) == (80, "packed")
    assert workload["vcpu"] == 1.0  # 512M alone gets 0.333 vCPU; 80 at once need 1
    assert document["objects_written"] == 12_500  # packs of 80
    # with one request at a time and no CPU given, the CPU is Cloud Run's for the memory
    stack = write_state(elsewhere / "one", {"function_memory": "512M", "request_concurrency": "1"})
    document = run_json(capsys, "gcp", "--tasks", "10", "--stack", str(stack))
    assert document["workload"]["vcpu"] == 0.333
    # a function_cpu output, when the stack has one, is taken as it is
    stack = write_state(elsewhere / "cpu", {"function_cpu": "2", "request_concurrency": "8"})
    document = run_json(capsys, "gcp", "--tasks", "10", "--stack", str(stack))
    assert document["workload"]["vcpu"] == 2.0


def test_azure_reads_memory_and_batch_from_the_stack(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], terraform: None
) -> None:
    stack = write_state(
        elsewhere / "stack", {"instance_memory_in_mb": "4096", "max_message_batch_size": "50"}
    )
    document = run_json(capsys, "azure", "--tasks", "1000000", "--stack", str(stack))
    # per_task (no results_layout output): one message per execution, whatever the batch size
    assert (document["workload"]["layout"], document["invocations"]) == ("per_task", 1_000_000)
    assert (document["workload"]["memory_mb"], document["workload"]["vcpu"]) == (4096, 2.0)
    packed = run_json(
        capsys, "azure", "--tasks", "1000000", "--stack", str(stack), "--layout", "packed"
    )
    assert packed["invocations"] == packed["objects_written"] == 20_000  # batches of 50


# --- the constants agree with the code they describe -----------------------------------------


def test_the_submit_batches_are_the_backends_batches() -> None:
    from aws_lambda.job_backend import AwsJobBackend
    from azure_function.job_backend import AzureJobBackend
    from gcp_function.job_backend import GcpJobBackend

    assert {
        "aws": AwsJobBackend.max_batch_messages,
        "gcp": GcpJobBackend.max_batch_messages,
        "azure": AzureJobBackend.max_batch_messages,
    } == SUBMIT_BATCH


def test_the_aws_write_pool_is_the_handlers() -> None:
    from aws_lambda.handler import DEFAULT_MAX_CONCURRENCY

    assert WRITE_THREADS["aws"] == DEFAULT_MAX_CONCURRENCY
    assert LIST_PAGE == {"aws": 1000, "gcp": 1000, "azure": 5000}


def test_every_price_names_its_source_and_unit() -> None:
    assert PRICES_DATE == "2026-12-01"
    for key, price in PRICES.items():
        assert price.source.startswith("https://"), key
        assert price.usd > 0 and price.per in {1, 1_000, 10_000, 1_000_000}, key
        data = price.unit in {"GB", "GiB", "TiB"}
        assert bool(price.unit_bytes) == data, key


# --- the README's Cost section -----------------------------------------------------------------

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
COST_ROW = re.compile(r"^\| `(adder estimate [^`]+)` \| \$([0-9.,]+) \| \$([0-9.,]+) \|", re.M)


def cost_rows() -> list[tuple[str, str, str]]:
    section = README[README.index("## Cost") :]
    section = section[: section.index("\n## ", 1)]
    return COST_ROW.findall(section)


def test_the_readme_cost_table_has_every_cloud() -> None:
    clouds = {shlex.split(command)[2] for command, _, _ in cost_rows()}
    assert clouds == {"aws", "gcp", "azure"}


@pytest.mark.parametrize("row", cost_rows(), ids=lambda row: row[0])
def test_the_readme_cost_table_is_what_the_command_prints(
    row: tuple[str, str, str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a row of the README: the command, then per 1M tasks per_task and packed
    command, per_task, packed = row
    document = run_json(capsys, *shlex.split(command)[2:])
    figures = {
        document["workload"]["layout"]: document["per_million_tasks_usd"],
        document["other_layout"]["layout"]: document["other_layout"]["per_million_tasks_usd"],
    }
    # THEN the README shows what the command computes today, to the cent
    assert f"{figures['per_task']:,.2f}" == per_task
    assert f"{figures['packed']:,.2f}" == packed
