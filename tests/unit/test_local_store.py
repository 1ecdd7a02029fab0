"""The local-directory adapter: confinement, atomic replacement, stale temporaries."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from core.errors import StoreWriteError
from core.local_store import LocalDirectoryResultStore
from core.pipeline import process_message
from tests.conftest import files_outside

if TYPE_CHECKING:
    from pathlib import Path

ESCAPES = [
    "../escape",
    "../../escape",
    "/tmp/absolute",
    "..",
    ".",
    "sub/dir",
    "..\\windows",
    "nul\x00byte",
]


@pytest.mark.parametrize("task_id", ESCAPES)
def test_no_task_id_writes_outside_the_results_directory(
    tmp_path: Path, results_dir: Path, task_id: str
) -> None:
    # GIVEN a task whose id tries to leave the results directory
    store = LocalDirectoryResultStore(results_dir)
    raw = {"id": task_id, "data": {"num1": 1, "num2": 2}}
    # WHEN it is processed
    outcome = process_message(raw, store)
    # THEN it is rejected, its record is inside, and nothing exists outside
    assert outcome.code == "invalid_id"
    assert outcome.name.startswith("invalid-")
    assert (results_dir / f"{outcome.name}.err").is_file()
    assert files_outside(tmp_path, results_dir) == []
    assert sorted(p.name for p in results_dir.iterdir()) == [f"{outcome.name}.err"]


@pytest.mark.parametrize("name", ["../x", "a/b", "nul\x00"])
def test_the_adapter_itself_refuses_path_names(results_dir: Path, name: str) -> None:
    store = LocalDirectoryResultStore(results_dir)
    with pytest.raises(ValueError, match="not a plain file name"):
        store.write_result(name, "1")


def test_a_symlink_planted_at_the_result_name_is_replaced_not_followed(
    tmp_path: Path, results_dir: Path
) -> None:
    # GIVEN results/t.out is a symlink to a file outside
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (results_dir / "t.out").symlink_to(victim)
    # WHEN the result for t is written
    LocalDirectoryResultStore(results_dir).write_result("t", "3")
    # THEN the outside file is untouched and t.out is a regular file
    assert victim.read_text() == "precious"
    assert not (results_dir / "t.out").is_symlink()
    assert (results_dir / "t.out").read_text() == "3"


def test_results_directory_moved_after_open_still_receives_writes(tmp_path: Path) -> None:
    # The store writes relative to a directory descriptor, never by re-joining a path string.
    first = tmp_path / "first"
    store = LocalDirectoryResultStore(first)
    first.rename(tmp_path / "second")
    store.write_result("t", "1")
    assert (tmp_path / "second" / "t.out").read_text() == "1"
    assert not first.exists()


def test_write_into_a_removed_directory_is_a_transient_store_error(results_dir: Path) -> None:
    # GIVEN the results directory disappears after the store opened it
    store = LocalDirectoryResultStore(results_dir)
    results_dir.rmdir()
    # WHEN a result is written / THEN the failure is a StoreWriteError (retryable), not a crash
    with pytest.raises(StoreWriteError, match="cannot write"):
        store.write_result("t", "1")


def test_write_failure_on_a_full_device_is_a_store_error_and_leaves_no_temporary(
    results_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a device that fails every write with ENOSPC
    store = LocalDirectoryResultStore(results_dir)

    def no_space(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    # WHEN a result is written / THEN a StoreWriteError names the file and nothing is left
    with pytest.raises(StoreWriteError, match="No space left"):
        store.write_result("t", "1")
    monkeypatch.undo()
    assert list(results_dir.iterdir()) == []


def test_stale_temporaries_of_dead_writers_are_removed(results_dir: Path) -> None:
    dead_pid = 2**22 + 12345  # above Linux's pid_max default, so no such process
    stale = results_dir / f".t.out.{dead_pid}-0.tmp"
    live = results_dir / f".u.out.{os.getpid()}-0.tmp"
    stale.write_text("1")
    live.write_text("1")
    removed = LocalDirectoryResultStore(results_dir).remove_stale_temporaries()
    assert removed == 1
    assert not stale.exists()
    assert live.exists()


def test_has_result(results_dir: Path) -> None:
    store = LocalDirectoryResultStore(results_dir)
    assert not store.has_result("t")
    store.write_result("t", "1")
    assert store.has_result("t")


def test_durable_mode_writes_the_same_bytes(results_dir: Path) -> None:
    LocalDirectoryResultStore(results_dir, durable=True).write_result("t", "12")
    assert (results_dir / "t.out").read_bytes() == b"12"
