"""The offline schema check: fixtures pass, planted errors are named precisely, aws agrees with
``terraform validate``, and the committed schema artifacts match the pinned provider versions.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.tfschema.build import JsiiExtractor, azure_enum_values, enum_values
from tools.tfschema.check import check_stack
from tools.tfschema.schema import DEFAULT_SCHEMA_DIR, SchemaSet

pytestmark = pytest.mark.infra

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED_ARTIFACTS = {
    "google-6.50.0.json.gz": (
        "registry.terraform.io/hashicorp/google",
        "@cdktf/provider-google@16.12.1",
    ),
    "azurerm-4.55.0.json.gz": (
        "registry.terraform.io/hashicorp/azurerm",
        "@cdktf/provider-azurerm@14.23.1",
    ),
    "aws-5.100.0.json.gz": ("registry.terraform.io/hashicorp/aws", "providers schema -json"),
}
MAX_ARTIFACT_BYTES = 3 * 1024 * 1024
FIXTURES_ORDER = ("google", "azurerm", "aws")


@dataclass(frozen=True)
class Plant:
    """A one-place edit of a fixture and the single finding it must produce."""

    id: str
    stack: str
    file: str
    old: str
    new: str
    line_of: str  # text on the line the finding must point at (in the edited file)
    address: str
    message: str


PLANTS = [
    Plant(
        "google-misspelled-argument",
        "google",
        "main.tf",
        "  uniform_bucket_level_access = true",
        "  uniform_bucket_level_acess = true",
        "uniform_bucket_level_acess",
        "google_storage_bucket.results",
        'unknown argument "uniform_bucket_level_acess" '
        '(did you mean "uniform_bucket_level_access"?)',
    ),
    Plant(
        "google-missing-required-argument",
        "google",
        "main.tf",
        '  location                    = "EU"\n',
        "",
        'resource "google_storage_bucket" "results"',
        "google_storage_bucket.results",
        'missing required argument "location"',
    ),
    Plant(
        "google-block-at-wrong-level",
        "google",
        "main.tf",
        "    source {\n      storage_source {\n"
        "        bucket = google_storage_bucket.results.name\n"
        '        object = "gcp_function.zip"\n      }\n    }\n',
        "    storage_source {\n      bucket = google_storage_bucket.results.name\n"
        '      object = "gcp_function.zip"\n    }\n',
        "    storage_source {",
        "google_cloudfunctions2_function.worker",
        'unknown block "storage_source" in "build_config" (it belongs in "build_config.source")',
    ),
    Plant(
        "google-invalid-enum",
        "google",
        "main.tf",
        '    ingress_settings      = "ALLOW_INTERNAL_ONLY"',
        '    ingress_settings      = "ALLOW_INTERNAL"',
        "ingress_settings",
        "google_cloudfunctions2_function.worker",
        'invalid value for "ingress_settings" in "service_config": "ALLOW_INTERNAL" is not one of '
        '"ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"',
    ),
    Plant(
        "google-error-inside-dynamic-content",
        "google",
        "main.tf",
        "        age = lifecycle_rule.value",
        "        agee = lifecycle_rule.value",
        "agee",
        "google_storage_bucket.results",
        'unknown argument "agee" in "lifecycle_rule.condition" (did you mean "age"?)',
    ),
    Plant(
        "azurerm-misspelled-argument",
        "azurerm",
        "main.tf",
        "  https_only                    = true",
        "  http_only                     = true",
        "http_only",
        "azurerm_linux_function_app.worker",
        'unknown argument "http_only" (did you mean "https_only"?)',
    ),
    Plant(
        "azurerm-missing-required-argument",
        "azurerm",
        "main.tf",
        '  os_type             = "Linux"\n',
        "",
        'resource "azurerm_service_plan" "this"',
        "azurerm_service_plan.this",
        'missing required argument "os_type"',
    ),
    Plant(
        "azurerm-block-at-wrong-level",
        "azurerm",
        "main.tf",
        '  site_config {\n    minimum_tls_version = "1.2"\n    application_stack {\n'
        '      python_version = "3.12"\n    }\n',
        '  application_stack {\n    python_version = "3.12"\n  }\n'
        '  site_config {\n    minimum_tls_version = "1.2"\n',
        "  application_stack {",
        "azurerm_linux_function_app.worker",
        'unknown block "application_stack" (it belongs in "site_config")',
    ),
    Plant(
        "azurerm-invalid-enum",
        "azurerm",
        "main.tf",
        '  client_certificate_mode       = "Required"',
        '  client_certificate_mode       = "Mandatory"',
        "client_certificate_mode",
        "azurerm_linux_function_app.worker",
        'invalid value for "client_certificate_mode": "Mandatory" is not one of "Required", '
        '"Optional", "OptionalInteractiveUser"',
    ),
    Plant(
        "azurerm-provider-features-required",
        "azurerm",
        "versions.tf",
        "  features {}\n",
        "",
        'provider "azurerm"',
        "provider.azurerm",
        'missing required block "features"',
    ),
    Plant(
        "aws-misspelled-argument",
        "aws",
        "main.tf",
        "  force_destroy = false",
        "  force_destory = false",
        "force_destory",
        "aws_s3_bucket.results",
        'unknown argument "force_destory" (did you mean "force_destroy"?)',
    ),
    Plant(
        "aws-missing-required-argument",
        "aws",
        "main.tf",
        "  role          = aws_iam_role.worker.arn\n",
        "",
        'resource "aws_lambda_function" "worker"',
        "aws_lambda_function.worker",
        'missing required argument "role"',
    ),
    Plant(
        "aws-block-at-wrong-level",
        "aws",
        "main.tf",
        "    abort_incomplete_multipart_upload {\n      days_after_initiation = 7\n    }\n  }\n",
        "  }\n  abort_incomplete_multipart_upload {\n    days_after_initiation = 7\n  }\n",
        "  abort_incomplete_multipart_upload {",
        "aws_s3_bucket_lifecycle_configuration.results",
        'unknown block "abort_incomplete_multipart_upload" (it belongs in "rule")',
    ),
    Plant(
        "aws-literal-of-wrong-type",
        "aws",
        "main.tf",
        "  memory_size   = 256",
        '  memory_size   = "lots"',
        "memory_size",
        "aws_lambda_function.worker",
        'invalid value for "memory_size": expected a number, got "lots"',
    ),
    Plant(
        "aws-too-many-blocks",
        "aws",
        "main.tf",
        '  versioning_configuration {\n    status = "Enabled"\n  }\n',
        '  versioning_configuration {\n    status = "Enabled"\n  }\n'
        '  versioning_configuration { # planted duplicate\n    status = "Suspended"\n  }\n',
        "planted duplicate",
        "aws_s3_bucket_versioning.results",
        'too many "versioning_configuration" blocks: at most 1, found 2',
    ),
    Plant(
        "aws-computed-only-argument",
        "aws",
        "main.tf",
        '  name                       = "adder-tasks"\n',
        '  name                       = "adder-tasks"\n  arn                        = "x"\n',
        '  arn                        = "x"',
        "aws_sqs_queue.tasks",
        'argument "arn" is computed-only and cannot be set',
    ),
    Plant(
        "aws-argument-written-as-block",
        "aws",
        "main.tf",
        "  memory_size   = 256\n",
        "  memory_size {\n  }\n",
        "  memory_size {",
        "aws_lambda_function.worker",
        '"memory_size" is an argument, not a block: write memory_size = ...',
    ),
]
# planted errors that `terraform validate` must report on the same line as the checker
AWS_AGREEMENT = [p for p in PLANTS if p.stack == "aws"]


def copy_stack(source: Path, target: Path) -> Path:
    """Copy the ``*.tf`` files of a stack into a fresh directory."""
    target.mkdir(parents=True)
    for path in source.glob("*.tf"):
        shutil.copy(path, target / path.name)
    return target


def plant(plant: Plant, target: Path) -> Path:
    """A copy of the plant's fixture with its one edit applied."""
    stack = copy_stack(FIXTURES / plant.stack, target)
    path = stack / plant.file
    text = path.read_text(encoding="utf-8")
    assert text.count(plant.old) == 1, f"{plant.id}: edit must match exactly once"
    path.write_text(text.replace(plant.old, plant.new), encoding="utf-8")
    return stack


