"""Security scan of every stack with checkov: zero failed checks, every skip justified inline.

checkov pins old versions of boto3 and friends, so it lives in its own virtualenv
(``.cache/checkov-venv``), created on first use.
"""

from __future__ import annotations

import json
import re
import subprocess
import venv
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT
from tests.support.tools import require

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.infra

CHECKOV_VERSION = "3.3.30"
VENV = REPO_ROOT / ".cache" / "checkov-venv"
STACKS = ["aws", "gcp", "azure"]
SKIP_COMMENT = re.compile(r"#checkov:skip=(CKV2?_[A-Z]+_\d+):(.*)")


@pytest.fixture(scope="session")
def checkov() -> Path:
    binary = VENV / "bin" / "checkov"
    if not binary.exists():
        venv.create(VENV, with_pip=True)
        install = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"],
            capture_output=True,
            text=True,
            check=False,
        )
        require(install.returncode == 0, f"could not install checkov: {install.stderr[-500:]}")
    return binary


def scan(checkov: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """checkov's offline Terraform scan of ``directory``, as JSON on stdout."""
    return subprocess.run(
        [
            str(checkov),
            "-d",
            str(directory),
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "--skip-download",
            "--output",
            "json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("cloud", STACKS)
def test_checkov_finds_no_failed_check(checkov: Path, cloud: str) -> None:
    # GIVEN a stack / WHEN checkov scans it offline
    result = scan(checkov, REPO_ROOT / "infra" / cloud)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = reports[0]["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    # THEN nothing fails, and it really checked something
    assert failed == []
    assert summary["passed"] > 5


@pytest.mark.parametrize("cloud", STACKS)
def test_every_skip_gives_a_reason(cloud: str) -> None:
    skips = [
        (path.name, match.group(1), match.group(2).strip())
        for path in (REPO_ROOT / "infra" / cloud).glob("*.tf")
        for match in SKIP_COMMENT.finditer(path.read_text())
    ]
    assert all(len(reason) >= 20 for _, _, reason in skips), skips


def test_the_scan_would_fail_on_an_insecure_bucket(checkov: Path, tmp_path: Path) -> None:
    # GIVEN a bucket with a public ACL and no encryption settings
    (tmp_path / "main.tf").write_text(
        'resource "aws_s3_bucket" "bad" {\n  bucket = "x"\n}\n'
        'resource "aws_s3_bucket_acl" "bad" {\n  bucket = aws_s3_bucket.bad.id\n'
        '  acl    = "public-read"\n}\n'
    )
    result = scan(checkov, tmp_path)
    assert result.returncode != 0
    assert json.loads(result.stdout)["summary"]["failed"] > 0
