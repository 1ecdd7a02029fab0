"""infra/aws for real: terraform apply against a moto server, then the deployed zip's handler
processes tasks submitted to the queue the stack created, then terraform destroy. Variables
that need no server (validation, planned outputs) are checked with an offline plan. The
``worker_cloud_config`` output is read by the worker's own loader, planned (known whole with a
named bucket) and applied (the AWS binding opens the deployed queue and bucket with it)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from aws_lambda.sandbox import moto_server
from aws_lambda.sandbox.esm import EventSourceMapping
from aws_lambda.sandbox.runtime import InvocationError, ZipRuntime
from aws_lambda.sandbox.terraform import (
    TerraformError,
    TerraformStack,
    find_terraform,
    write_dummy_lambda_zip,
)
from aws_lambda.sqs_receiver import open_worker
from core.cli import main as adder
from core.clouds import CLOUDS
from core.packaging import build_package
from core.packing import PACK_CONTENT_TYPE, ResultsLayout, unpack
from core.worker.command import load_worker_config
from tests.conftest import REPO_ROOT
from tests.support.tools import require
from tools.servers import free_port, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.infra, pytest.mark.integration]

REGION = "us-east-1"
TEST_VARS = {
    "region": REGION,
    "name": "adder-e2e",
    "results_prefix": "results",
    "function_timeout_seconds": 1,
    "max_receive_count": 2,
    "force_destroy": True,
    # moto would otherwise try to run the function in Docker on every send (see README)
    "event_source_mapping_enabled": False,
}


class Deployed:
    """The applied stack: its outputs, the moto endpoint and clients on it."""

    def __init__(self, stack: TerraformStack, endpoint: str, zip_path: Path) -> None:
        self.stack = stack
        self.endpoint = endpoint
        self.zip_path = zip_path
        self.outputs: dict[str, Any] = stack.output()
        session = boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
        )
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.s3 = session.client("s3", endpoint_url=endpoint)
        self.lambda_ = session.client("lambda", endpoint_url=endpoint)
        self.iam = session.client("iam", endpoint_url=endpoint)
        self.logs = session.client("logs", endpoint_url=endpoint)


def test_all_stacks_are_formatted() -> None:
    terraform = find_terraform()
    require(terraform is not None, "terraform is not installed")
    assert terraform is not None
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-no-color", "infra"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"unformatted: {result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def deployed(plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    work = tmp_path_factory.mktemp("aws-stack")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    zip_path = build_package(CLOUDS["aws"], work / "aws_lambda.zip")
    with (
        running_server(
            moto_server.command(port), f"{endpoint}/moto-api/", log=work / "moto.log", cwd=REPO_ROOT
        ),
        TerraformStack.copy_of(
            REPO_ROOT / "infra" / "aws", work / "stack", plugin_dir=plugin_dir
        ) as stack,
    ):
        stack.with_moto_endpoints(endpoint)
        stack.init()
        stack.apply({**TEST_VARS, "lambda_zip_path": str(zip_path)})
        try:
            yield Deployed(stack, endpoint, zip_path)
        finally:
            stack.destroy()


def test_outputs_name_what_a_user_needs(deployed: Deployed) -> None:
    outputs = deployed.outputs
    for name in (
        "queue_url",
        "dead_letter_queue_url",
        "results_bucket",
        "results_prefix",
        "function_name",
    ):
        assert outputs[name], name
    assert outputs["results_prefix"] == "results"
    # AND what `adder estimate` prices: the layout, the batch size and the memory
    assert (outputs["results_layout"], outputs["batch_size"], outputs["lambda_memory_size"]) == (
        "per_task",
        10,
        256,
    )


def test_queue_has_encryption_dlq_and_derived_visibility_timeout(deployed: Deployed) -> None:
    attributes = deployed.sqs.get_queue_attributes(
        QueueUrl=deployed.outputs["queue_url"], AttributeNames=["All"]
    )["Attributes"]
    dlq_arn = deployed.sqs.get_queue_attributes(
        QueueUrl=deployed.outputs["dead_letter_queue_url"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert attributes["VisibilityTimeout"] == str(6 * TEST_VARS["function_timeout_seconds"])  # type: ignore[operator]
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": 2,
    }
    assert attributes["SqsManagedSseEnabled"] == "true"


def test_bucket_is_encrypted_private_and_owner_enforced(deployed: Deployed) -> None:
    bucket = deployed.outputs["results_bucket"]
    rules = deployed.s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = deployed.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    ownership = deployed.s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
    assert ownership["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_function_runs_the_packaged_zip_with_the_right_settings(deployed: Deployed) -> None:
    config = deployed.lambda_.get_function_configuration(
        FunctionName=deployed.outputs["function_name"]
    )
    assert config["Handler"] == "aws_lambda.handler.lambda_handler"
    assert config["Runtime"] == "python3.13"
    assert config["Architectures"] == ["arm64"]
    assert config["Environment"]["Variables"] == {
        "RESULTS_BUCKET": deployed.outputs["results_bucket"],
        "RESULTS_PREFIX": "results",
        "RESULTS_LAYOUT": "per_task",
    }
    digest = base64.b64encode(hashlib.sha256(deployed.zip_path.read_bytes()).digest()).decode()
    assert config["CodeSha256"] == digest
    (mapping,) = deployed.lambda_.list_event_source_mappings(
        EventSourceArn=deployed.outputs["queue_arn"]
    )["EventSourceMappings"]
    assert mapping["FunctionArn"] == config["FunctionArn"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10


def test_role_is_least_privilege(deployed: Deployed) -> None:
    function = deployed.lambda_.get_function_configuration(
        FunctionName=deployed.outputs["function_name"]
    )
    role_name = function["Role"].rsplit("/", 1)[1]
    (policy_name,) = deployed.iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    document = deployed.iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)[
        "PolicyDocument"
    ]
    statements = {s["Sid"]: s for s in document["Statement"]}
    queue_arn = deployed.outputs["queue_arn"]
    bucket = deployed.outputs["results_bucket"]

    def listed(value: str | list[str]) -> list[str]:
        return sorted([value] if isinstance(value, str) else value)

    assert listed(statements["ConsumeTaskQueue"]["Action"]) == [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert listed(statements["ConsumeTaskQueue"]["Resource"]) == [queue_arn]
    assert listed(statements["WriteResults"]["Action"]) == ["s3:PutObject"]
    assert listed(statements["WriteResults"]["Resource"]) == [f"arn:aws:s3:::{bucket}/results/*"]
    assert all(
        resource.endswith(":*") and "/aws/lambda/adder-e2e-worker" in resource
        for resource in listed(statements["WriteOwnLogs"]["Resource"])
    )
    for statement in document["Statement"]:
        assert "*" not in listed(statement["Action"])
        assert "*" not in listed(statement["Resource"])


def test_log_group_keeps_logs_for_the_retention_period(deployed: Deployed) -> None:
    groups = deployed.logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/adder-e2e-worker")
    (group,) = groups["logGroups"]
    assert group["retentionInDays"] > 0


def test_tasks_submitted_to_the_deployed_queue_end_as_results_errors_or_dead_letters(
    deployed: Deployed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the deployed zip running in its own interpreter with the function's environment
    outputs = deployed.outputs
    config = deployed.lambda_.get_function_configuration(FunctionName=outputs["function_name"])
    env = {
        **config["Environment"]["Variables"],
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": deployed.endpoint,
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")  # for the submit command run in this process
    runtime = ZipRuntime(deployed.zip_path, config["Handler"], tmp_path, env)
    assert runtime.code_dir in runtime.core_file.parents  # core came from the zip, not the repo
    tasks = tmp_path / "tasks.jsonl"
    good = [{"id": f"t{i}", "data": {"num1": i, "num2": 10**30}} for i in range(50)]
    tasks.write_text("".join(json.dumps(t) + "\n" for t in good) + "not json\n")
    try:
        # WHEN tasks are submitted with the CLI, its settings read from the applied stack's
        # outputs, and delivered like the event source mapping
        code = adder(
            [
                "submit",
                "aws",
                "--stack",
                str(deployed.stack.work_dir),
                "--endpoint-url",
                deployed.endpoint,
                "--no-progress",
                str(tasks),
            ]
        )
        assert code == 0
        mapping = EventSourceMapping(
            deployed.sqs,
            outputs["queue_url"],
            lambda event, context: runtime.invoke(event, context.get_remaining_time_in_millis()),
        )
        mapping.drain(timeout=120)
    finally:
        runtime.close()
    # THEN each result is exact and the bad task has its error record, under the prefix
    bucket = outputs["results_bucket"]
    for task in good:
        body = deployed.s3.get_object(Bucket=bucket, Key=f"results/{task['id']}.out")["Body"].read()
        assert body == str(task["data"]["num1"] + 10**30).encode()  # type: ignore[index]
    keys = [o["Key"] for o in deployed.s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 51 and all(k.startswith("results/") for k in keys)
    assert sum(k.endswith(".err") for k in keys) == 1
    assert "sent 51 tasks" in capsys.readouterr().out
    # AND watch accounts for every task (one rejected: exit 1), and fetch brings back exactly
    # the files the local runner writes for the same tasks
    job = ["--job", "tasks", "--endpoint-url", deployed.endpoint, "--no-progress"]
    assert adder(["watch", "aws", *job, "--interval", "0.2", "--timeout", "60"]) == 1
    assert "50 succeeded, 1 rejected" in capsys.readouterr().out
    assert adder(["fetch", "aws", *job, "--into", str(tmp_path / "fetched")]) == 0
    assert (
        adder(
            [
                "run",
                "--tasks",
                str(tasks),
                "--results-dir",
                str(tmp_path / "local"),
                "--no-progress",
            ]
        )
        == 1
    )
    local = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()}
    fetched = {p.name: p.read_bytes() for p in (tmp_path / "fetched").iterdir()}
    assert fetched == local and len(fetched) == 51


def test_a_task_whose_write_always_fails_ends_in_the_dead_letter_queue(
    deployed: Deployed, tmp_path: Path
) -> None:
    # GIVEN the deployed zip pointed at a bucket that does not exist (every write fails)
    outputs = deployed.outputs
    env = {
        "RESULTS_BUCKET": "no-such-bucket-for-adder",
        "RESULTS_PREFIX": "results",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": deployed.endpoint,
    }
    runtime = ZipRuntime(deployed.zip_path, "aws_lambda.handler.lambda_handler", tmp_path, env)
    body = '{"id": "doomed", "data": {"num1": 1, "num2": 2}}'
    deployed.sqs.send_message(QueueUrl=outputs["queue_url"], MessageBody=body)
    try:
        # WHEN it is delivered until the redrive policy gives up
        mapping = EventSourceMapping(
            deployed.sqs,
            outputs["queue_url"],
            lambda event, context: runtime.invoke(event, context.get_remaining_time_in_millis()),
        )
        stats = mapping.drain(timeout=120)
    finally:
        runtime.close()
    # THEN it was retried max_receive_count times and now waits in the DLQ
    assert stats.retried == TEST_VARS["max_receive_count"]
    got = deployed.sqs.receive_message(QueueUrl=outputs["dead_letter_queue_url"], WaitTimeSeconds=1)
    assert [m["Body"] for m in got["Messages"]] == [body]


def test_invocation_errors_surface(deployed: Deployed, tmp_path: Path) -> None:
    # A handler crash must fail the invocation (so Lambda retries the batch), not vanish.
    runtime = ZipRuntime(
        deployed.zip_path,
        "aws_lambda.handler.lambda_handler",
        tmp_path,
        {
            "RESULTS_BUCKET": "",
            "AWS_ENDPOINT_URL": deployed.endpoint,
        },
    )
    try:
        with pytest.raises(InvocationError, match="RESULTS_BUCKET is not set"):
            runtime.invoke({"Records": [{"messageId": "m", "body": "{}"}]})
    finally:
        runtime.close()


def test_the_worker_cloud_config_output_opens_the_deployed_queue_and_bucket(
    deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the applied stack's worker_cloud_config written to a file (as `terraform output
    # -json worker_cloud_config` prints it), with the moto endpoint added (off the cloud only)
    document = json.loads(json.dumps(deployed.outputs["worker_cloud_config"]))
    document["config"]["endpoint_url"] = deployed.endpoint
    path = tmp_path / "cloud-config.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)  # the region must come from the file
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    # WHEN the worker loads it and opens the AWS binding on it
    config = load_worker_config(path)
    receiver, store = open_worker(config, 1)
    try:
        # THEN it works the stack's queue in the stack's region (its lease the queue's
        # visibility timeout) and writes to the stack's bucket under the prefix, per task
        outputs = deployed.outputs
        assert receiver.queue_url == outputs["queue_url"]
        assert receiver.sqs.meta.region_name == REGION
        assert receiver.lease_seconds == outputs["queue_visibility_timeout_seconds"]
        assert (store.bucket, store.prefix) == (outputs["results_bucket"], "results")
        assert (config.job_id, config.results_layout) == ("adder-e2e", ResultsLayout.PER_TASK)
    finally:
        receiver.close()
        store.client.close()


# --- results_layout -------------------------------------------------------------------------


def function_change(plan: dict[str, Any]) -> dict[str, Any]:
    """The planned change of the worker function."""
    (change,) = [
        c["change"] for c in plan["resource_changes"] if c["address"] == "aws_lambda_function.this"
    ]
    return dict(change)


def test_switching_a_deployed_stack_to_packed_only_updates_the_function_environment(
    deployed: Deployed,
) -> None:
    # GIVEN the applied stack (per_task) / WHEN it is planned with results_layout = "packed"
    plan = deployed.stack.plan_json(
        {**TEST_VARS, "lambda_zip_path": str(deployed.zip_path), "results_layout": "packed"}
    )
    # THEN the function is updated in place, RESULTS_LAYOUT going from per_task to packed
    change = function_change(plan)
    assert change["actions"] == ["update"]
    [before] = change["before"]["environment"]
    [after] = change["after"]["environment"]
    assert (before["variables"]["RESULTS_LAYOUT"], after["variables"]["RESULTS_LAYOUT"]) == (
        "per_task",
        "packed",
    )
    assert {k: v for k, v in after["variables"].items() if k != "RESULTS_LAYOUT"} == {
        "RESULTS_BUCKET": deployed.outputs["results_bucket"],
        "RESULTS_PREFIX": "results",
    }
    # AND nothing is replaced or destroyed (the bucket and the queues keep their contents)
    assert all("delete" not in c["change"]["actions"] for c in plan["resource_changes"])
    assert plan["planned_values"]["outputs"]["results_layout"]["value"] == "packed"


def test_the_deployed_zip_in_the_packed_layout_writes_one_pack_per_batch(
    deployed: Deployed, tmp_path: Path
) -> None:
    # GIVEN the deployed zip with the function's environment and RESULTS_LAYOUT=packed
    outputs = deployed.outputs
    config = deployed.lambda_.get_function_configuration(FunctionName=outputs["function_name"])
    env = {
        **config["Environment"]["Variables"],
        "RESULTS_LAYOUT": "packed",
        "RESULTS_PREFIX": "packed-zip",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": deployed.endpoint,
    }
    bodies = [json.dumps({"id": f"z{i}", "data": {"num1": i, "num2": 0.5}}) for i in range(9)]
    event = {"Records": [{"messageId": f"m{i}", "body": b} for i, b in enumerate(bodies)]}
    runtime = ZipRuntime(deployed.zip_path, config["Handler"], tmp_path, env)
    try:
        # WHEN it is invoked with a batch of 9 good tasks and one bad one
        event["Records"].append({"messageId": "m-bad", "body": "not json"})
        response = runtime.invoke(event)
    finally:
        runtime.close()
    # THEN nothing is retried, and one object under packed-zip/packed/ holds all 10 records
    assert response == {"batchItemFailures": []}
    bucket = outputs["results_bucket"]
    listed = deployed.s3.list_objects_v2(Bucket=bucket, Prefix="packed-zip/")["Contents"]
    [key] = [item["Key"] for item in listed]
    assert key.startswith("packed-zip/packed/") and key.endswith(".jsonl")
    got = deployed.s3.get_object(Bucket=bucket, Key=key)
    assert got["ContentType"] == PACK_CONTENT_TYPE
    records = {record.file_name: record.content for record in unpack(got["Body"].read())}
    assert {name: records[name] for name in records if name.endswith(".out")} == {
        f"z{i}.out": f"{i + 0.5}".encode() for i in range(9)
    }
    assert sum(name.endswith(".err") for name in records) == 1


@pytest.fixture(scope="module")
def offline_stack(
    plugin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TerraformStack, dict[str, Any]]]:
    """A copy of infra/aws, initialised from the mirror, its provider pointed at a closed port:
    a plan of a new stack calls no AWS API, so none is needed. Yields it and the base vars."""
    work = tmp_path_factory.mktemp("aws-plan")
    zip_path = write_dummy_lambda_zip(work / "dummy.zip")
    with TerraformStack.copy_of(
        REPO_ROOT / "infra" / "aws", work / "stack", plugin_dir=plugin_dir
    ) as stack:
        stack.with_moto_endpoints(f"http://127.0.0.1:{free_port()}")
        stack.init()
        yield stack, {"region": REGION, "lambda_zip_path": str(zip_path)}


def test_an_unknown_results_layout_is_refused_by_the_variable_validation(
    offline_stack: tuple[TerraformStack, dict[str, Any]],
) -> None:
    stack, base = offline_stack
    # WHEN the stack is planned with a layout that is neither per_task nor packed
    with pytest.raises(TerraformError) as raised:
        stack.plan_json({**base, "results_layout": "zip"})
    # THEN terraform refuses the variable, saying which values it takes
    message = raised.value.stderr
    assert "Invalid value for variable" in message
    assert 'The results_layout must be "per_task" or "packed".' in message


def test_packed_with_a_batching_window_plans_big_batches_within_the_sqs_rules(
    offline_stack: tuple[TerraformStack, dict[str, Any]],
) -> None:
    stack, base = offline_stack
    # GIVEN packed results with 1,000-message batches gathered for up to 5 s
    packed = {
        **base,
        "results_layout": "packed",
        "batch_size": 1000,
        "maximum_batching_window_in_seconds": 5,
    }
    # WHEN it is planned
    plan = stack.plan_json(packed)
    # THEN the outputs `adder estimate` reads say so (the function's environment is checked
    # on the deployed stack: offline, its bucket name is not known yet)
    planned = plan["planned_values"]["outputs"]
    outputs = {name: value.get("value") for name, value in planned.items()}
    assert (outputs["results_layout"], outputs["batch_size"], outputs["lambda_memory_size"]) == (
        "packed",
        1000,
        256,
    )
    # AND the visibility timeout still covers 6 function timeouts plus the window
    assert outputs["queue_visibility_timeout_seconds"] == 6 * 30 + 5
    # AND a batch above 10 without a window is still refused (SQS needs one >= 1 s)
    with pytest.raises(TerraformError) as raised:
        stack.plan_json({**packed, "maximum_batching_window_in_seconds": 0})
    assert "A batch_size above 10 requires maximum_batching_window_in_seconds >= 1." in (
        raised.value.stderr
    )


def _planned_resources(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources = plan["planned_values"]["root_module"].get("resources", [])
    return {resource["address"]: resource["values"] for resource in resources}


def test_the_worker_role_is_planned_only_when_asked_and_is_least_privilege(
    offline_stack: tuple[TerraformStack, dict[str, Any]],
) -> None:
    stack, base = offline_stack
    # GIVEN the default stack / WHEN planned / THEN no worker role or instance profile
    assert not [
        address
        for address in _planned_resources(stack.plan_json(base))
        if "worker" in address and "aws_iam" in address
    ]
    # WHEN planned with the worker role
    planned = _planned_resources(stack.plan_json({**base, "create_worker_role": True}))
    # THEN EC2 and ECS tasks may assume it, it has an instance profile, and its one policy
    # grants exactly what `adder work` calls: the task queue's five actions and PutObject
    role = planned["aws_iam_role.worker[0]"]
    trust = json.loads(role["assume_role_policy"])
    (statement,) = trust["Statement"]
    assert sorted(statement["Principal"]["Service"]) == [
        "ec2.amazonaws.com",
        "ecs-tasks.amazonaws.com",
    ]
    assert planned["aws_iam_instance_profile.worker[0]"]["name"] == "adder-queue-worker"
    assert "aws_iam_role_policy.worker[0]" in planned
    # (the document names ARNs known only after apply: its actions are read from the config)
    plan = stack.plan_json({**base, "create_worker_role": True})
    configured = {
        resource["address"]: resource
        for resource in plan["configuration"]["root_module"]["resources"]
    }
    statements = configured["data.aws_iam_policy_document.worker"]["expressions"]["statement"]
    actions = sorted(
        action
        for statement in statements
        for action in statement.get("actions", {}).get("constant_value", [])
    )
    assert actions == [
        "s3:PutObject",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
    ]
    # AND an unknown service is refused by the variable's validation
    with pytest.raises(TerraformError) as raised:
        stack.plan_json(
            {
                **base,
                "create_worker_role": True,
                "worker_trusted_services": ["lambda.amazonaws.com"],
            }
        )
    assert "worker_trusted_services" in raised.value.stderr


ASG_SID = "CompleteTerminationLifecycleAction"
SPOT_GROUPS_ARN = (
    "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:*"
    ":autoScalingGroupName/adder-spot-*"
)


def _worker_statements(plan: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The worker policy document's statements as planned (unknown values are None)."""
    (change,) = [
        c["change"]
        for c in plan["resource_changes"]
        if c["address"] == "data.aws_iam_policy_document.worker[0]"
    ]
    return tuple(change["after"]["statement"])


