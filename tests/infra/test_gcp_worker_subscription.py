"""infra/gcp's optional pull subscription and identity for ``adder work``, read from the Terraform
source (no google provider is mirrored here, so the stack is not planned whole:
tests/infra/test_tfschema.py checks it against the provider's schema, tests/infra/test_checkov.py
scans it and tests/reliability/test_security.py checks its grants), and its variables applied
by the real terraform with no provider (their validations run as in a plan).

Checked: everything it adds hangs on ``create_worker_subscription`` (off by default); the
subscription is ``<name>-tasks-worker`` (the worker's default, ``<topic>-worker``) with the
push subscription's dead-letter topic, max deliveries and retry policy, and the Pub/Sub
service agent may dead-letter from it; the worker's service account gets exactly
roles/pubsub.subscriber on that subscription and the results writer role on the results
bucket under the prefix; the outputs are null without it; the example and the README say how
to use it. The ``worker_cloud_config`` output is the worker's config file (null without the
subscription): exactly the keys :func:`core.worker.command.load_worker_config` and the GCP
binding's :func:`~gcp_function.pubsub_receiver.worker_target` read, evaluated by terraform
over stand-ins of the resources it names.

Workers only: ``push_to_function = false`` removes the function's push subscription and the
service agent's grant on it (``moved`` blocks keep existing states' unindexed addresses), its
outputs turn null, and the variable's cross-variable validation refuses it without
``create_worker_subscription`` (a topic with no subscription drops its messages).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from aws_lambda.sandbox.terraform import find_terraform
from core.packing import ResultsLayout
from core.worker.command import load_worker_config
from gcp_function.pubsub_receiver import SUBSCRIPTION_SUFFIX, worker_target
from tests.conftest import REPO_ROOT
from tests.support.hcl import StackSource, value
from tests.support.tools import require
from tools.tfschema.hcl import Block, Body, parse_file

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.infra

STACK = REPO_ROOT / "infra" / "gcp"
HCL = StackSource(STACK)
GATED = "${var.create_worker_subscription ? 1 : 0}"
PUSH_GATED = "${var.push_to_function ? 1 : 0}"
PUSH = "${google_pubsub_subscription.this[0].id}"
SUBSCRIPTION = "${google_pubsub_subscription.worker[0].id}"
WORKER = "${google_service_account.worker[0].member}"
AGENT = "${local.pubsub_service_agent}"
WRITER = "${google_project_iam_custom_role.results_writer.name}"


def shape(block: Block) -> object:
    """A block's labels, attributes and nested blocks, without line numbers."""
    return (
        block.type,
        block.labels,
        {a.name: a.value for a in block.body.attributes},
        [shape(child) for child in block.body.blocks],
    )


def test_everything_for_the_worker_hangs_on_one_variable_off_by_default() -> None:
    # GIVEN the stack's variables / THEN create_worker_subscription is a bool, false by default
    (variable,) = [
        b
        for b in HCL.blocks("variables.tf", "variable")
        if b.labels == ("create_worker_subscription",)
    ]
    assert (value(variable, "type"), value(variable, "default")) == ("bool", False)
    # AND the subscription, the account and every grant naming either exist only when true
    worker = [
        r
        for r in HCL.blocks("main.tf", "resource")
        if r.labels[1] == "worker"
        or any("google_pubsub_subscription.worker" in str(a.value) for a in r.body.attributes)
        or any("google_service_account.worker" in str(a.value) for a in r.body.attributes)
    ]
    assert sorted(r.labels for r in worker) == [
        ("google_pubsub_subscription", "worker"),
        ("google_pubsub_subscription_iam_member", "worker_dead_letter_subscriber"),
        ("google_pubsub_subscription_iam_member", "worker_subscriber"),
        ("google_service_account", "worker"),
        ("google_storage_bucket_iam_member", "worker_results"),
    ]
    assert {value(r, "count") for r in worker} == {GATED}


