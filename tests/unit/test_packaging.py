"""Every cloud's deployment zip holds the runtime and only the runtime, read from the registry."""

from __future__ import annotations

import ast
import importlib
import zipfile
from typing import TYPE_CHECKING

import pytest

from core.cli import build_parser
from core.clouds import CLOUDS, CORE_RUNTIME_MODULES
from core.errors import ConfigError
from core.packaging import build_package
from tests.conftest import REPO_ROOT
from tests.unit import fourth_cloud_ops

if TYPE_CHECKING:
    from pathlib import Path

PROJECT_PACKAGES = {"core", *(cloud.package for cloud in CLOUDS.values())}
OPERATOR_MODULES = {
    "core/cli.py",
    "core/cli_args.py",
    "core/config.py",
    "core/local.py",
    "core/local_store.py",
    "core/packaging.py",
    "core/progress.py",
    "core/runner.py",
    "core/task_source.py",
    "aws_lambda/autoscaling_lifecycle.py",  # the worker's Auto Scaling lifecycle completion
    *(f"core/ops/{path.name}" for path in (REPO_ROOT / "core" / "ops").glob("*.py")),
    *(f"core/worker/{path.name}" for path in (REPO_ROOT / "core" / "worker").glob("*.py")),
    *(
        path.relative_to(REPO_ROOT).as_posix()
        for cloud in CLOUDS.values()
        for pattern in ("job*.py", "sandbox/*.py", "*_receiver.py")
        for path in (REPO_ROOT / cloud.package).glob(pattern)
    ),
}
"""Code that runs on the operator's machine (and the local runner): never in a zip."""


def project_imports(source: bytes) -> set[str]:
    """The project modules a file imports, as zip paths (``core/task.py``), type-only
    imports (under ``if TYPE_CHECKING:``) left out."""
    tree = ast.parse(source)
    type_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {
        name.replace(".", "/") + ".py"
        for name in names
        if name.split(".")[0] in PROJECT_PACKAGES and "." in name
    }


@pytest.fixture(scope="module", params=sorted(CLOUDS))
def cloud_zip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cloud = CLOUDS[request.param]
    return build_package(cloud, tmp_path_factory.mktemp(cloud.name) / "function.zip")


def test_a_zip_holds_exactly_the_registry_runtime(cloud_zip: Path) -> None:
    with zipfile.ZipFile(cloud_zip) as archive:
        names = set(archive.namelist())
    packages = {name.split("/")[0] for name in names if "/" in name}
    [cloud] = [c for c in CLOUDS.values() if c.package in packages]
    expected = (
        {f"core/{name}" for name in CORE_RUNTIME_MODULES}
        | {f"{cloud.package}/{name}" for name in cloud.runtime_modules}
        | set(cloud.root_files)
    )
    assert names == expected
    assert not names & OPERATOR_MODULES


def test_every_project_module_a_zip_imports_is_in_the_zip(cloud_zip: Path) -> None:
    # GIVEN the zip's files / WHEN every runtime import of a project module is followed
    with zipfile.ZipFile(cloud_zip) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    # THEN none leads outside the zip (an operator module, or one the registry forgot)
    missing = {
        f"{name} imports {target}"
        for name, source in files.items()
        if name.endswith(".py")
        for target in project_imports(source)
        if target not in files and target.removesuffix(".py") + "/__init__.py" not in files
    }
    assert missing == set()


def test_every_module_of_the_tree_is_runtime_or_operator_code() -> None:
    # a new module must be placed on one side: listed as runtime (it ships) or operator
    shipped = {f"core/{name}" for name in CORE_RUNTIME_MODULES} | {
        f"{cloud.package}/{name}" for cloud in CLOUDS.values() for name in cloud.runtime_modules
    }
    roots = {path for cloud in CLOUDS.values() for path in cloud.root_files.values()}
    tree = {
        path.relative_to(REPO_ROOT).as_posix()
        for package in PROJECT_PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    unplaced = tree - shipped - OPERATOR_MODULES - roots - {"core/__main__.py", "core/clouds.py"}
    assert unplaced == set()
    assert not shipped & OPERATOR_MODULES


def test_the_cli_offers_every_registered_cloud_for_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    for command in ("package", "submit", "watch", "fetch", "redrive", "status"):
        for name in CLOUDS:
            with pytest.raises(SystemExit) as done:
                parser.parse_args([command, name, "--help"])
            assert done.value.code == 0, (command, name)
            assert f"adder {command} {name}" in capsys.readouterr().out


def test_a_fourth_cloud_in_the_registry_gets_a_package_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a registry entry for a cloud whose runtime is one module of a new folder
    (tmp_path / "core").mkdir()
    for name in CORE_RUNTIME_MODULES:
        (tmp_path / "core" / name).write_bytes((REPO_ROOT / "core" / name).read_bytes())
    (tmp_path / "fourth_cloud").mkdir()
    (tmp_path / "fourth_cloud" / "edge.py").write_text("from core.delivery import deliver\n")
    monkeypatch.setitem(CLOUDS, "fourth", fourth_cloud_ops.REGISTRY_ENTRY)
    monkeypatch.setattr("core.packaging.project_root", lambda: tmp_path)
    # WHEN `adder package fourth` runs
    from core.cli import main

    assert main(["package", "fourth", "--output", str(tmp_path / "fourth.zip")]) == 0
    # THEN its zip holds core's runtime and the new cloud's module
    with zipfile.ZipFile(tmp_path / "fourth.zip") as archive:
        assert "fourth_cloud/edge.py" in archive.namelist()
        assert "core/delivery.py" in archive.namelist()


@pytest.mark.parametrize("name", sorted(CLOUDS))
def test_each_cloud_fails_the_same_way_on_a_missing_setting(name: str) -> None:
    # GIVEN the cloud's store factory, as its entry point calls it
    module, _, function = CLOUDS[name].store_factory.partition(":")
    factory = getattr(importlib.import_module(module), function)
    # WHEN a required setting is missing / THEN one ConfigError names it and the stack
    with pytest.raises(ConfigError, match=r"^RESULTS_(BUCKET|CONTAINER) is not set: .*stack"):
        factory({"RESULTS_PREFIX": "p"})
    # AND with its settings it builds a store (no network: clients are made on first write)
    settings = {
        "RESULTS_BUCKET": "b",
        "RESULTS_CONTAINER": "c",
        "RESULTS_PREFIX": "/p/",
        "RESULTS_BLOB_ACCOUNT_URL": "https://account.blob.core.windows.net",
    }
    store = factory(settings)
    assert store.key("t", ".out") == "p/t.out"
