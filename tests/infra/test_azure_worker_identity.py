"""infra/azure's optional identity for ``adder work``, read from the Terraform source (no azurerm
provider is mirrored here, so the stack is not planned: tests/infra/test_tfschema.py checks it
against the provider's schema and tests/infra/test_checkov.py scans it).

Checked: it is off by default and everything it adds is counted on the one variable; the
identity gets exactly two roles, "Azure Service Bus Data Receiver" on the task queue and
"Storage Blob Data Contributor" on the results container (never a namespace, account or
resource group); its outputs are null without it; the example and the README say how to use
it. The ``worker_cloud_config`` output is the worker's config file: exactly the keys
:func:`core.worker.command.load_worker_config` and the Azure binding's
:func:`~azure_function.servicebus_receiver.worker_settings` read, each bound to the stack's
own queue, container, namespace, blob endpoint and lock duration.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from azure_function.servicebus_receiver import worker_settings
from core.packing import ResultsLayout
from core.worker.command import load_worker_config
from tests.conftest import REPO_ROOT
from tests.support.hcl import StackSource, value

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.infra

STACK = REPO_ROOT / "infra" / "azure"
HCL = StackSource(STACK)
WORKER = "azurerm_user_assigned_identity.worker"
GATED = "${var.create_worker_identity ? 1 : 0}"


def test_the_worker_identity_is_off_by_default_and_all_of_it_hangs_on_one_variable() -> None:
    # GIVEN the stack's variables / THEN create_worker_identity is a bool, false by default
    (variable,) = [
        b for b in HCL.blocks("variables.tf", "variable") if b.labels == ("create_worker_identity",)
    ]
    assert (value(variable, "type"), value(variable, "default")) == ("bool", False)
    # AND the identity, and every resource that names it, exists only when it is true
    resources = HCL.blocks("main.tf", "resource")
    worker = [
        r
        for r in resources
        if r.labels == ("azurerm_user_assigned_identity", "worker")
        or any(WORKER in str(a.value) for a in r.body.attributes)
    ]
    assert [r.labels for r in worker] == [
        ("azurerm_user_assigned_identity", "worker"),
        ("azurerm_role_assignment", "worker_queue_receiver"),
        ("azurerm_role_assignment", "worker_results_writer"),
    ]
    assert {value(r, "count") for r in worker} == {GATED}


def test_the_worker_identity_has_two_roles_each_on_one_resource_only() -> None:
    # GIVEN every role assignment of the stack
    assignments = [
        r for r in HCL.blocks("main.tf", "resource") if r.labels[0] == "azurerm_role_assignment"
    ]
    # WHEN those given to the worker identity are picked
    granted = {
        (value(r, "role_definition_name"), value(r, "scope"))
        for r in assignments
        if str(value(r, "principal_id")) == f"${{{WORKER}[0].principal_id}}"
    }
    # THEN it receives from the task queue and writes in the results container, nothing more
    assert granted == {
        ('"Azure Service Bus Data Receiver"', "${azurerm_servicebus_queue.this.id}"),
        ('"Storage Blob Data Contributor"', "${azurerm_storage_container.results.id}"),
    }
    # AND the function app's own grants do not reach it (each assignment has one principal)
    others = [r for r in assignments if WORKER not in str(value(r, "principal_id"))]
    assert all("user_assigned_identity" not in str(value(r, "principal_id")) for r in others)


def test_the_worker_outputs_are_its_client_id_and_id_or_null() -> None:
    outputs = {b.labels[0]: b for b in HCL.blocks("outputs.tf", "output")}
    assert value(outputs["worker_identity_client_id"], "value") == (
        f"${{try({WORKER}[0].client_id, null)}}"
    )
    assert value(outputs["worker_identity_id"], "value") == f"${{try({WORKER}[0].id, null)}}"


def test_the_example_and_the_readme_show_how_to_use_it() -> None:
    example = (STACK / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert "create_worker_identity = false" in example
    readme = (STACK / "README.md").read_text(encoding="utf-8")
    for needed in ("create_worker_identity", "worker_identity_client_id", "AZURE_CLIENT_ID"):
        assert needed in readme, needed


WORKER_CLOUD_CONFIG = {
    "provider": '"azure"',
    "job_id": "${var.name}",
    "queue_name": "${azurerm_servicebus_queue.this.name}",
    "result_bucket": "${azurerm_storage_container.results.name}",
    "result_prefix": "${var.results_prefix}",
    "config": {
        "namespace": "${local.servicebus_fqdn}",
        "account_url": "${azurerm_storage_account.results.primary_blob_endpoint}",
        "lock_duration": "${azurerm_servicebus_queue.this.lock_duration}",
        "results_layout": "${var.results_layout}",
    },
}
"""``worker_cloud_config`` as python-hcl2 serializes it: what each key of the file is."""

APPLIED = {
    '"azure"': "azure",
    "${var.name}": "adder",
    "${azurerm_servicebus_queue.this.name}": "tasks",
    "${azurerm_storage_container.results.name}": "results",
    "${var.results_prefix}": "jobs/one",
    "${local.servicebus_fqdn}": "sb-adder-1a2b3c.servicebus.windows.net",
    "${azurerm_storage_account.results.primary_blob_endpoint}": (
        "https://stadderres1a2b3c.blob.core.windows.net/"
    ),
    "${azurerm_servicebus_queue.this.lock_duration}": "PT1M30S",
    "${var.results_layout}": "packed",
}
"""What each expression of the output is once applied (as azurerm returns them)."""


def worker_cloud_config() -> object:
    outputs = {b.labels[0]: b for b in HCL.blocks("outputs.tf", "output")}
    assert "worker_cloud_config" in outputs, "infra/azure declares no worker_cloud_config output"
    return value(outputs["worker_cloud_config"], "value")


def applied(node: object) -> object:
    """The output's object with each expression replaced by its applied value."""
    if isinstance(node, dict):
        return {key: applied(item) for key, item in node.items()}
    assert node in APPLIED, f"an expression this test does not know: {node}"
    return APPLIED[str(node)]


