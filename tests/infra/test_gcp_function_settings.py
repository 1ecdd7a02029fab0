"""infra/gcp's function settings (request concurrency, CPU, memory, results layout) through the
real terraform, offline.

There is no google provider here, so the stack cannot be planned whole. Its runtime settings
are derived from variables alone in ``function_settings.tf``, with Cloud Run's rules as the
preconditions of its outputs: that file and ``variables.tf``, copied verbatim, are applied by
terraform with no provider at all, so every validation and precondition runs as it would in a
real plan. Then ``main.tf`` is checked to hand exactly those settings to the function.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from aws_lambda.sandbox.terraform import find_terraform
from tests.conftest import REPO_ROOT
from tests.support.tools import require
from tools.tfschema.hcl import parse_file

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.infra

STACK = REPO_ROOT / "infra" / "gcp"
REQUIRED = {"project_id": "my-project-1", "region": "europe-west1"}
PROBE = """
output "function_settings" {
  value = local.function_settings
}
"""
"""A test-only output: the environment the stack gives the function besides its bucket."""


class Settings:
    """A working directory holding the stack's settings files, initialised once."""

    def __init__(self, directory: Path, terraform: str) -> None:
        self.directory = directory
        self.terraform = terraform
        self.runs = 0

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.terraform, *args, "-no-color"],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def apply(self, variables: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """``terraform apply`` with ``variables`` (a JSON var-file: null is null)."""
        self.runs += 1
        var_file = self.directory / f"case-{self.runs}.tfvars.json"
        var_file.write_text(json.dumps({**REQUIRED, **variables}), encoding="utf-8")
        return self.run("apply", "-auto-approve", "-input=false", f"-var-file={var_file.name}")

    def outputs(self, variables: dict[str, Any]) -> dict[str, Any]:
        applied = self.apply(variables)
        assert applied.returncode == 0, applied.stderr
        shown = self.run("output", "-json")
        return {name: item["value"] for name, item in json.loads(shown.stdout).items()}

    def refusal(self, variables: dict[str, Any]) -> str:
        """The error terraform gives for ``variables`` (which it must refuse)."""
        applied = self.apply(variables)
        assert applied.returncode != 0, applied.stdout
        return " ".join(applied.stderr.split())


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    terraform = find_terraform()
    require(terraform is not None, "terraform is not installed")
    assert terraform is not None
    directory = tmp_path_factory.mktemp("gcp-settings")
    for name in ("variables.tf", "function_settings.tf"):
        shutil.copy(STACK / name, directory / name)
    (directory / "probe.tf").write_text(PROBE, encoding="utf-8")
    prepared = Settings(directory, terraform)
    initialised = prepared.run("init", "-input=false", "-backend=false")
    assert initialised.returncode == 0, initialised.stderr
    return prepared


def test_defaults_serve_80_requests_per_instance_on_one_vcpu_one_object_per_task(
    settings: Settings,
) -> None:
    # GIVEN only the required variables / WHEN applied
    outputs = settings.outputs({})
    # THEN concurrency 80 (the measured default), the default memory, one object per task
    assert outputs["request_concurrency"] == 80
    assert (outputs["function_cpu"], outputs["function_memory"]) == ("1", "256M")
    assert outputs["results_layout"] == "per_task"
    # AND the function's server gets one thread per concurrent request, and no pack settings
    assert outputs["function_settings"] == {"THREADS": "80", "RESULTS_LAYOUT": "per_task"}


def test_packed_layout_passes_the_pack_settings_to_the_function(settings: Settings) -> None:
    # GIVEN the packed layout at concurrency 32 with a 25 ms window
    variables = {"results_layout": "packed", "request_concurrency": 32, "pack_max_wait_ms": 25}
    # WHEN applied / THEN a pack holds at most the requests an instance serves at once
    outputs = settings.outputs(variables)
    assert outputs["results_layout"] == "packed"
    assert outputs["function_settings"] == {
        "THREADS": "32",
        "RESULTS_LAYOUT": "packed",
        "PACK_MAX_BATCH": "32",
        "PACK_MAX_WAIT_MS": "25",
    }


@pytest.mark.parametrize(
    "variables",
    [
        {"request_concurrency": 1, "function_cpu": None},
        {"request_concurrency": 1, "function_cpu": "0.167"},
        {"request_concurrency": 1000, "function_cpu": "2", "function_memory": "8Gi"},
        {"function_cpu": None, "function_memory": "2Gi"},
        {"function_cpu": "4", "function_memory": "2Gi"},
        {"function_cpu": "0.5", "function_memory": "1Gi", "request_concurrency": 1},
    ],
    ids=["one-request-platform-cpu", "one-request-a-sixth", "most", "2gi-gets-1-vcpu", "4", "half"],
)
def test_combinations_cloud_run_allows_are_accepted(
    settings: Settings, variables: dict[str, Any]
) -> None:
    outputs = settings.outputs(variables)
    assert outputs["request_concurrency"] == variables.get("request_concurrency", 80)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"request_concurrency": 0}, "between 1 and 1000"),
        ({"request_concurrency": 1001}, "between 1 and 1000"),
        ({"request_concurrency": 2.5}, "between 1 and 1000"),
        ({"function_cpu": "3"}, '"2", "4", "6" or "8"'),
        ({"function_cpu": "0.05"}, 'from "0.08" to "1"'),
        ({"function_cpu": "1.5"}, 'from "0.08" to "1"'),
        ({"function_cpu": "0.5"}, "needs at least 1 vCPU per instance"),
        ({"function_cpu": None}, "function_cpu is derived from function_memory"),
        ({"function_cpu": "4", "function_memory": "1Gi"}, "2048 to 16384 MiB"),
        (
            {"function_cpu": "0.25", "function_memory": "1G", "request_concurrency": 1},
            "0 to 512 MiB",
        ),
        ({"function_cpu": "1", "function_memory": "5Gi"}, "0 to 4096 MiB"),
        ({"results_layout": "pack"}, '"per_task" or "packed"'),
        ({"pack_max_wait_ms": 1001}, "between 0 and 1000"),
        (
            {"results_layout": "packed", "pack_max_wait_ms": 600, "function_timeout_seconds": 1},
            "at most half the function timeout",
        ),
    ],
    ids=[
        "concurrency-0",
        "concurrency-1001",
        "concurrency-fraction",
        "cpu-3",
        "cpu-too-small",
        "cpu-fraction-above-1",
        "concurrency-on-half-a-cpu",
        "concurrency-on-the-platform-cpu",
        "4-cpu-too-little-memory",
        "quarter-cpu-too-much-memory",
        "1-cpu-too-much-memory",
        "unknown-layout",
        "window-too-long",
        "window-longer-than-the-timeout-allows",
    ],
)
def test_what_cloud_run_refuses_is_refused_at_plan_time(
    settings: Settings, variables: dict[str, Any], message: str
) -> None:
    # GIVEN settings Cloud Run would refuse at deployment / WHEN applied
    error = settings.refusal(variables)
    # THEN terraform refuses them first, saying what to change
    assert message in error


