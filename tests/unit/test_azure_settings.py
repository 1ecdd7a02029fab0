"""What the function, host.json, requirements.txt, the zip and infra/azure must agree on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import zipfile
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import hcl2
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from azure_function.blob_store import (
    CONNECTION_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    RETRIES,
    default_retry,
)
from core.clouds import CLOUDS
from core.packaging import build_package
from tests.conftest import REPO_ROOT
from tests.integration.azure.messages import registered_function

if TYPE_CHECKING:
    from pathlib import Path

INFRA = REPO_ROOT / "infra" / "azure"
HOST_JSON = REPO_ROOT / "azure_function" / "host.json"
REQUIREMENTS = REPO_ROOT / "azure_function" / "requirements.txt"
MAX_FUNCTION_TIMEOUT_SECONDS = 300  # infra/azure validation: 1-300 (a lock lasts at most 5 min)


def _unquote(key: str) -> str:
    return key.strip('"')


def terraform_block(path: Path, kind: str, *labels: str) -> dict[str, Any]:
    """One block of a .tf file (python-hcl2 8 keeps the label quotes: they are dropped here)."""
    for block in hcl2.load(path.open(encoding="utf-8"))[kind]:
        node: Any = block
        for label in labels:
            node = {_unquote(k): v for k, v in node.items()}.get(label)
            if node is None:
                break
        else:
            return dict(node)
    raise AssertionError(f"{kind} {'.'.join(labels)} not in {path.name}")


def seconds(timespan: str) -> int:
    hours, minutes, secs = (int(part) for part in timespan.split(":"))
    return hours * 3600 + minutes * 60 + secs


def host() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(HOST_JSON.read_text(encoding="utf-8"))
    return document


def test_host_json_settings() -> None:
    # GIVEN host.json / THEN it is a v2 host on extension bundle 4 with the chosen trigger settings
    document = host()
    assert document["version"] == "2.0"
    assert document["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    service_bus = document["extensions"]["serviceBus"]
    assert service_bus["autoCompleteMessages"] is True  # complete on return, abandon on raise
    assert service_bus["prefetchCount"] == 0
    assert 1 <= service_bus["maxConcurrentCalls"] <= 32
    # AND the lock is renewed for as long as the longest function timeout infra/azure allows
    assert seconds(service_bus["maxAutoLockRenewalDuration"]) >= MAX_FUNCTION_TIMEOUT_SECONDS


def test_host_json_function_timeout_matches_the_infra_default() -> None:
    # GIVEN infra/azure's default timeout (its app setting overrides host.json on Azure)
    variable = terraform_block(INFRA / "variables.tf", "variable", "function_timeout_seconds")
    # THEN host.json says the same, so a local host behaves like the deployed one
    assert seconds(host()["functionTimeout"]) == variable["default"]


def test_user_logs_are_kept_and_not_sampled() -> None:
    # GIVEN host.json's logging / THEN the function's own lines pass the filter and every trace
    # reaches Application Insights (one line per message is the audit trail)
    logging = host()["logging"]
    assert logging["logLevel"]["Function.process_task.User"] == "Information"
    excluded = logging["applicationInsights"]["samplingSettings"]["excludedTypes"].split(";")
    assert "Trace" in excluded


def test_app_settings_in_terraform_are_the_ones_the_function_reads() -> None:
    # GIVEN the app settings infra/azure gives the function app
    app = terraform_block(
        INFRA / "main.tf", "resource", "azurerm_function_app_flex_consumption", "this"
    )
    settings = set(app["app_settings"])
    binding = json.loads(registered_function().get_function_json())["bindings"][0]
    # THEN the trigger's queue setting and identity-based connection are among them
    queue_setting = re.fullmatch(r"%(\w+)%", binding["queueName"])
    assert queue_setting is not None and queue_setting.group(1) in settings
    assert f"{binding['connection']}__fullyQualifiedNamespace" in settings
    # AND so is every setting the results store reads (the connection string is local only)
    assert {"RESULTS_BLOB_ACCOUNT_URL", "RESULTS_CONTAINER", "RESULTS_PREFIX"} <= settings
    assert "RESULTS_BLOB_CONNECTION_STRING" not in settings


def test_a_failing_write_gives_up_before_the_function_times_out() -> None:
    # GIVEN the store's retry policy and timeouts, at their worst (every attempt times out,
    # every back-off at the top of its jitter)
    policy = default_retry()
    waits = [
        policy.initial_backoff + policy.increment_base**count + policy.random_jitter_range
        for count in range(1, RETRIES + 1)
    ]
    attempts = RETRIES + 1
    worst = attempts * (CONNECTION_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) + sum(waits)
    # THEN the whole write still ends inside the default function timeout
    assert policy.total_retries == RETRIES
    assert worst < seconds(host()["functionTimeout"])


def test_requirements_are_pinned_within_the_project_ranges() -> None:
    # GIVEN requirements.txt (what Azure installs) and the azure extra of pyproject.toml (what
    # the tests install)
    pins = dict(
        line.split("==")
        for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ranges = {
        (req := Requirement(text)).name: req.specifier
        for text in project["project"]["optional-dependencies"]["azure"]
    }
    # THEN the runtime packages, and only they, are pinned exactly, inside the tested ranges
    assert set(pins) == {"azure-functions", "azure-storage-blob", "azure-identity"}
    for name, pinned in pins.items():
        assert Version(pinned) in ranges[name], (name, pinned, ranges[name])
    # AND azure-functions is recent enough for the v2 model's directly callable functions
    assert Version(pins["azure-functions"]) >= Version("1.21")


def test_the_tests_ran_with_the_pinned_versions() -> None:
    # GIVEN the pins / THEN the versions installed here are the ones deployed; a newer SDK in
    # the test environment is reported (skip), so the pins can be moved after a green run
    pins = dict(
        line.split("==")
        for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    installed = {name: version(name) for name in pins}
    if installed != pins:
        pytest.skip(f"tested with {installed}, requirements.txt pins {pins}")
    assert installed == pins


def test_deployment_zip_layout_and_reproducibility(tmp_path: Path) -> None:
    # GIVEN two builds of the Azure package
    first = build_package(CLOUDS["azure"], tmp_path / "a.zip")
    second = build_package(CLOUDS["azure"], tmp_path / "b.zip")
    # THEN they are byte-identical
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    # AND the app files are at the root, next to the runtime packages
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(names)
    assert {"core/pipeline.py", "azure_function/handler.py", "azure_function/blob_store.py"} <= set(
        names
    )
    # AND the command-line modules (and a second function_app.py) stay out
    for left_out in ("cli.py", "submit.py", "status.py", "function_app.py"):
        assert f"azure_function/{left_out}" not in names
    assert zipfile.ZipFile(first).read("host.json") == HOST_JSON.read_bytes()


@pytest.mark.infra
def test_infra_azure_is_terraform_formatted() -> None:
    # GIVEN the Azure stack / WHEN terraform fmt checks it / THEN nothing needs reformatting
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    check = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(INFRA)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
