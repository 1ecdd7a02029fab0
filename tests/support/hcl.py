"""Reading one Terraform stack's source in tests (tools/tfschema/hcl: no provider needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.tfschema.hcl import Block, parse_file

if TYPE_CHECKING:
    from pathlib import Path


class StackSource:
    """The blocks of the ``.tf`` files of the stack in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def blocks(self, file: str, block_type: str) -> list[Block]:
        """Every ``block_type`` block of ``file`` (e.g. ``"main.tf"``, ``"resource"``)."""
        return parse_file(self.directory / file).blocks_of(block_type)

    def resource(self, kind: str, name: str) -> Block:
        """The one ``resource "kind" "name"`` of main.tf."""
        (found,) = [b for b in self.blocks("main.tf", "resource") if b.labels == (kind, name)]
        return found


def value(block: Block, name: str) -> object:
    """The value of ``block``'s attribute ``name`` (fails when it has none)."""
    attribute = block.body.attribute(name)
    assert attribute is not None, f"{block.labels} has no {name}"
    return attribute.value