def line_of(path: Path, needle: str) -> int:
    """1-based number of the only line containing ``needle``."""
    lines = [n for n, text in enumerate(path.read_text().splitlines(), 1) if needle in text]
    assert len(lines) == 1, f"{needle!r} must be on exactly one line of {path}"
    return lines[0]


def terraform_validate(stack: Path, plugin_dir: Path) -> list[dict[str, Any]]:
    """Error diagnostics of ``terraform validate -json`` (after an offline init)."""
    init = ["terraform", "init", "-backend=false", "-input=false", f"-plugin-dir={plugin_dir}"]
    subprocess.run(init, cwd=stack, check=True, capture_output=True)
    out = subprocess.run(
        ["terraform", "validate", "-json", "-no-color"], cwd=stack, capture_output=True, text=True
    )
    diagnostics: list[dict[str, Any]] = json.loads(out.stdout)["diagnostics"]
    return [d for d in diagnostics if d["severity"] == "error"]


@pytest.mark.parametrize("name", ["google", "azurerm", "aws"])
def test_valid_fixture_has_no_findings(name: str) -> None:
    # GIVEN a fixture stack written against the pinned provider schema
    # WHEN the schema check runs on it
    stack = check_stack(FIXTURES / name, SchemaSet())
    # THEN it reports nothing and checked every resource, data and provider block
    assert stack.findings == []
    assert stack.checked >= 7