def test_the_worker_cloud_config_output_is_an_object_of_the_stacks_own_names() -> None:
    # GIVEN infra/azure's outputs / THEN worker_cloud_config is an object (terraform output
    # -json prints it as the file), each key bound to the queue, container, namespace, blob
    # endpoint, lock duration, prefix and layout of this stack, and nothing else
    assert worker_cloud_config() == WORKER_CLOUD_CONFIG
    # AND the lock duration is the queue's derived one, in the ISO form the binding parses
    assert value(HCL.resource("azurerm_servicebus_queue", "this"), "lock_duration") == (
        "${local.lock_duration}"
    )


def test_the_worker_cloud_config_output_is_read_whole_by_the_loader_and_the_binding(
    tmp_path: Path,
) -> None:
    # GIVEN the output as `terraform output -json worker_cloud_config` writes it once applied
    path = tmp_path / "cloud-config.json"
    path.write_text(json.dumps(applied(worker_cloud_config())), encoding="utf-8")
    # WHEN the worker's loader and the Azure binding read it (no connection strings around)
    config = load_worker_config(path)
    settings = worker_settings(config, environ={})
    # THEN every key is one they read, and means what the stack has: no unknown field, the
    # queue, the container under the prefix, the namespace's host, the results account, the
    # queue's lock duration as the lease, the stack's layout
    assert config.warnings == ()
    assert (config.provider, config.job_id, config.results_layout) == (
        "azure",
        "adder",
        ResultsLayout.PACKED,
    )
    assert (settings.queue, settings.container, settings.prefix) == ("tasks", "results", "jobs/one")
    assert settings.host == "sb-adder-1a2b3c.servicebus.windows.net"
    assert settings.account_url == "https://stadderres1a2b3c.blob.core.windows.net/"
    assert settings.lease_seconds == 90
    assert settings.needs_credential
