"""Security: no credentials in any committed file, least privilege in every stack.

The Terraform checks read the parsed stacks (python-hcl2, via tools/tfschema/hcl.py):
no wildcard action or resource in an Allow statement, every grant scoped to this stack's own
queue, bucket, container, topic or log group, no project-, subscription- or group-wide role.
Each check is also shown to fail on a planted violation.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from core.config import load_config
from tests.conftest import REPO_ROOT
from tests.reliability.ledger import Row
from tools.tfschema.hcl import Block, Body, parse_file, parse_text, unquote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# Azurite's development account key is public (Microsoft documents it for every emulator user);
# it is the one key-shaped string the repository may contain.
AZURITE_PUBLIC_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}\b"
    ),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "GCP service-account key": re.compile(r"\"private_key_id\"\s*:\s*\"[0-9a-f]{20,}\""),
    "Azure storage account key": re.compile(r"AccountKey=([A-Za-z0-9+/]{60,}={0,2})"),
    "Azure shared access key": re.compile(r"SharedAccessKey=[A-Za-z0-9+/]{30,}={0,2}"),
    "SAS signature": re.compile(r"[?&]sig=[A-Za-z0-9%+/]{30,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
}
OVERLY_BROAD_ROLES = {
    "roles/owner",
    "roles/editor",
    "roles/viewer",
    "roles/storage.admin",
    "roles/storage.objectAdmin",
    "roles/pubsub.admin",
    "roles/pubsub.editor",
    "roles/run.admin",
    "Owner",
    "Contributor",
    "User Access Administrator",
}


def committed_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [REPO_ROOT / name for name in listed.split("\0") if name]


def find_secrets(text: str) -> list[str]:
    """The kinds of credential that ``text`` contains."""
    found = []
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            if kind == "Azure storage account key" and match.group(1) == AZURITE_PUBLIC_KEY:
                continue
            found.append(kind)
    return found


def test_no_committed_file_holds_a_credential(reliability_row: Callable[[Row], None]) -> None:
    # GIVEN every file git tracks (binary files are read as text with replacement)
    files = committed_files()
    assert len(files) > 100
    # WHEN each is scanned for credential shapes / THEN none is found
    leaks = {
        str(path.relative_to(REPO_ROOT)): kinds
        for path in files
        if path.is_file() and (kinds := find_secrets(path.read_text("utf-8", errors="replace")))
    }
    assert leaks == {}
    reliability_row(
        Row(
            "security",
            "repository",
            "credential scan of every committed file",
            cases=len(files),
            messages=0,
        )
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("key = AKIA" + "ABCDEFGHIJKLMNOP", "AWS access key id"),
        ("aws_secret_access_key = " + "a" * 40, "AWS secret access key"),
        ("-----BEGIN RSA " + "PRIVATE KEY-----", "private key"),
        ('{"private_key_id": "' + "0123456789abcdef" * 2 + '"}', "GCP service-account key"),
        ("AccountName=x;AccountKey=" + "B" * 86 + "==", "Azure storage account key"),
        (
            "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=" + "c" * 43 + "=",
            "Azure shared access key",
        ),
        ("https://a.blob.core.windows.net/c?sv=2022&sig=" + "d" * 43, "SAS signature"),
    ],
)
def test_the_scan_catches_each_kind_of_credential(text: str, kind: str) -> None:
    assert kind in find_secrets(text)


def test_the_azurite_public_key_is_the_only_allowed_exception() -> None:
    assert find_secrets(f"AccountKey={AZURITE_PUBLIC_KEY};") == []


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "examples").glob("*.json")), ids=lambda p: p.name
)
def test_example_configs_hold_no_credentials(path: Path) -> None:
    assert load_config(path).warnings == []
    assert find_secrets(path.read_text()) == []


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_tfvars_examples_hold_no_credentials(cloud: str) -> None:
    text = (REPO_ROOT / "infra" / cloud / "terraform.tfvars.example").read_text()
    assert find_secrets(text) == []
    assert not re.search(r"(?im)^\s*(access_key|secret_key|client_secret|password)\s*=", text)


# --- least privilege on the parsed stacks ------------------------------------------------


@dataclass(frozen=True)
class Finding:
    where: str
    problem: str


def stack(directory: Path) -> Body:
    """Every top-level block of a stack's ``.tf`` files, as one body."""
    merged = Body()
    for path in sorted(directory.glob("*.tf")):
        merged.blocks.extend(parse_file(path).blocks)
    return merged


