"""The function in the packed layout, in the real functions-framework server, and reading packs
back from the bucket: shared by the integration tests and the reliability gauntlet."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.packing import PACKED_DIR, PackedRecord, unpack
from tests.integration.gcp.conftest import function_running

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.integration.gcp.conftest import FunctionServer

SERVER_THREADS = 4
"""The THREADS ``function_running`` gives the server: the most requests one pack can hold."""


@contextmanager
def packed_function_running(
    source: Path, emulator: str, bucket: str, prefix: str, log: Path, *, max_wait_ms: int
) -> Iterator[FunctionServer]:
    """``function_running`` with ``RESULTS_LAYOUT=packed`` and a ``max_wait_ms`` window (a
    pack holds up to ``SERVER_THREADS`` requests, ``PACK_MAX_BATCH``'s default). The settings
    are in this process's environment only while the server starts, so no other server
    started meanwhile picks them up."""
    settings = {"RESULTS_LAYOUT": "packed", "PACK_MAX_WAIT_MS": str(max_wait_ms)}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        starting = function_running(source, emulator, bucket, prefix, log)
        server = starting.__enter__()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield server
    finally:
        starting.__exit__(None, None, None)


def packs(gcs_client: Any, bucket: str, prefix: str) -> dict[str, list[PackedRecord]]:
    """Every pack under ``{prefix}/packed/``, by object name, with its records; an assertion
    error when anything else is under the prefix (the packed layout writes packs only)."""
    found: dict[str, list[PackedRecord]] = {}
    for blob in gcs_client.list_blobs(bucket, prefix=f"{prefix}/"):
        assert blob.name.startswith(f"{prefix}/{PACKED_DIR}/"), f"not a pack: {blob.name}"
        # bucket.blob(...) quotes the name itself; the emulator's mediaLink may name a proxy
        data = gcs_client.bucket(bucket).blob(blob.name).download_as_bytes()
        found[blob.name] = unpack(data)
    return found


def unpacked_files(gcs_client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """The files the packs under ``prefix`` unpack to (``{name}{suffix}`` -> bytes), as the
    default layout would have written them; a record in two packs must be the same in both."""
    files: dict[str, bytes] = {}
    for records in packs(gcs_client, bucket, prefix).values():
        for record in records:
            earlier = files.setdefault(record.file_name, record.content)
            assert earlier == record.content, f"{record.file_name} differs between packs"
    return files