def test_the_worker_role_completes_lifecycle_actions_only_of_the_groups_it_is_given(
    offline_stack: tuple[TerraformStack, dict[str, Any]],
) -> None:
    stack, base = offline_stack
    worker = {**base, "create_worker_role": True}
    # GIVEN the worker role without Auto Scaling groups / WHEN planned / THEN no Auto Scaling
    # action at all
    statements = _worker_statements(stack.plan_json(worker))
    assert [s["sid"] for s in statements] == ["WorkTaskQueue", "WriteResults"]
    assert not [a for s in statements for a in s["actions"] if a.startswith("autoscaling:")]
    # WHEN planned with a group name and an ARN pattern
    plan = stack.plan_json(
        {**worker, "worker_autoscaling_groups": ["adder-workers", SPOT_GROUPS_ARN]}
    )
    # THEN one statement per group allows only CompleteLifecycleAction, on that group only:
    # the ARN as given, the name's ARN known after apply (its account is the queue's)
    added = [s for s in _worker_statements(plan) if s["sid"].startswith(ASG_SID)]
    assert [s["sid"] for s in added] == [f"{ASG_SID}0", f"{ASG_SID}1"]
    assert [s["actions"] for s in added] == [["autoscaling:CompleteLifecycleAction"]] * 2
    assert [s["resources"] for s in added] == [[None], [SPOT_GROUPS_ARN]]
    # AND what is neither a group name nor an autoScalingGroup ARN is refused
    for wrong in ("arn:aws:s3:::adder-results", "with:colon", "with space", ""):
        with pytest.raises(TerraformError) as raised:
            stack.plan_json({**worker, "worker_autoscaling_groups": [wrong]})
        assert "Each of worker_autoscaling_groups must be" in raised.value.stderr