def literal(value: Any) -> Any:
    """python-hcl2 keeps quotes on string literals; drop them (recursively in lists)."""
    if isinstance(value, list):
        return [literal(item) for item in value]
    return unquote(value) if isinstance(value, str) else value


def attribute(block: Block, name: str) -> Any:
    found = block.body.attribute(name)
    return None if found is None else literal(found.value)


def policy_statements(document: Block) -> Iterator[Block]:
    yield from document.body.blocks_of("statement")
    for dynamic in document.body.blocks_of("dynamic"):
        if dynamic.labels[:1] == ("statement",):
            yield from dynamic.body.blocks_of("content")


def aws_findings(body: Body) -> list[Finding]:
    """Allow statements with wildcards or with resources outside this stack."""
    findings = []
    for block in body.blocks_of("data"):
        if block.labels[0] != "aws_iam_policy_document":
            continue
        for statement in policy_statements(block):
            where = f"data.aws_iam_policy_document.{block.labels[1]}"
            if (attribute(statement, "effect") or "Allow") != "Allow":
                continue  # a Deny can only take permissions away
            if statement.body.blocks_of("principals"):
                continue  # a trust policy: who may assume the role, not what it may do
            actions = attribute(statement, "actions") or []
            resources = attribute(statement, "resources") or []
            findings += [
                Finding(where, f"wildcard action {a!r}")
                for a in actions
                if a == "*" or a.endswith(":*")
            ]
            findings += [Finding(where, f"wildcard resource {r!r}") for r in resources if r == "*"]
            findings += [
                Finding(where, f"resource {r!r} is not one of this stack's resources")
                for r in resources
                if not re.search(r"\$\{(aws_[a-z0-9_]+\.[a-z0-9_]+\.arn|statement\.value)", r)
            ]
    for block in body.blocks_of("resource"):
        if block.labels[0] in {"aws_iam_role_policy_attachment", "aws_iam_policy_attachment"}:
            findings.append(
                Finding(f"{block.labels[0]}.{block.labels[1]}", "managed policy attached")
            )
    return findings


def gcp_findings(body: Body) -> list[Finding]:
    """Project-wide grants, broad roles, and grants not tied to one of this stack's resources."""
    findings = []
    scope_keys = ("bucket", "topic", "subscription", "name", "service_account_id")
    for block in body.blocks_of("resource"):
        kind, name = block.labels[0], block.labels[1]
        where = f"{kind}.{name}"
        if kind.startswith("google_project_iam") and kind != "google_project_iam_custom_role":
            findings.append(Finding(where, "project-wide grant"))
        if kind == "google_project_iam_custom_role":
            permissions = sorted(attribute(block, "permissions") or [])
            if permissions != ["storage.objects.create", "storage.objects.delete"]:
                findings.append(Finding(where, f"unexpected permissions {permissions}"))
        if kind.endswith("_iam_member") or kind.endswith("_iam_binding"):
            role = attribute(block, "role")
            if role in OVERLY_BROAD_ROLES:
                findings.append(Finding(where, f"broad role {role}"))
            scopes = [attribute(block, key) for key in scope_keys if attribute(block, key)]
            if not any("${google_" in str(scope) for scope in scopes):
                findings.append(Finding(where, "not scoped to one of this stack's resources"))
    return findings