def test_the_subscription_pulls_the_task_topic_and_dead_letters_like_the_push_one() -> None:
    # GIVEN the worker subscription and the function's push subscription
    worker = HCL.resource("google_pubsub_subscription", "worker")
    push = HCL.resource("google_pubsub_subscription", "this")
    # THEN it is named as the worker looks for it by default, on the task topic, pull only
    assert value(worker, "name") == f'"${{local.topic_name}}{SUBSCRIPTION_SUFFIX}"'
    assert value(worker, "topic") == value(push, "topic") == "${google_pubsub_topic.this.id}"
    assert worker.body.blocks_of("push_config") == []
    assert value(worker, "ack_deadline_seconds") == "${var.worker_ack_deadline_seconds}"
    # AND it has the push subscription's dead-letter and retry policies and never expires
    for block in ("dead_letter_policy", "retry_policy", "expiration_policy"):
        (mine,) = worker.body.blocks_of(block)
        (theirs,) = push.body.blocks_of(block)
        assert shape(mine) == shape(theirs), block
    # AND the Pub/Sub service agent may take dead letters off it (it publishes to the
    # dead-letter topic already, for the push subscription)
    agent = HCL.resource("google_pubsub_subscription_iam_member", "worker_dead_letter_subscriber")
    assert (value(agent, "subscription"), value(agent, "role"), value(agent, "member")) == (
        SUBSCRIPTION,
        '"roles/pubsub.subscriber"',
        AGENT,
    )
    publisher = HCL.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert value(publisher, "topic") == "${google_pubsub_topic.dead_letter.id}"
    assert value(publisher, "member") == AGENT


def test_the_worker_account_may_pull_its_subscription_and_write_results_nothing_more() -> None:
    # GIVEN every IAM grant of the stack
    grants = [
        r
        for r in HCL.blocks("main.tf", "resource")
        if r.labels[0].endswith(("_iam_member", "_iam_binding"))
    ]
    # WHEN those given to the worker's account are picked
    mine = {(r.labels[0], value(r, "role")) for r in grants if value(r, "member") == WORKER}
    assert mine == {
        ("google_pubsub_subscription_iam_member", '"roles/pubsub.subscriber"'),
        (
            "google_storage_bucket_iam_member",
            "${google_project_iam_custom_role.results_writer.name}",
        ),
    }
    # THEN it pulls the worker subscription only...
    subscriber = HCL.resource("google_pubsub_subscription_iam_member", "worker_subscriber")
    assert value(subscriber, "subscription") == SUBSCRIPTION
    # ... and writes in the results bucket under the prefix only, as the function does
    results = HCL.resource("google_storage_bucket_iam_member", "worker_results")
    function = HCL.resource("google_storage_bucket_iam_member", "function_results")
    assert value(results, "bucket") == value(function, "bucket")
    (mine_condition,) = results.body.blocks_of("dynamic")
    (their_condition,) = function.body.blocks_of("dynamic")
    assert mine_condition.labels == their_condition.labels == ("condition",)
    assert shape(mine_condition) == shape(their_condition)
    # AND it is not the function's account (whose grants it does not share)
    account = HCL.resource("google_service_account", "worker")
    assert value(account, "account_id") == '"${var.name}-puller"'
    assert value(HCL.resource("google_service_account", "function"), "account_id") != value(
        account, "account_id"
    )


def test_the_outputs_are_the_subscription_and_the_account_or_null() -> None:
    outputs = {b.labels[0]: b for b in HCL.blocks("outputs.tf", "output")}
    assert value(outputs["worker_subscription"], "value") == (
        "${try(google_pubsub_subscription.worker[0].id, null)}"
    )
    assert value(outputs["worker_service_account"], "value") == (
        "${try(google_service_account.worker[0].email, null)}"
    )