def test_a_group_name_becomes_the_groups_arn_in_the_stacks_account_and_region(
    deployed: Deployed,
) -> None:
    # GIVEN the applied stack / WHEN planned with the worker role and a group name
    plan = deployed.stack.plan_json(
        {
            **TEST_VARS,
            "lambda_zip_path": str(deployed.zip_path),
            "create_worker_role": True,
            "worker_autoscaling_groups": ["adder-workers", SPOT_GROUPS_ARN],
        }
    )
    # THEN the role's policy allows CompleteLifecycleAction on that group's ARN (any group
    # id: a recreated group keeps its permission) and on the ARN pattern as given
    policy = _planned_resources(plan)["aws_iam_role_policy.worker[0]"]["policy"]
    granted = {
        s["Resource"]: s["Action"]
        for s in json.loads(policy)["Statement"]
        if s["Sid"].startswith(ASG_SID)
    }
    account = deployed.outputs["queue_arn"].split(":")[4]
    group_arn = (
        f"arn:aws:autoscaling:{REGION}:{account}:autoScalingGroup:*"
        ":autoScalingGroupName/adder-workers"
    )
    assert granted == {
        group_arn: "autoscaling:CompleteLifecycleAction",
        SPOT_GROUPS_ARN: "autoscaling:CompleteLifecycleAction",
    }


