"""Check Terraform stacks against committed provider schemas (offline ``terraform validate``).

Usage (from the repository root)::

    python -m tools.tfschema infra/gcp infra/azure infra/aws
    python -m tools.tfschema.check --schemas tools/tfschema/schemas infra/gcp

Prints one ``file:line: address: message`` line per error on stdout, a summary per stack on
stderr, and exits 1 when any error was found (2 on usage errors).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .body import Finding, Meta, Scope, Site, check_body, suggestion
from .hcl import Attribute, Block, Body, HclParseError, parse_file
from .schema import (
    DEFAULT_SCHEMA_DIR,
    AttrSchema,
    BlockSchema,
    ProviderSchema,
    SchemaSet,
    normalize_source,
)
from .values import classify, object_items

if TYPE_CHECKING:
    from collections.abc import Iterable

RESOURCE_META = Meta(
    attrs=frozenset({"count", "for_each", "depends_on", "provider"}),
    blocks=frozenset({"lifecycle", "provisioner", "connection"}),
)
DATA_META = Meta(
    attrs=frozenset({"count", "for_each", "depends_on", "provider"}),
    blocks=frozenset({"lifecycle"}),
)
PROVIDER_META = Meta(attrs=frozenset({"alias", "version"}))
# terraform's built-in provider (terraform.io/builtin/terraform) has no plugin to ask
BUILTIN = {
    ("resources", "terraform_data"): BlockSchema(
        attrs={"input": AttrSchema(), "triggers_replace": AttrSchema()},
        computed=frozenset({"id", "output"}),
    ),
    ("data_sources", "terraform_remote_state"): BlockSchema(
        attrs={
            "backend": AttrSchema(type="string", required=True),
            "config": AttrSchema(),
            "defaults": AttrSchema(),
            "workspace": AttrSchema(type="string"),
        },
        computed=frozenset({"outputs"}),
    ),
}
EXACT_VERSION_RE = re.compile(r"\s*=?\s*v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)\s*")
LOCK_FILE = ".terraform.lock.hcl"


@dataclass(frozen=True)
class Requirement:
    """One ``required_providers`` entry."""

    local: str
    source: str
    constraint: str | None
    file: str
    line: int | None


@dataclass
class Stack:
    """Parsed files of one stack and everything found while checking it."""

    directory: Path
    schemas: SchemaSet
    files: list[tuple[str, Body]] = field(default_factory=list)
    requirements: dict[str, Requirement] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: int = 0
    used: dict[str, ProviderSchema] = field(default_factory=dict)
    announced: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- providers


def exact_version(constraint: str | None) -> str | None:
    """``"6.50.0"`` or ``"= 6.50.0"`` -> ``6.50.0``; anything else -> None."""
    if constraint is None:
        return None
    match = EXACT_VERSION_RE.fullmatch(constraint)
    return match.group(1) if match else None


def literal(value: object) -> str | None:
    """Plain string content of a serialized value, if it is one."""
    return classify(value).text


def requirement(attr: Attribute, file: str) -> Requirement:
    """``name = { source = "...", version = "..." }`` (or the legacy ``name = "version"``)."""
    if isinstance(attr.value, dict):
        items = dict(object_items(attr.value))
        source = literal(items.get("source")) or f"hashicorp/{attr.name}"
        constraint = literal(items.get("version"))
    else:
        source, constraint = f"hashicorp/{attr.name}", literal(attr.value)
    return Requirement(attr.name, normalize_source(source), constraint, file, attr.line)


def collect_requirements(stack: Stack) -> None:
    """Read ``terraform { required_providers { ... } }`` from every file."""
    for file, body in stack.files:
        for terraform in body.blocks_of("terraform"):
            for block in terraform.body.blocks_of("required_providers"):
                for attr in block.body.attributes:
                    stack.requirements[attr.name] = requirement(attr, file)


def check_pins(stack: Stack) -> None:
    """Providers with a schema artifact must pin exactly the artifact's version."""
    for req in stack.requirements.values():
        available = stack.schemas.versions(req.source)
        if not available:
            continue
        versions = ", ".join(available)
        pinned = exact_version(req.constraint)
        address = f"required_providers.{req.local}"
        if req.constraint is None:
            message = f'no version constraint; pin "{versions}" (schema artifact version)'
        elif pinned is None:
            message = (
                f'version "{req.constraint}" is not an exact pin; pin "{versions}" '
                "(schema artifact version)"
            )
        elif pinned not in available:
            message = (
                f'pins version "{pinned}" but the schema artifact is for {versions}; '
                "rebuild the artifact (build.py) or change the pin"
            )
        else:
            continue
        stack.findings.append(Finding(req.file, req.line or 0, address, message))


