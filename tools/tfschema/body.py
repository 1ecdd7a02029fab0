"""Check one resource, data source or provider body against its provider schema."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .hcl import Attribute, Block, Body
from .schema import BlockSchema
from .values import classify, enum_problem, nested_objects, object_items, type_problem

if TYPE_CHECKING:
    from collections.abc import Collection

    from .schema import AttrSchema, NestedBlockSchema

Path_ = tuple[str, ...]
DYNAMIC_ARGS = frozenset({"for_each", "iterator", "labels"})


@dataclass(frozen=True, order=True)
class Finding:
    """One error: ``file:line: address: message``."""

    file: str
    line: int
    address: str
    message: str

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line else self.file
        if not self.address:
            return f"{location}: {self.message}"
        return f"{location}: {self.address}: {self.message}"


@dataclass
class Scope:
    """Where findings for one top-level block go."""

    file: str
    address: str
    root: BlockSchema
    findings: list[Finding] = field(default_factory=list)

    def report(self, line: int | None, message: str) -> None:
        """Record one finding."""
        self.findings.append(Finding(self.file, line or 0, self.address, message))


@dataclass(frozen=True)
class Meta:
    """Terraform meta-arguments allowed at the top of this kind of block."""

    attrs: frozenset[str] = frozenset()
    blocks: frozenset[str] = frozenset()


NO_META = Meta()


def where(path: Path_) -> str:
    """`` in "a.b"`` for nested paths, empty at the top level."""
    return f' in "{".".join(path)}"' if path else ""


def suggestion(name: str, candidates: Collection[str]) -> str:
    """`` (did you mean "x"?)`` when a close candidate exists."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else ""


@dataclass(frozen=True)
class Site:
    """The body being checked: where findings go, its schema, its path and line."""

    scope: Scope
    schema: BlockSchema
    path: Path_ = ()
    line: int | None = None
    meta: Meta = NO_META
    enforce_required: bool = True

    def report(self, line: int | None, message: str) -> None:
        """Record one finding."""
        self.scope.report(line, message)

    @property
    def where(self) -> str:
        """`` in "a.b"`` below the top level, else empty."""
        return where(self.path)

    def child(self, name: str, schema: BlockSchema, line: int | None, enforce: bool) -> Site:
        """Site of a nested body called ``name``."""
        return Site(self.scope, schema, (*self.path, name), line, NO_META, enforce)

    def placement_hint(self, name: str, candidates: Collection[str]) -> str:
        """Where ``name`` belongs if the schema has it elsewhere, else a spelling hint."""
        elsewhere = [p for p in self.scope.root.locate(name) if p != self.path]
        if not elsewhere:
            return suggestion(name, candidates)
        if not elsewhere[0]:
            return " (it belongs at the top level)"
        return f' (it belongs in "{".".join(elsewhere[0])}")'


def check_body(site: Site, body: Body) -> None:
    """Arguments, nested blocks and required items of one body."""
    check_attributes(site, body.attributes)
    counts = check_blocks(site, body.blocks)
    if site.enforce_required:
        check_required(site, body)
    check_counts(site, counts)


def check_attributes(site: Site, attributes: list[Attribute]) -> None:
    """Every argument is known, settable, written as an argument and literally valid."""
    seen: set[str] = set()
    for attr in attributes:
        if attr.name in seen:
            site.report(attr.line, f'duplicate argument "{attr.name}"{site.where}')
        seen.add(attr.name)
        if attr.name in site.meta.attrs:
            continue
        spec = site.schema.attrs.get(attr.name)
        if spec is not None:
            check_value(site, attr, spec)
        elif attr.name in site.schema.blocks:
            message = f"is a block, not an argument: write {attr.name} {{ ... }}"
            site.report(attr.line, f'"{attr.name}"{site.where} {message}')
        elif attr.name in site.schema.computed:
            message = "is computed-only and cannot be set"
            site.report(attr.line, f'argument "{attr.name}"{site.where} {message}')
        else:
            hint = site.placement_hint(attr.name, [*site.schema.attrs, *site.meta.attrs])
            site.report(attr.line, f'unknown argument "{attr.name}"{site.where}{hint}')


def check_value(site: Site, attr: Attribute, spec: AttrSchema) -> None:
    """Literal type, documented allowed values and keys of nested object literals."""
    lit = classify(attr.value)
    problem = type_problem(spec, lit) or enum_problem(spec, lit)
    if problem:
        site.report(attr.line, f'invalid value for "{attr.name}"{site.where}: {problem}')
        return
    if spec.nested is None:
        return
    inner = replace(site, schema=spec.nested, path=(*site.path, attr.name), meta=NO_META)
    for obj in nested_objects(spec, attr.value):
        for key, value in object_items(obj):
            check_object_key(inner, Attribute(key, attr.line, value))


