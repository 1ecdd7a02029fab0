"""Parse ``.tf`` files with python-hcl2 into a small tree that keeps line numbers.

python-hcl2 8.x accepts ``with_meta`` but adds no line keys to the dict output, so this walks
its rule tree (``hcl2.parses``), whose nodes keep the Lark positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hcl2
from hcl2.rules.base import AttributeRule, BlockRule, BodyRule

if TYPE_CHECKING:
    from pathlib import Path


class HclParseError(Exception):
    """A file that python-hcl2 cannot parse."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Attribute:
    """``name = value``; ``value`` is python-hcl2's serialized form."""

    name: str
    line: int | None
    value: Any


@dataclass(frozen=True)
class Block:
    """``type "label" ... { body }``."""

    type: str
    labels: tuple[str, ...]
    line: int | None
    body: Body


@dataclass(frozen=True)
class Body:
    """Attributes and blocks in source order."""

    attributes: list[Attribute] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def attribute(self, name: str) -> Attribute | None:
        """First attribute called ``name``."""
        return next((a for a in self.attributes if a.name == name), None)

    def blocks_of(self, block_type: str) -> list[Block]:
        """Blocks of one type."""
        return [b for b in self.blocks if b.type == block_type]


def line_of(node: object) -> int | None:
    """Start line recorded by Lark, when present."""
    meta = getattr(node, "_meta", None)
    line = getattr(meta, "line", None)
    return line if isinstance(line, int) else None


def unquote(text: str) -> str:
    """Strip one pair of surrounding double quotes."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def convert_body(body: BodyRule) -> Body:
    """Body from a python-hcl2 body rule."""
    out = Body()
    for child in body.children:
        if isinstance(child, AttributeRule):
            name = str(child.identifier.serialize())
            out.attributes.append(Attribute(name, line_of(child), child.expression.serialize()))
        elif isinstance(child, BlockRule):
            labels = [unquote(str(label.serialize())) for label in child.labels]
            block = Block(labels[0], tuple(labels[1:]), line_of(child), convert_body(child.body))
            out.blocks.append(block)
    return out


def parse_text(text: str) -> Body:
    """Parse HCL text; raises HclParseError."""
    try:
        start = hcl2.parses(text)
    except Exception as exc:  # lark and python-hcl2 raise many exception types
        line = getattr(exc, "line", None)
        first = str(exc).strip().splitlines()
        raise HclParseError(
            first[0] if first else type(exc).__name__, line if isinstance(line, int) else None
        ) from exc
    return convert_body(start.body)


def parse_file(path: Path) -> Body:
    """Parse one ``.tf`` file; raises HclParseError."""
    return parse_text(path.read_text(encoding="utf-8"))