def check_lock_file(stack: Stack) -> None:
    """A committed lock file must select the artifact's version too."""
    lock = stack.directory / LOCK_FILE
    if not lock.exists():
        return
    name = str(lock)
    try:
        body = parse_file(lock)
    except HclParseError as exc:
        stack.findings.append(Finding(name, exc.line or 0, "", f"parse error: {exc}"))
        return
    for block in body.blocks_of("provider"):
        available = stack.schemas.versions(block.labels[0]) if block.labels else []
        version_attr = block.body.attribute("version")
        version = literal(version_attr.value) if version_attr else None
        if available and version not in available:
            expected = ", ".join(available)
            stack.findings.append(
                Finding(
                    name,
                    block.line or 0,
                    f"provider.{block.labels[0]}",
                    f'locks version "{version}" but the schema artifact is for {expected}',
                )
            )


def provider_for(stack: Stack, local: str, file: str, line: int | None) -> ProviderSchema | None:
    """Schema for a provider local name, with a warning or pin error when unusable."""
    req = stack.requirements.get(local)
    source = req.source if req else normalize_source(f"hashicorp/{local}")
    schema = stack.schemas.pick(source, exact_version(req.constraint) if req else None)
    if local in stack.announced:
        return schema
    stack.announced.add(local)
    if schema is None:
        stack.warnings.append(
            f"{file}:{line or 0}: warning: no schema artifact for provider "
            f'"{local}" ({source}); its blocks are not checked'
        )
    elif req is None:
        stack.findings.append(
            Finding(
                file,
                line or 0,
                f"provider.{local}",
                f'provider "{local}" is not declared in required_providers; '
                f'pin "{schema.version}" (schema artifact version)',
            )
        )
    return schema


def local_provider(block: Block) -> str:
    """Provider local name of a resource/data block (``provider`` meta-argument or prefix)."""
    attr = block.body.attribute("provider")
    if attr is not None and isinstance(attr.value, str):
        ref = attr.value.removeprefix("${").removesuffix("}").strip('"')
        return ref.split(".")[0]
    return block.labels[0].split("_")[0] if block.labels else ""


# --------------------------------------------------------------------------- blocks


def provider_schema(
    stack: Stack, file: str, block: Block, mode: str, address: str
) -> BlockSchema | None:
    """Schema of a resource/data block from its provider's artifact (None: not checkable)."""
    provider = provider_for(stack, local_provider(block), file, block.line)
    if provider is None:
        return None
    stack.used[provider.name] = provider
    type_name = block.labels[0]
    schema = provider.lookup(mode, type_name)
    if schema is None:
        kind = "resource" if mode == "resources" else "data source"
        hint = suggestion(type_name, provider.names(mode))
        message = f'unknown {kind} type "{type_name}"{hint}'
        stack.findings.append(Finding(file, block.line or 0, address, message))
    return schema


def check_resource(stack: Stack, file: str, block: Block, mode: str) -> None:
    """A ``resource`` or ``data`` block."""
    if len(block.labels) != 2:
        stack.findings.append(
            Finding(file, block.line or 0, block.type, f"{block.type} block needs two labels")
        )
        return
    type_name, name = block.labels
    address = f"{type_name}.{name}" if mode == "resources" else f"data.{type_name}.{name}"
    schema = BUILTIN.get((mode, type_name)) or provider_schema(stack, file, block, mode, address)
    if schema is None:
        return
    scope = Scope(file, address, schema)
    if block.body.attribute("count") and block.body.attribute("for_each"):
        scope.report(block.line, '"count" and "for_each" cannot be used together')
    meta = RESOURCE_META if mode == "resources" else DATA_META
    check_body(Site(scope, schema, line=block.line, meta=meta), block.body)
    stack.findings.extend(scope.findings)
    stack.checked += 1


