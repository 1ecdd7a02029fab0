"""The results-store contract, run against the local-directory adapter and the unit-test fake."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from core.local_store import LocalDirectoryResultStore
from tests.store_contract import Reader, ResultStoreContract
from tests.unit.fakes import InMemoryResultStore

if TYPE_CHECKING:
    from pathlib import Path


class TestLocalDirectoryStore(ResultStoreContract):
    @pytest.fixture
    def store(self, results_dir: Path) -> LocalDirectoryResultStore:
        return LocalDirectoryResultStore(results_dir)

    @pytest.fixture
    def read(self, results_dir: Path) -> Reader:
        def reader(name: str) -> bytes | None:
            path = results_dir / name
            return path.read_bytes() if path.exists() else None

        return reader

    @pytest.fixture
    def broken_store(self, tmp_path: Path) -> LocalDirectoryResultStore:
        # a results directory removed after the store opened it: every write fails (ENOENT)
        directory = tmp_path / "gone"
        store = LocalDirectoryResultStore(directory)
        directory.rmdir()
        return store


class TestInMemoryStore(ResultStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryResultStore:
        return InMemoryResultStore()

    @pytest.fixture
    def read(self, store: InMemoryResultStore) -> Reader:
        return store.objects.get

    @pytest.fixture
    def broken_store(self) -> InMemoryResultStore:
        return InMemoryResultStore(fail_all=True)
