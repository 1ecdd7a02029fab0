"""The deployment zip and the ``adder ... gcp`` commands' wiring (no network)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest

from core.cli import build_parser, main
from core.clouds import CLOUDS
from core.packaging import build_package
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

RUNTIME_MODULES = {"__init__.py", "envelope.py", "gcs_store.py", "handler.py", "logs.py"}


def test_zip_has_main_at_its_root_and_only_runtime_modules(tmp_path: Path) -> None:
    # GIVEN the gcp package spec / WHEN the zip is built twice
    first = build_package(CLOUDS["gcp"], tmp_path / "a.zip")
    second = build_package(CLOUDS["gcp"], tmp_path / "b.zip")
    # THEN it is byte-identical, main.py and requirements.txt sit at the root
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert "main.py" in names and "requirements.txt" in names
    assert "core/pipeline.py" in names
    # AND gcp_function/ holds the runtime modules only (no CLI, no second main.py)
    assert {n.split("/", 1)[1] for n in names if n.startswith("gcp_function/")} == RUNTIME_MODULES
    with zipfile.ZipFile(first) as archive:
        assert archive.read("main.py") == (REPO_ROOT / "gcp_function" / "main.py").read_bytes()


def test_requirements_pin_the_runtime_sdks_exactly() -> None:
    lines = (REPO_ROOT / "gcp_function" / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert set(pins) == {"functions-framework", "google-cloud-storage"}
    from importlib.metadata import version

    # the versions the tests and the benchmark ran with
    assert pins == {name: version(name) for name in pins}


def test_unpacked_zip_imports_on_its_own_without_loading_the_storage_sdk(tmp_path: Path) -> None:
    # GIVEN the zip unpacked, as Cloud Build sees it
    archive = build_package(CLOUDS["gcp"], tmp_path / "f.zip")
    source = tmp_path / "source"
    zipfile.ZipFile(archive).extractall(source)
    # WHEN main.py is imported from there (no PYTHONPATH to the repository)
    code = (
        "import sys, main, core, gcp_function; "
        "print(core.__file__); print(gcp_function.__file__); "
        "print('google.cloud.storage' in sys.modules, callable(main.process_task))"
    )
    env = {"RESULTS_BUCKET": "b", "RESULTS_PREFIX": "p", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # THEN core and gcp_function come from the zip, and the storage SDK is not loaded yet
    assert out[0].startswith(str(source))
    assert out[1].startswith(str(source))
    assert out[2] == "False True"


def test_submit_and_status_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["submit", "gcp", "--topic", "projects/p/topics/t", "tasks.jsonl"])
    assert (args.topic, args.tasks, args.attempts, args.progress) == (
        "projects/p/topics/t",
        "tasks.jsonl",
        3,
        None,
    )
    args = parser.parse_args(["status", "gcp", "--bucket", "b", "--prefix", "results"])
    assert (args.bucket, args.prefix, args.dead_letter_subscription) == ("b", "results", None)


def test_submit_without_the_pubsub_sdk_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN google-cloud-pubsub cannot be imported
    monkeypatch.setitem(sys.modules, "google.cloud.pubsub_v1", None)
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"id": "a", "data": {"num1": 1, "num2": 2}}\n')
    # WHEN submit runs / THEN it exits 2 with the install hint
    assert main(["submit", "gcp", "--topic", "projects/p/topics/t", str(tasks)]) == 2
    assert "pip install 'adder-tasks[gcp]'" in capsys.readouterr().err


def test_attempts_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["submit", "gcp", "--topic", "projects/p/topics/t", "x", "--attempts", "0"]
        )
    assert "must be 1 or more" in capsys.readouterr().err