def check_provider_block(stack: Stack, file: str, block: Block) -> None:
    """A ``provider "x" { ... }`` configuration block."""
    if not block.labels:
        return
    provider = provider_for(stack, block.labels[0], file, block.line)
    if provider is None:
        return
    stack.used[provider.name] = provider
    schema = provider.provider_config()
    scope = Scope(file, f"provider.{block.labels[0]}", schema)
    check_body(Site(scope, schema, line=block.line, meta=PROVIDER_META), block.body)
    stack.findings.extend(scope.findings)
    stack.checked += 1


def check_top_level(stack: Stack, file: str, body: Body) -> None:
    """Every resource, data, provider and check-scoped data block of one file."""
    for block in body.blocks:
        if block.type == "resource":
            check_resource(stack, file, block, "resources")
        elif block.type == "data":
            check_resource(stack, file, block, "data_sources")
        elif block.type == "provider":
            check_provider_block(stack, file, block)
        elif block.type == "check":
            for data in block.body.blocks_of("data"):
                check_resource(stack, file, data, "data_sources")


# --------------------------------------------------------------------------- stacks


def load_stack(directory: Path, schemas: SchemaSet) -> Stack:
    """Parse every ``*.tf`` file of a stack directory (parse errors become findings)."""
    stack = Stack(directory, schemas)
    for path in sorted(directory.glob("*.tf")):
        try:
            stack.files.append((str(path), parse_file(path)))
        except HclParseError as exc:
            stack.findings.append(Finding(str(path), exc.line or 0, "", f"parse error: {exc}"))
    if any(directory.glob("*.tf.json")):
        stack.warnings.append(f"{directory}: warning: *.tf.json files are not checked")
    return stack


def check_stack(directory: Path, schemas: SchemaSet) -> Stack:
    """Check one stack; findings and warnings are on the returned object."""
    stack = load_stack(directory, schemas)
    collect_requirements(stack)
    check_pins(stack)
    check_lock_file(stack)
    for file, body in stack.files:
        check_top_level(stack, file, body)
    stack.findings.sort()
    return stack


def summary(stack: Stack) -> str:
    """One line for stderr."""
    providers = ", ".join(f"{p.name} {p.version}" for p in stack.used.values()) or "no provider"
    return (
        f"tfschema: {stack.directory}: {len(stack.files)} files, {stack.checked} blocks "
        f"checked against {providers}: {len(stack.findings)} error(s)"
    )


def run(directories: Iterable[Path], schemas: SchemaSet) -> int:
    """Check stacks, print findings, return the exit code."""
    failed = False
    for directory in directories:
        stack = check_stack(directory, schemas)
        for finding in stack.findings:
            print(finding)
        for warning in stack.warnings:
            print(warning, file=sys.stderr)
        print(summary(stack), file=sys.stderr)
        failed = failed or bool(stack.findings)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.tfschema",
        description="Check Terraform stacks against provider schemas without provider plugins.",
    )
    parser.add_argument("stacks", nargs="+", type=Path, help="stack directories (*.tf)")
    parser.add_argument(
        "--schemas",
        type=Path,
        default=DEFAULT_SCHEMA_DIR,
        help="directory of <provider>-<version>.json.gz artifacts",
    )
    args = parser.parse_args(argv)
    missing = [d for d in args.stacks if not d.is_dir() or not any(d.glob("*.tf"))]
    if missing:
        parser.error(f"not a stack directory with *.tf files: {', '.join(map(str, missing))}")
    return run(args.stacks, SchemaSet(args.schemas))


if __name__ == "__main__":
    sys.exit(main())
