"""infra/azure's optional identity for ``adder work``, read from the Terraform source (no azurerm
provider is mirrored here, so the stack is not planned: tests/infra/test_tfschema.py checks it
against the provider's schema and tests/infra/test_checkov.py scans it).

Checked: it is off by default and everything it adds is counted on the one variable; the
identity gets exactly two roles, "Azure Service Bus Data Receiver" on the task queue and
"Storage Blob Data Contributor" on the results container (never a namespace, account or
resource group); its outputs are null without it; the example and the README say how to use
it.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT
from tools.tfschema.hcl import Block, parse_file

pytestmark = pytest.mark.infra

STACK = REPO_ROOT / "infra" / "azure"
WORKER = "azurerm_user_assigned_identity.worker"
GATED = "${var.create_worker_identity ? 1 : 0}"


def blocks(file: str, block_type: str) -> list[Block]:
    return parse_file(STACK / file).blocks_of(block_type)


def value(block: Block, name: str) -> object:
    attribute = block.body.attribute(name)
    assert attribute is not None, f"{block.labels} has no {name}"
    return attribute.value


def test_the_worker_identity_is_off_by_default_and_all_of_it_hangs_on_one_variable() -> None:
    # GIVEN the stack's variables / THEN create_worker_identity is a bool, false by default
    (variable,) = [
        b for b in blocks("variables.tf", "variable") if b.labels == ("create_worker_identity",)
    ]
    assert (value(variable, "type"), value(variable, "default")) == ("bool", False)
    # AND the identity, and every resource that names it, exists only when it is true
    resources = blocks("main.tf", "resource")
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
        r for r in blocks("main.tf", "resource") if r.labels[0] == "azurerm_role_assignment"
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
    outputs = {b.labels[0]: b for b in blocks("outputs.tf", "output")}
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
