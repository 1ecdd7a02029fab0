"""Reproducible deployment zips: the same sources always give the same bytes.

Entries are sorted, every timestamp is 1980-01-01 00:00:00, permissions are fixed (0644), and
only the runtime files the cloud registry lists go in (core/clouds.py): no operator code, tests,
caches or bytecode. Terraform's hash of the zip therefore changes only when the code does.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.clouds import CORE_RUNTIME_MODULES

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

    from core.clouds import Cloud

FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ZipEntry:
    """One file of a deployment zip: where it goes in the archive, and its bytes."""

    arcname: str
    data: bytes


def package_files(root: Path, package: str, names: Iterable[str]) -> list[ZipEntry]:
    """The files ``names`` of ``root/package`` (an include list: nothing else goes in)."""
    return [ZipEntry(f"{package}/{name}", (root / package / name).read_bytes()) for name in names]


def write_zip(output: Path, entries: Iterable[ZipEntry]) -> Path:
    """Write ``entries`` to ``output`` reproducibly (atomically: a temp file, then rename)."""
    items = sorted(entries, key=lambda entry: entry.arcname)
    names = [entry.arcname for entry in items]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"duplicate zip entries: {sorted(duplicates)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(temp, "w") as archive:
        for entry in items:
            info = zipfile.ZipInfo(entry.arcname, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the permission bits below are honoured
            info.external_attr = (0o100644 & 0xFFFF) << 16
            archive.writestr(info, entry.data, compresslevel=9)
    temp.replace(output)
    return output


def project_root() -> Path:
    """The directory that holds ``core/`` (the source tree the zips are built from)."""
    return Path(__file__).resolve().parent.parent


def zip_entries(cloud: Cloud, root: Path | None = None) -> list[ZipEntry]:
    """What ``cloud``'s deployment zip holds: core's runtime modules, the cloud's runtime
    modules and its root files, from the source tree at ``root``."""
    root = root or project_root()
    entries = package_files(root, "core", CORE_RUNTIME_MODULES)
    entries += package_files(root, cloud.package, cloud.runtime_modules)
    for arcname, relative in cloud.root_files.items():
        entries.append(ZipEntry(arcname, (root / relative).read_bytes()))
    return entries


def build_package(cloud: Cloud, output: Path | None = None, root: Path | None = None) -> Path:
    """Build ``cloud``'s zip from the source tree at ``root`` and return its path."""
    return write_zip(output or Path(cloud.zip_path), zip_entries(cloud, root))


def register_package_command(
    groups: dict[str, argparse._SubParsersAction[Any]], cloud: Cloud
) -> None:
    """Add ``adder package <cloud>``."""
    parser = groups["package"].add_parser(
        cloud.name,
        help=f"build the {cloud.title} deployment zip",
        description=(
            f"Build the {cloud.title} deployment zip reproducibly: the same sources give a "
            "byte-identical file, so Terraform redeploys only when the code changes. It holds "
            "only the code that runs in the function (core's pipeline and the cloud's runtime)."
        ),
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(cloud.zip_path),
        help=f"where to write the zip (default: {cloud.zip_path})",
    )

    def handler(args: argparse.Namespace) -> int:
        path = build_package(cloud, args.output)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"wrote {path} ({path.stat().st_size:,} bytes, sha256 {digest})")
        return 0

    parser.set_defaults(handler=handler)