def check_object_key(site: Site, attr: Attribute) -> None:
    """One key of an object literal assigned to an argument with nested attributes."""
    spec = site.schema.attrs.get(attr.name)
    if spec is None:
        hint = suggestion(attr.name, site.schema.attrs)
        site.report(attr.line, f'unknown argument "{attr.name}"{site.where}{hint}')
    else:
        check_value(site, attr, spec)


@dataclass
class Count:
    """Lines of the static blocks of one type, and whether ``dynamic`` adds more."""

    lines: list[int | None] = field(default_factory=list)
    dynamic: bool = False


def check_blocks(site: Site, blocks: list[Block]) -> dict[str, Count]:
    """Every nested block is known and valid; returns per-type counts."""
    counts: dict[str, Count] = {}
    for block in blocks:
        if block.type in site.meta.blocks:
            continue
        if block.type == "dynamic":
            name = check_dynamic(site, block)
            if name:
                counts.setdefault(name, Count()).dynamic = True
        elif check_block(site, block):
            counts.setdefault(block.type, Count()).lines.append(block.line)
    return counts


def block_target(site: Site, name: str, line: int | None) -> tuple[BlockSchema, bool] | None:
    """(schema, enforce_required) for a block called ``name``, reporting misuse."""
    nested = site.schema.blocks.get(name)
    if nested is not None:
        return nested.block, True
    spec = site.schema.attrs.get(name)
    if spec is not None and spec.block_syntax:
        return spec.nested or BlockSchema(), False
    if spec is not None:
        site.report(line, f'"{name}"{site.where} is an argument, not a block: write {name} = ...')
        return None
    hint = site.placement_hint(name, [*site.schema.blocks, *site.meta.blocks])
    site.report(line, f'unknown block "{name}"{site.where}{hint}')
    return None


def check_block(site: Site, block: Block) -> bool:
    """A static nested block; True when it counts towards its type."""
    target = block_target(site, block.type, block.line)
    if target is None:
        return False
    nested = site.schema.blocks.get(block.type)
    wanted = 1 if nested is not None and nested.nesting == "map" else 0
    if len(block.labels) != wanted:
        got = len(block.labels)
        site.report(
            block.line, f'block "{block.type}"{site.where} takes {wanted} label(s), got {got}'
        )
    schema, enforce = target
    check_body(site.child(block.type, schema, block.line, enforce), block.body)
    return True


def check_dynamic(site: Site, block: Block) -> str | None:
    """``dynamic "x" { for_each = ... content { ... } }``; returns ``x`` when valid."""
    if len(block.labels) != 1:
        site.report(block.line, f"dynamic block{site.where} needs exactly one label")
        return None
    name = block.labels[0]
    target = block_target(site, name, block.line)
    if target is None:
        return None
    for attr in block.body.attributes:
        if attr.name not in DYNAMIC_ARGS:
            site.report(attr.line, f'unknown argument "{attr.name}" in dynamic "{name}"')
    if block.body.attribute("for_each") is None:
        site.report(block.line, f'dynamic "{name}"{site.where} needs "for_each"')
    contents = block.body.blocks_of("content")
    if len(contents) != 1:
        site.report(block.line, f'dynamic "{name}"{site.where} needs one "content" block')
        return name
    schema, enforce = target
    check_body(site.child(name, schema, contents[0].line, enforce), contents[0].body)
    return name


def check_required(site: Site, body: Body) -> None:
    """Every required argument is set."""
    present = {a.name for a in body.attributes}
    present |= {b.type for b in body.blocks}
    present |= {b.labels[0] for b in body.blocks if b.type == "dynamic" and b.labels}
    for name, spec in sorted(site.schema.attrs.items()):
        if spec.required and name not in present:
            site.report(site.line, f'missing required argument "{name}"{site.where}')


def check_counts(site: Site, counts: dict[str, Count]) -> None:
    """Nested block counts respect min/max items (unknowable when ``dynamic`` is used)."""
    for name, nested in sorted(site.schema.blocks.items()):
        count = counts.get(name, Count())
        if not count.dynamic:
            check_count(site, name, nested, count.lines)


def check_count(site: Site, name: str, nested: NestedBlockSchema, lines: list[int | None]) -> None:
    """One block type's min/max items (an excess is reported at the first extra block)."""
    found = len(lines)
    if site.enforce_required and found < nested.min_items:
        if nested.min_items == 1:
            site.report(site.line, f'missing required block "{name}"{site.where}')
        else:
            wanted = f'at least {nested.min_items} "{name}" blocks required'
            site.report(site.line, f"{wanted}{site.where}, found {found}")
    if nested.max_items is not None and found > nested.max_items:
        limit = f"at most {nested.max_items}, found {found}"
        site.report(lines[nested.max_items], f'too many "{name}" blocks{site.where}: {limit}')