def test_the_example_and_the_readme_show_how_to_use_it() -> None:
    example = (STACK / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert "create_worker_subscription  = false" in example
    assert "worker_ack_deadline_seconds = 60" in example
    assert "# push_to_function = false" in example
    readme = (STACK / "README.md").read_text(encoding="utf-8")
    needed = (
        "create_worker_subscription",
        "worker_subscription",
        "worker_service_account",
        "adder work",
        "Every subscription of a topic gets every message",
        "To run workers only, set `push_to_function = false`",
    )
    for word in needed:
        assert word in readme, word


def attribute_texts(body: Body) -> list[str]:
    """Every attribute value of a body and of its nested blocks, as text."""
    texts = [str(a.value) for a in body.attributes]
    for child in body.blocks:
        texts += attribute_texts(child.body)
    return texts


def test_the_push_subscription_and_its_dead_letter_grant_hang_on_push_to_function() -> None:
    # GIVEN the stack's variables / THEN push_to_function is a bool, true by default, never null
    (variable,) = [
        b for b in HCL.blocks("variables.tf", "variable") if b.labels == ("push_to_function",)
    ]
    assert (value(variable, "type"), value(variable, "default")) == ("bool", True)
    assert value(variable, "nullable") is False
    # AND the push subscription and the service agent's grant on it exist only when true
    push = HCL.resource("google_pubsub_subscription", "this")
    grant = HCL.resource("google_pubsub_subscription_iam_member", "dead_letter_subscriber")
    assert value(push, "count") == value(grant, "count") == PUSH_GATED
    assert value(grant, "subscription") == PUSH
    assert value(push, "name") == '"${local.topic_name}-push"'
    # AND the stack asks for the Terraform whose validations may read another variable (1.9)
    (terraform,) = HCL.blocks("versions.tf", "terraform")
    assert value(terraform, "required_version") == '">= 1.9.0"'
    # AND nothing else hangs on it: the function and its invoker grant stay deployed
    gated = [
        r.labels for r in HCL.blocks("main.tf", "resource") if "var.push_to_function" in str(r)
    ]
    assert sorted(gated) == [
        ("google_pubsub_subscription", "this"),
        ("google_pubsub_subscription_iam_member", "dead_letter_subscriber"),
    ]


def test_existing_states_keep_both_through_moved_blocks_and_every_reference_is_indexed() -> None:
    # GIVEN the moved blocks of main.tf
    moved = {(value(b, "from"), value(b, "to")) for b in HCL.blocks("main.tf", "moved")}
    # THEN the unindexed addresses of the states written before the count move to [0]
    # (no destroy and re-create of the subscription, whose backlog would go with it)
    assert {
        ("${google_pubsub_subscription.this}", "${google_pubsub_subscription.this[0]}"),
        (
            "${google_pubsub_subscription_iam_member.dead_letter_subscriber}",
            "${google_pubsub_subscription_iam_member.dead_letter_subscriber[0]}",
        ),
    } <= moved
    # AND outside the moved blocks no reference uses an address without its index
    unindexed = re.compile(
        r"google_pubsub_subscription\.this(?![\w\[])"
        r"|google_pubsub_subscription_iam_member\.dead_letter_subscriber(?![\w\[])"
    )
    for file in ("main.tf", "outputs.tf", "function_settings.tf"):
        body = parse_file(STACK / file)
        kept = Body(
            attributes=body.attributes, blocks=[b for b in body.blocks if b.type != "moved"]
        )
        found = [t for t in attribute_texts(kept) if unindexed.search(t)]
        assert found == [], file


PROBE = """
output "worker" {
  value = {
    create       = var.create_worker_subscription
    ack_deadline = var.worker_ack_deadline_seconds
    push         = var.push_to_function
  }
}
"""


@pytest.fixture(scope="module")
def variables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack's variables.tf alone (and a probe output), initialised: no provider needed."""
    terraform = find_terraform()
    require(terraform is not None, "terraform is not installed")
    directory = tmp_path_factory.mktemp("gcp-worker-variables")
    shutil.copy(STACK / "variables.tf", directory / "variables.tf")
    (directory / "probe.tf").write_text(PROBE, encoding="utf-8")
    init = terraform_run(directory, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stderr
    return directory


def terraform_run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    terraform = find_terraform()
    assert terraform is not None
    return subprocess.run(
        [terraform, *args, "-no-color"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apply(directory: Path, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    var_file = directory / "case.tfvars.json"
    required = {"project_id": "my-project-1", "region": "europe-west1"}
    var_file.write_text(json.dumps({**required, **values}), encoding="utf-8")
    return terraform_run(
        directory, "apply", "-auto-approve", "-input=false", f"-var-file={var_file.name}"
    )


def test_the_defaults_are_no_worker_and_a_60_second_ack_deadline(variables: Path) -> None:
    # GIVEN only the required variables / WHEN applied
    applied = apply(variables, {})
    assert applied.returncode == 0, applied.stderr
    shown = json.loads(terraform_run(variables, "output", "-json").stdout)
    # THEN no worker is created, and its subscription's deadline would be 60 s; the function
    # gets its push subscription
    assert shown["worker"]["value"] == {"create": False, "ack_deadline": 60, "push": True}


@pytest.mark.parametrize("deadline", [9, 601, 30.5])
def test_an_ack_deadline_pub_sub_refuses_is_refused_at_plan_time(
    variables: Path, deadline: float
) -> None:
    # GIVEN a worker ack deadline outside 10-600 s, or not whole / WHEN applied
    values = {"create_worker_subscription": True, "worker_ack_deadline_seconds": deadline}
    applied = apply(variables, values)
    # THEN terraform refuses it with the variable's own message
    assert applied.returncode != 0
    assert "worker_ack_deadline_seconds must be a whole number between 10 and 600" in " ".join(
        applied.stderr.split()
    )


@pytest.mark.parametrize(
    ("push", "worker"),
    [(True, False), (True, True), (False, True)],
    ids=["function-only", "both", "workers-only"],
)
def test_every_combination_that_leaves_a_subscription_is_accepted(
    variables: Path, push: bool, worker: bool
) -> None:
    # GIVEN the function's push subscription, the worker's, or both / WHEN applied
    applied = apply(variables, {"push_to_function": push, "create_worker_subscription": worker})
    # THEN terraform accepts it as given
    assert applied.returncode == 0, applied.stderr
    shown = json.loads(terraform_run(variables, "output", "-json").stdout)["worker"]["value"]
    assert (shown["push"], shown["create"]) == (push, worker)


def test_no_push_and_no_worker_subscription_is_refused_at_plan_time(variables: Path) -> None:
    # GIVEN push_to_function = false without the worker subscription (a topic with no
    # subscription drops what is published to it) / WHEN applied
    applied = apply(variables, {"push_to_function": False})
    # THEN terraform refuses it, saying what else to set
    assert applied.returncode != 0
    assert (
        "Setting push_to_function = false needs create_worker_subscription = true: a topic with"
        " no subscription drops every task published to it"
    ) in " ".join(applied.stderr.split())


OUTPUTS_PROBE = """
locals {{
  # Stand-in for google_pubsub_subscription.this: as many as its count in main.tf
  push_subscriptions = [
    for index in range({count}) : {{
      id                   = "projects/my-project-1/subscriptions/adder-tasks-push"
      ack_deadline_seconds = 90
    }}
  ]
}}

output "push" {{
  value = {{
    task_subscription    = {task_subscription}
    ack_deadline_seconds = {ack_deadline_seconds}
  }}
}}
"""


def expression(text: object) -> str:
    """The expression of a serialized ``${...}`` value."""
    assert isinstance(text, str) and text.startswith("${") and text.endswith("}"), text
    return text[2:-1]


@pytest.fixture(scope="module")
def push_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """variables.tf with the push subscription's count and its two outputs, as written in
    main.tf and outputs.tf, over a stand-in list of subscriptions: run by terraform as is."""
    terraform = find_terraform()
    require(terraform is not None, "terraform is not installed")
    directory = tmp_path_factory.mktemp("gcp-push-outputs")
    shutil.copy(STACK / "variables.tf", directory / "variables.tf")
    outputs = {b.labels[0]: b for b in HCL.blocks("outputs.tf", "output")}
    stand_in = "local.push_subscriptions"

    def output(name: str) -> str:
        return expression(value(outputs[name], "value")).replace(
            "google_pubsub_subscription.this", stand_in
        )

    probe = OUTPUTS_PROBE.format(
        count=expression(value(HCL.resource("google_pubsub_subscription", "this"), "count")),
        task_subscription=output("task_subscription"),
        ack_deadline_seconds=output("ack_deadline_seconds"),
    )
    (directory / "probe.tf").write_text(probe, encoding="utf-8")
    init = terraform_run(directory, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stderr
    return directory


@pytest.mark.parametrize(
    ("push", "expected"),
    [
        (
            True,
            {
                "task_subscription": "projects/my-project-1/subscriptions/adder-tasks-push",
                "ack_deadline_seconds": 90,
            },
        ),
        (False, {"task_subscription": None, "ack_deadline_seconds": None}),
    ],
    ids=["push", "workers-only"],
)
def test_the_push_outputs_are_the_subscription_or_null_without_it(
    push_outputs: Path, push: bool, expected: dict[str, object]
) -> None:
    # GIVEN the worker subscription, with or without the push subscription / WHEN applied
    values = {"push_to_function": push, "create_worker_subscription": True}
    applied = apply(push_outputs, values)
    assert applied.returncode == 0, applied.stderr
    # THEN task_subscription and ack_deadline_seconds name it, or are null (not an error)
    shown = json.loads(terraform_run(push_outputs, "output", "-json").stdout)
    assert shown["push"]["value"] == expected


WORKER_CLOUD_CONFIG = {
    "provider": '"gcp"',
    "job_id": "${var.name}",
    "queue_name": "${google_pubsub_topic.this.name}",
    "result_bucket": "${google_storage_bucket.results.name}",
    "result_prefix": "${var.results_prefix}",
    "config": {
        "project": "${var.project_id}",
        "subscription": "${one(google_pubsub_subscription.worker[*].id)}",
        "results_layout": "${var.results_layout}",
    },
}
"""``local.worker_cloud_config`` as python-hcl2 serializes it: what each key of the file is."""


def worker_cloud_config_local() -> object:
    (found,) = [
        b.body.attribute("worker_cloud_config")
        for b in HCL.blocks("outputs.tf", "locals")
        if b.body.attribute("worker_cloud_config") is not None
    ]
    assert found is not None
    return found.value


def test_the_worker_cloud_config_output_is_the_stacks_own_names_or_null() -> None:
    # GIVEN infra/gcp's outputs
    outputs = {b.labels[0]: b for b in HCL.blocks("outputs.tf", "output")}
    assert "worker_cloud_config" in outputs, "infra/gcp declares no worker_cloud_config output"
    # THEN worker_cloud_config is the object of the worker's file, or null without the worker
    # subscription (there is nothing for a worker to pull)
    assert value(outputs["worker_cloud_config"], "value") == (
        "${var.create_worker_subscription ? local.worker_cloud_config : null}"
    )
    # AND each key of the file is bound to this stack's topic, bucket, prefix, project, worker
    # subscription and layout, and there is no other key
    assert worker_cloud_config_local() == WORKER_CLOUD_CONFIG


def hcl_text(node: object) -> str:
    """A value as python-hcl2 serializes it, written back as HCL."""
    if isinstance(node, dict):
        return "{\n" + "".join(f"{k} = {hcl_text(v)}\n" for k, v in node.items()) + "}"
    text = str(node)
    return expression(text) if text.startswith("${") else text


CLOUD_CONFIG_PROBE = """
locals {{
  # Stand-ins for the resources the output names, as the provider fills them in
  topic          = {{ name = "adder-tasks" }}
  results_bucket = {{ name = "my-project-1-adder-results" }}
  worker_subscriptions = [
    for index in range({count}) : {{ id = "{subscription}" }}
  ]
  worker_cloud_config = {config}
}}

output "worker_cloud_config" {{
  value = {output}
}}
"""
STAND_IN_SUBSCRIPTION = "projects/my-project-1/subscriptions/adder-tasks-worker-1"
"""Not the worker's default name: a file without config.subscription would not find it."""


@pytest.fixture(scope="module")
def cloud_config_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """variables.tf with worker_cloud_config (its local and its output, as written in
    outputs.tf) over stand-ins of the topic, the bucket and the counted worker subscription:
    run by terraform as is."""
    terraform = find_terraform()
    require(terraform is not None, "terraform is not installed")
    directory = tmp_path_factory.mktemp("gcp-worker-cloud-config")
    shutil.copy(STACK / "variables.tf", directory / "variables.tf")
    outputs = {b.labels[0]: b for b in HCL.blocks("outputs.tf", "output")}
    probe = CLOUD_CONFIG_PROBE.format(
        count=expression(value(HCL.resource("google_pubsub_subscription", "worker"), "count")),
        subscription=STAND_IN_SUBSCRIPTION,
        config=hcl_text(worker_cloud_config_local()),
        output=expression(value(outputs["worker_cloud_config"], "value")),
    )
    stand_ins = {
        "google_pubsub_topic.this": "local.topic",
        "google_storage_bucket.results": "local.results_bucket",
        "google_pubsub_subscription.worker": "local.worker_subscriptions",
    }
    for address, stand_in in stand_ins.items():
        probe = probe.replace(address, stand_in)
    (directory / "probe.tf").write_text(probe, encoding="utf-8")
    init = terraform_run(directory, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stderr
    return directory


def test_the_worker_cloud_config_is_read_whole_by_the_loader_and_the_binding(
    cloud_config_output: Path, tmp_path: Path
) -> None:
    # GIVEN the stack with the worker subscription, a prefix and the packed layout / WHEN applied
    values = {
        "create_worker_subscription": True,
        "name": "adder",
        "results_prefix": "jobs/one",
        "results_layout": "packed",
    }
    applied = apply(cloud_config_output, values)
    assert applied.returncode == 0, applied.stderr
    # AND worker_cloud_config is written to a file as `terraform output -json` prints it
    shown = terraform_run(cloud_config_output, "output", "-json", "worker_cloud_config")
    assert shown.returncode == 0, shown.stderr
    path = tmp_path / "cloud-config.json"
    path.write_text(shown.stdout, encoding="utf-8")
    # WHEN the worker's loader and the GCP binding read it (no $GOOGLE_CLOUD_PROJECT)
    config = load_worker_config(path)
    target = worker_target(config, environ={})
    # THEN every key is one they read, and means what the stack has: no unknown field, the
    # topic and the worker subscription in the project, the bucket under the prefix, the layout
    assert config.warnings == ()
    assert (config.provider, config.job_id, config.results_layout) == (
        "gcp",
        "adder",
        ResultsLayout.PACKED,
    )
    assert (config.result_bucket, config.result_prefix) == (
        "my-project-1-adder-results",
        "jobs/one",
    )
    assert target.project == "my-project-1"
    assert target.topic == "projects/my-project-1/topics/adder-tasks"
    assert target.subscription == STAND_IN_SUBSCRIPTION


def test_without_the_worker_subscription_the_worker_cloud_config_is_null(
    cloud_config_output: Path,
) -> None:
    # GIVEN the stack without the worker subscription (the function's push one only)
    applied = apply(cloud_config_output, {"create_worker_subscription": False})
    assert applied.returncode == 0, applied.stderr
    # WHEN its outputs are read / THEN worker_cloud_config is null: no file to give a worker
    # (terraform keeps no null output, so asking for it by name fails rather than print null)
    shown = json.loads(terraform_run(cloud_config_output, "output", "-json").stdout)
    assert shown.get("worker_cloud_config", {}).get("value") is None
    named = terraform_run(cloud_config_output, "output", "-json", "worker_cloud_config")
    assert named.returncode != 0
    assert 'Output "worker_cloud_config" not found' in named.stderr