@pytest.mark.parametrize("case", PLANTS, ids=[p.id for p in PLANTS])
def test_planted_error_is_named_once_with_file_line_address(case: Plant, tmp_path: Path) -> None:
    # GIVEN a valid fixture with one planted mistake
    stack_dir = plant(case, tmp_path / "stack")
    # WHEN the schema check runs on it
    findings = check_stack(stack_dir, SchemaSet()).findings
    # THEN exactly one finding names the file, the line, the resource and the attribute
    assert [(f.file, f.line, f.address, f.message) for f in findings] == [
        (
            str(stack_dir / case.file),
            line_of(stack_dir / case.file, case.line_of),
            case.address,
            case.message,
        )
    ]


def test_cli_prints_one_line_per_error_and_exits_non_zero(tmp_path: Path) -> None:
    # GIVEN a stack with a misspelled argument
    stack_dir = plant(PLANTS[0], tmp_path / "stack")
    # WHEN the checker runs as a module from the repository root
    out = subprocess.run(
        [sys.executable, "-m", "tools.tfschema", str(stack_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    # THEN it prints the error as file:line: address: message and exits 1
    line = line_of(stack_dir / "main.tf", "uniform_bucket_level_acess")
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{stack_dir / 'main.tf'}:{line}: google_storage_bucket.results: "
        'unknown argument "uniform_bucket_level_acess" '
        '(did you mean "uniform_bucket_level_access"?)'
    ]


def test_cli_exits_zero_on_valid_stacks() -> None:
    # GIVEN the three valid fixtures
    # WHEN the checker runs on all of them at once
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.tfschema",
            *(str(FIXTURES / n) for n in FIXTURES_ORDER),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    # THEN nothing is printed on stdout and the exit code is 0
    assert (out.returncode, out.stdout) == (0, "")


@pytest.mark.parametrize(
    ("pin", "message"),
    [
        (
            '"6.49.0"',
            'pins version "6.49.0" but the schema artifact is for 6.50.0; '
            "rebuild the artifact (build.py) or change the pin",
        ),
        (
            '"~> 6.50"',
            'version "~> 6.50" is not an exact pin; pin "6.50.0" (schema artifact version)',
        ),
    ],
)
def test_version_pin_must_match_the_schema_artifact(pin: str, message: str, tmp_path: Path) -> None:
    # GIVEN the google fixture pinned to something other than the artifact's exact version
    stack_dir = copy_stack(FIXTURES / "google", tmp_path / "stack")
    versions = stack_dir / "versions.tf"
    versions.write_text(versions.read_text().replace('"6.50.0"', pin))
    # WHEN the schema check runs
    findings = check_stack(stack_dir, SchemaSet()).findings
    # THEN the pin itself is the one error
    assert [(f.line, f.address, f.message) for f in findings] == [
        (line_of(versions, "google = {"), "required_providers.google", message)
    ]


def test_lock_file_must_select_the_schema_artifact_version(tmp_path: Path) -> None:
    # GIVEN the aws fixture with a lock file selecting another provider version
    stack_dir = copy_stack(FIXTURES / "aws", tmp_path / "stack")
    (stack_dir / ".terraform.lock.hcl").write_text(
        'provider "registry.terraform.io/hashicorp/aws" {\n  version = "5.99.0"\n}\n'
    )
    # WHEN the schema check runs
    findings = check_stack(stack_dir, SchemaSet()).findings
    # THEN the lock file is reported
    assert [(Path(f.file).name, f.message) for f in findings] == [
        (".terraform.lock.hcl", 'locks version "5.99.0" but the schema artifact is for 5.100.0')
    ]


@pytest.mark.parametrize(
    ("cloud", "provider"), [("aws", "aws"), ("gcp", "google"), ("azure", "azurerm")]
)
def test_repository_stack_passes_the_schema_check(cloud: str, provider: str) -> None:
    # GIVEN a stack of this repository
    directory = REPO_ROOT / "infra" / cloud
    assert any(directory.glob("*.tf")), f"infra/{cloud} has no Terraform files"
    # WHEN the schema check runs on it
    stack = check_stack(directory, SchemaSet())
    # THEN it has no findings, and its cloud's provider schema was used
    assert [str(f) for f in stack.findings] == []
    assert provider in stack.used


@pytest.mark.parametrize("source", ["fixture", "repository"])
def test_aws_stack_passes_both_checks(source: str, tmp_path: Path, plugin_dir: Path) -> None:
    # GIVEN the aws fixture or the repository's aws stack
    original = FIXTURES / "aws" if source == "fixture" else REPO_ROOT / "infra" / "aws"
    stack_dir = copy_stack(original, tmp_path / "stack")
    # WHEN terraform validate and the schema check both run
    errors = terraform_validate(stack_dir, plugin_dir)
    findings = check_stack(stack_dir, SchemaSet()).findings
    # THEN both accept it
    assert (errors, findings) == ([], [])


@pytest.mark.parametrize("case", AWS_AGREEMENT, ids=[p.id for p in AWS_AGREEMENT])
def test_aws_planted_error_fails_both_checks_on_the_same_line(
    case: Plant, tmp_path: Path, plugin_dir: Path
) -> None:
    # GIVEN the aws fixture with one planted mistake
    stack_dir = plant(case, tmp_path / "stack")
    # WHEN terraform validate and the schema check both run
    errors = terraform_validate(stack_dir, plugin_dir)
    findings = check_stack(stack_dir, SchemaSet()).findings
    # THEN both fail, pointing at the same line
    validate_lines = {e["range"]["start"]["line"] for e in errors if "range" in e}
    assert errors and findings
    assert {f.line for f in findings} == validate_lines


def test_committed_artifacts_are_small_and_record_their_versions() -> None:
    # GIVEN the committed schema artifacts
    paths = sorted(DEFAULT_SCHEMA_DIR.glob("*.json.gz"))
    # WHEN their headers are read
    headers = {}
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
        headers[path.name] = (raw["source"], raw["generated_from"], path.stat().st_size)
    # THEN each names the provider version in its file name and its origin, and stays small
    assert sorted(headers) == sorted(EXPECTED_ARTIFACTS)
    for name, (source, origin) in EXPECTED_ARTIFACTS.items():
        assert headers[name][0] == source
        assert origin in headers[name][1]
        assert headers[name][2] < MAX_ARTIFACT_BYTES


def test_docs_anchor_gives_the_terraform_name_not_a_naive_conversion() -> None:
    # GIVEN the azurerm artifact, built from jsii structs with camelCase property names
    azurerm = SchemaSet().pick("hashicorp/azurerm", "4.55.0")
    assert azurerm is not None
    app = azurerm.lookup("resources", "azurerm_linux_function_app")
    assert app is not None
    # WHEN a property whose naive snake_case would be wrong is looked up
    site_config = app.blocks["site_config"].block
    # THEN its name comes from the docs anchor (useBit32Worker -> use_32_bit_worker)
    assert "use_32_bit_worker" in site_config.attrs
    assert "use32_bit_worker" not in site_config.attrs


def test_extractor_distinguishes_blocks_attributes_and_enums() -> None:
    # GIVEN a minimal jsii manifest: a resource with a block, a map attribute and an enum
    link = "{@link https://registry.terraform.io/providers/x/y/1.0.0/docs/resources/thing#%s T#%s}"
    prefix = "p.thing"

    def prop(
        name: str, anchor: str, type_: dict[str, Any], summary: str = "", optional: bool = False
    ) -> dict[str, Any]:
        remarks = "Docs at Terraform Registry: " + link % (anchor, anchor)
        docs = {"summary": summary, "remarks": remarks}
        return {"name": name, "docs": docs, "type": type_, "optional": optional}

    types: dict[str, dict[str, Any]] = {
        f"{prefix}.Thing": {
            "kind": "class",
            "base": "cdktf.TerraformResource",
            "docs": {"summary": "Represents a {@link https://x/docs/resources/thing y_thing}."},
            "initializer": {
                "parameters": [{"name": "config", "type": {"fqn": f"{prefix}.ThingConfig"}}]
            },
            "properties": [{"name": "selfLink"}, {"name": "tier"}, {"name": "tierInput"}],
        },
        f"{prefix}.ThingConfig": {
            "datatype": True,
            "properties": [
                prop(
                    "tier",
                    "tier",
                    {"primitive": "string"},
                    summary='Tier. Possible values: ["A", "B"]',
                ),
                prop(
                    "labels",
                    "labels",
                    {"collection": {"kind": "map", "elementtype": {"primitive": "string"}}},
                    optional=True,
                ),
                prop("use32Bit", "use_32_bit", {"primitive": "boolean"}, optional=True),
                prop(
                    "rule",
                    "rule",
                    {"fqn": f"{prefix}.ThingRule"},
                    optional=True,
                    summary="rule block.",
                ),
            ],
        },
        f"{prefix}.ThingRule": {
            "datatype": True,
            "properties": [prop("x", "x", {"primitive": "number"})],
        },
    }
    # WHEN the extractor turns it into an artifact section
    out = JsiiExtractor(types).extract()
    # THEN names, kinds, limits, enums and computed-only attributes come out right
    assert out["resources"]["y_thing"] == {
        "attrs": {
            "tier": {"type": "string", "required": True, "enum": ["A", "B"]},
            "labels": {"type": "map"},
            "use_32_bit": {"type": "bool"},
        },
        "blocks": {
            "rule": {"max": 1, "block": {"attrs": {"x": {"type": "number", "required": True}}}}
        },
        "computed": ["self_link"],
    }


def test_enum_parsing_is_strict() -> None:
    # GIVEN docs texts in the styles of the google and azurerm providers
    google = 'Mode. Default value: "A" Possible values: ["A", "B"]'
    azure_ok = "The mode. Possible values are `Allow` or `Deny`. Defaults to `Allow`."
    azure_open = "Possible values include `http` and `grpc`."
    azure_prose = "Possible values are `id` or the `name` of your provider."
    # WHEN allowed values are read from them
    # THEN only exhaustive, machine-readable lists count
    assert enum_values(google, "string") == ["A", "B"]
    assert enum_values(google, "number") == []
    assert azure_enum_values(azure_ok) == ["Allow", "Deny"]
    assert azure_enum_values(azure_open) == []
    assert azure_enum_values(azure_prose) == []
