"""Reproducible deployment zips: the same sources always give the same bytes.

Entries are sorted, every timestamp is 1980-01-01 00:00:00, permissions are fixed (0644), and
only source files listed by the caller go in: no tests, caches or bytecode. Terraform's hash of
the zip therefore changes only when the code does.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_EXCLUDED_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "tests"}
_EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True)
class ZipEntry:
    """One file of a deployment zip: where it goes in the archive, and its bytes."""

    arcname: str
    data: bytes


def package_sources(
    root: Path, package: str, *, exclude: Iterable[str] = (), suffixes: Iterable[str] = (".py",)
) -> list[ZipEntry]:
    """The files of ``root/package`` whose suffix is in ``suffixes``, minus ``exclude``.

    ``exclude`` holds paths relative to the package (``"cli.py"``). Caches and bytecode never go in.
    """
    base = root / package
    skipped = set(exclude)
    wanted = set(suffixes)
    entries = []
    for path in sorted(base.rglob("*")):
        relative = path.relative_to(base).as_posix()
        if (
            not path.is_file()
            or relative in skipped
            or path.suffix in _EXCLUDED_SUFFIXES
            or path.suffix not in wanted
            or _EXCLUDED_DIRS.intersection(path.relative_to(base).parts)
        ):
            continue
        entries.append(ZipEntry(f"{package}/{relative}", path.read_bytes()))
    return entries


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


@dataclass(frozen=True)
class PackageSpec:
    """What one cloud's deployment zip holds."""

    provider: str
    default_output: str
    """Where ``adder package <provider>`` writes, relative to the working directory."""
    packages: dict[str, tuple[str, ...]]
    """Python packages to include, each with the package-relative paths to leave out."""
    root_files: dict[str, str]
    """Files placed at the zip's root: archive name -> path relative to the project root."""


def build_package(spec: PackageSpec, output: Path | None = None, root: Path | None = None) -> Path:
    """Build ``spec``'s zip from the source tree at ``root`` and return its path."""
    root = root or project_root()
    entries: list[ZipEntry] = []
    for package, exclude in spec.packages.items():
        entries += package_sources(root, package, exclude=exclude)
    for arcname, relative in spec.root_files.items():
        entries.append(ZipEntry(arcname, (root / relative).read_bytes()))
    return write_zip(output or Path(spec.default_output), entries)


def register_package_command(
    groups: dict[str, argparse._SubParsersAction[Any]], spec: PackageSpec
) -> None:
    """Add ``adder package <provider>`` for ``spec``."""
    parser = groups["package"].add_parser(
        spec.provider,
        help=f"build the {spec.provider} deployment zip",
        description=(
            f"Build the {spec.provider} deployment zip reproducibly: the same sources give a "
            "byte-identical file, so Terraform redeploys only when the code changes."
        ),
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(spec.default_output),
        help=f"where to write the zip (default: {spec.default_output})",
    )

    def handler(args: argparse.Namespace) -> int:
        path = build_package(spec, args.output)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"wrote {path} ({path.stat().st_size:,} bytes, sha256 {digest})")
        return 0

    parser.set_defaults(handler=handler)