def test_every_tfvars_example_setting_is_declared_and_valid(settings: Settings) -> None:
    # GIVEN the example tfvars (with its real concurrency and layout settings)
    example = STACK / "terraform.tfvars.example"
    shutil.copy(example, settings.directory / "example.tfvars")
    # WHEN applied with every variable of the stack / THEN it is accepted
    applied = settings.run("apply", "-auto-approve", "-input=false", "-var-file=example.tfvars")
    assert applied.returncode == 0, applied.stderr
    text = example.read_text(encoding="utf-8")
    assert "request_concurrency" in text and "results_layout" in text


def test_the_function_gets_the_derived_settings() -> None:
    # GIVEN main.tf's function / THEN its CPU, concurrency and environment are the settings
    [function] = [
        block
        for block in parse_file(STACK / "main.tf").blocks_of("resource")
        if block.labels == ("google_cloudfunctions2_function", "this")
    ]
    [service] = function.body.blocks_of("service_config")

    def value(name: str) -> str:
        attribute = service.body.attribute(name)
        assert attribute is not None, name
        return str(attribute.value)

    assert value("available_cpu") == "${var.function_cpu}"
    assert value("available_memory") == "${var.function_memory}"
    assert value("max_instance_request_concurrency") == "${var.request_concurrency}"
    environment = value("environment_variables")
    assert environment.startswith("${merge(local.function_settings, {")
    assert "RESULTS_BUCKET" in environment and "RESULTS_PREFIX" in environment
    # AND the outputs the operator and the cost estimate read are declared by the stack
    outputs = {
        block.labels[0]
        for path in STACK.glob("*.tf")
        for block in parse_file(path).blocks_of("output")
    }
    assert {"request_concurrency", "function_cpu", "function_memory", "results_layout"} <= outputs