def test_the_planned_worker_cloud_config_is_the_file_adder_work_reads(
    offline_stack: tuple[TerraformStack, dict[str, Any]], tmp_path: Path
) -> None:
    stack, base = offline_stack
    # GIVEN the stack with its own name, region, named bucket, prefix and packed layout
    values = {
        **base,
        "region": "eu-west-3",
        "name": "adder-vm",
        "results_bucket_name": "adder-vm-results-1",
        "results_prefix": "jobs/one",
        "results_layout": "packed",
    }
    # WHEN it is planned
    planned = stack.plan_json(values)["planned_values"]["outputs"]
    # THEN worker_cloud_config is known whole before apply, and written to a file (as
    # `terraform output -json worker_cloud_config` prints it) the worker's loader reads it
    assert "worker_cloud_config" in planned, "infra/aws declares no worker_cloud_config output"
    assert "value" in planned["worker_cloud_config"], "worker_cloud_config unknown at plan time"
    path = tmp_path / "cloud-config.json"
    path.write_text(json.dumps(planned["worker_cloud_config"]["value"]), encoding="utf-8")
    config = load_worker_config(path)
    # AND every field is one it reads and is the stack's: no unknown field, the queue the
    # stack creates, the bucket, the prefix, the region and the layout
    assert config.warnings == ()
    assert planned["queue_name"]["value"] == "adder-vm-tasks"
    assert (config.provider, config.job_id, config.queue_name) == (
        "aws",
        "adder-vm",
        "adder-vm-tasks",
    )
    assert (config.result_bucket, config.result_prefix) == ("adder-vm-results-1", "jobs/one")
    assert dict(config.settings) == {"region": "eu-west-3", "results_layout": "packed"}
    assert config.results_layout is ResultsLayout.PACKED


def test_with_a_generated_bucket_name_only_the_result_bucket_waits_for_apply(
    offline_stack: tuple[TerraformStack, dict[str, Any]],
) -> None:
    stack, base = offline_stack
    # GIVEN the default stack (the bucket named "<name>-results-<random>" by AWS) / WHEN planned
    change = stack.plan_json(base)["output_changes"]["worker_cloud_config"]
    # THEN the output's bucket is known after apply only (nothing in its config object is
    # unknown), and all the rest now
    assert change["after_unknown"] == {"result_bucket": True, "config": {}}
    known = {key: item for key, item in change["after"].items() if key != "result_bucket"}
    assert known == {
        "provider": "aws",
        "job_id": "adder",
        "queue_name": "adder-tasks",
        "result_prefix": "results",
        "config": {"region": REGION, "results_layout": "per_task"},
    }