def azure_findings(body: Body) -> list[Finding]:
    """Role assignments with broad roles or at subscription/resource-group scope."""
    findings = []
    for block in body.blocks_of("resource"):
        if block.labels[0] != "azurerm_role_assignment":
            continue
        where = f"azurerm_role_assignment.{block.labels[1]}"
        role = attribute(block, "role_definition_name")
        scope = str(attribute(block, "scope"))
        if role in OVERLY_BROAD_ROLES:
            findings.append(Finding(where, f"broad role {role}"))
        if (
            "azurerm_resource_group" in scope
            or "subscription" in scope
            or "${azurerm_" not in scope
        ):
            findings.append(Finding(where, f"scope {scope} is wider than one resource"))
    return findings


CHECKS: dict[str, Callable[[Body], list[Finding]]] = {
    "aws": aws_findings,
    "gcp": gcp_findings,
    "azure": azure_findings,
}


@pytest.mark.parametrize("cloud", sorted(CHECKS))
def test_stack_grants_least_privilege(cloud: str, reliability_row: Callable[[Row], None]) -> None:
    # GIVEN the parsed stack / WHEN its grants are checked / THEN none is too broad
    body = stack(REPO_ROOT / "infra" / cloud)
    assert CHECKS[cloud](body) == []
    grants = sum(
        1
        for block in body.blocks
        if block.labels and ("iam" in block.labels[0] or "role_assignment" in block.labels[0])
    )
    assert grants >= 3
    reliability_row(
        Row("security", cloud, "least privilege of the Terraform grants", cases=grants, messages=0)
    )


def test_aws_role_is_scoped_to_its_own_queue_bucket_prefix_and_log_group() -> None:
    body = stack(REPO_ROOT / "infra" / "aws")
    (document,) = [
        b for b in body.blocks_of("data") if b.labels == ("aws_iam_policy_document", "this")
    ]
    scoped = {
        attribute(s, "sid"): attribute(s, "resources")
        for s in policy_statements(document)
        if attribute(s, "sid") != "UseCustomerManagedKey"
    }
    assert scoped == {
        "ConsumeTaskQueue": ["${aws_sqs_queue.this.arn}"],
        "WriteResults": ["${aws_s3_bucket.results.arn}/${local.results_key_prefix}*"],
        "WriteOwnLogs": ["${aws_cloudwatch_log_group.this.arn}:*"],
    }


@pytest.mark.parametrize(
    ("cloud", "planted", "problem"),
    [
        (
            "aws",
            'data "aws_iam_policy_document" "x" {\n  statement {\n    actions   = ["s3:*"]\n'
            '    resources = ["*"]\n  }\n}\n',
            "wildcard action 's3:*'",
        ),
        (
            "aws",
            'data "aws_iam_policy_document" "x" {\n  statement {\n'
            '    actions   = ["s3:PutObject"]\n'
            '    resources = ["arn:aws:s3:::someone-elses-bucket/*"]\n  }\n}\n',
            "is not one of this stack's resources",
        ),
        (
            "gcp",
            'resource "google_project_iam_member" "x" {\n  project = var.project_id\n'
            '  role    = "roles/storage.objectCreator"\n  member  = "serviceAccount:x"\n}\n',
            "project-wide grant",
        ),
        (
            "gcp",
            'resource "google_storage_bucket_iam_member" "x" {\n  bucket = "shared-bucket"\n'
            '  role   = "roles/storage.admin"\n  member = "serviceAccount:x"\n}\n',
            "broad role roles/storage.admin",
        ),
        (
            "azure",
            'resource "azurerm_role_assignment" "x" {\n'
            "  scope                = azurerm_resource_group.this.id\n"
            '  role_definition_name = "Storage Blob Data Contributor"\n'
            '  principal_id         = "x"\n}\n',
            "wider than one resource",
        ),
    ],
)
def test_the_checks_catch_a_planted_violation(cloud: str, planted: str, problem: str) -> None:
    findings = CHECKS[cloud](parse_text(planted))
    assert any(problem in finding.problem for finding in findings), json.dumps(
        [f.problem for f in findings]
    )
