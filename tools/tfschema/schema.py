"""Load the compact provider-schema artifacts written by ``build.py``."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
REGISTRY = "registry.terraform.io"

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class AttrSchema:
    """One argument: coarse type, required flag, allowed values, nested object schema."""

    type: str = "any"
    required: bool = False
    enum: tuple[str, ...] = ()
    nested: BlockSchema | None = None
    block_syntax: bool = False


@dataclass(frozen=True)
class NestedBlockSchema:
    """A nested block type with its item limits (``max_items`` None = unbounded)."""

    block: BlockSchema
    nesting: str | None = None
    min_items: int = 0
    max_items: int | None = None


@dataclass(frozen=True)
class BlockSchema:
    """Arguments, nested block types and computed-only names of one block."""

    attrs: Mapping[str, AttrSchema] = field(default_factory=dict)
    blocks: Mapping[str, NestedBlockSchema] = field(default_factory=dict)
    computed: frozenset[str] = frozenset()

    def locate(self, name: str, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        """Paths of the blocks (``()`` = this one) that define ``name`` anywhere below."""
        found = [prefix] if name in self.attrs or name in self.blocks else []
        for block_name, nested in self.blocks.items():
            found.extend(nested.block.locate(name, (*prefix, block_name)))
        return found


def attr_from_json(raw: JsonDict) -> AttrSchema:
    """AttrSchema from its artifact form."""
    nested = raw.get("nested")
    return AttrSchema(
        type=raw.get("type", "any"),
        required=bool(raw.get("required")),
        enum=tuple(raw.get("enum", ())),
        nested=block_from_json(nested) if nested is not None else None,
        block_syntax=bool(raw.get("block_syntax")),
    )


def block_from_json(raw: JsonDict) -> BlockSchema:
    """BlockSchema from its artifact form."""
    blocks = {
        name: NestedBlockSchema(
            block=block_from_json(nb.get("block", {})),
            nesting=nb.get("nesting"),
            min_items=int(nb.get("min", 0)),
            max_items=nb.get("max"),
        )
        for name, nb in raw.get("blocks", {}).items()
    }
    return BlockSchema(
        attrs={name: attr_from_json(a) for name, a in raw.get("attrs", {}).items()},
        blocks=blocks,
        computed=frozenset(raw.get("computed", ())),
    )


def normalize_source(source: str) -> str:
    """``hashicorp/google`` -> ``registry.terraform.io/hashicorp/google`` (lower case)."""
    parts = source.strip().lower().split("/")
    if len(parts) == 2:
        parts.insert(0, REGISTRY)
    return "/".join(parts)


class ProviderSchema:
    """One provider version's artifact; blocks are converted on first use."""

    def __init__(self, path: Path, raw: JsonDict) -> None:
        self.path = path
        self.name: str = raw["provider"]
        self.source: str = normalize_source(raw["source"])
        self.version: str = raw["version"]
        self.generated_from: str = raw.get("generated_from", "")
        self._raw = raw
        self._cache: dict[tuple[str, str], BlockSchema] = {}

    def names(self, section: str) -> list[str]:
        """Type names in ``resources`` or ``data_sources``."""
        return sorted(self._raw[section])

    def lookup(self, section: str, type_name: str) -> BlockSchema | None:
        """Schema of a resource/data source type, or None when unknown."""
        key = (section, type_name)
        if key not in self._cache:
            raw = self._raw[section].get(type_name)
            if raw is None:
                return None
            self._cache[key] = block_from_json(raw)
        return self._cache[key]

    def provider_config(self) -> BlockSchema:
        """Schema of the ``provider`` block."""
        return block_from_json(self._raw.get("provider_config", {}))


def load_artifact(path: Path) -> ProviderSchema:
    """Read one ``<provider>-<version>.json.gz`` artifact."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        raw: JsonDict = json.load(handle)
    return ProviderSchema(path, raw)


class SchemaSet:
    """Artifacts in a directory, named ``<provider>-<version>.json.gz`` for the provider
    ``hashicorp/<provider>``; each is read on first use and must say the same inside."""

    def __init__(self, directory: Path = DEFAULT_SCHEMA_DIR) -> None:
        self.directory = directory
        self._paths: dict[str, dict[str, Path]] = {}
        self._loaded: dict[Path, ProviderSchema] = {}
        for path in sorted(directory.glob("*.json.gz")):
            name, _, version = path.name.removesuffix(".json.gz").rpartition("-")
            source = normalize_source(f"hashicorp/{name}")
            self._paths.setdefault(source, {})[version] = path

    def versions(self, source: str) -> list[str]:
        """Versions with an artifact for a provider source."""
        return sorted(self._paths.get(normalize_source(source), {}))

    def load(self, source: str, version: str) -> ProviderSchema:
        """The artifact of one provider version (KeyError when absent)."""
        path = self._paths[normalize_source(source)][version]
        if path not in self._loaded:
            schema = load_artifact(path)
            if (schema.source, schema.version) != (normalize_source(source), version):
                raise ValueError(f"{path} holds {schema.source} {schema.version}")
            self._loaded[path] = schema
        return self._loaded[path]

    def pick(self, source: str, version: str | None) -> ProviderSchema | None:
        """The artifact for ``version`` or, failing that, the only one for ``source``."""
        found = self.versions(source)
        if version in found:
            return self.load(source, version)
        return self.load(source, found[0]) if len(found) == 1 else None
