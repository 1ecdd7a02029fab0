"""Build the compact provider-schema artifacts that ``check.py`` reads.

Standard library only. Each artifact is gzipped JSON, one per provider version:

* ``google`` and ``azurerm`` come from the ``.jsii`` manifest of the prebuilt CDKTF bindings on
  npm (``npm pack`` into a temporary directory, or ``--from`` a package dir or ``.tgz``); the
  Terraform provider version is read from the package's ``package.json`` (``cdktf.provider``).
* ``aws`` comes from ``terraform providers schema -json`` after an offline ``terraform init``
  against a plugin mirror (or ``--from`` a saved ``schema.json``).

Regenerate all committed artifacts (from the repository root)::

    python -m tools.tfschema.build all

Artifact layout (format 1)::

    {"format": 1, "provider": "google", "source": "registry.terraform.io/hashicorp/google",
     "version": "6.50.0", "generated_from": "...",
     "provider_config": BLOCK, "resources": {type: BLOCK}, "data_sources": {type: BLOCK}}
    BLOCK = {"attrs": {name: ATTR}, "blocks": {name: NESTED}, "computed": [name, ...]}
    ATTR = {"type": "string|number|bool|list|set|map|object|any", "required": true,
            "enum": [...], "nested": BLOCK, "block_syntax": true}
    NESTED = {"nesting": "list|set|single|map|group", "min": n, "max": n, "block": BLOCK}

Keys with empty or default values are omitted. ``nesting`` is absent when the source does not
say (jsii); ``max`` absent means unbounded; ``computed`` lists attributes that cannot be set.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JsonDict = dict[str, Any]

FORMAT = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "schemas"
LINK_RE = re.compile(r"\{@link (\S+?)#([A-Za-z0-9_]+) \S+?\}")
TYPE_LINK_RE = re.compile(r"\{@link \S+ ([a-z0-9_]+)\}")
GOOGLE_ENUM_RE = re.compile(r"Possible values: (\[[^\]]*\])")
AZURE_ENUM_RE = re.compile(r"Possible values are:? (.*?)(?:\.(?=\s|$)|\n|$)", re.S)
BACKTICK_RE = re.compile(r"`([^`]*)`")
AZURE_ENUM_GLUE_RE = re.compile(r"^[\s,:]*(?:(?:and|or)\s*)?$")
RESOLVABLE = "cdktf.IResolvable"
BASE_KINDS = {
    "cdktf.TerraformResource": "resources",
    "cdktf.TerraformDataSource": "data_sources",
    "cdktf.TerraformProvider": "provider_config",
}


@dataclass(frozen=True)
class NpmSource:
    """A prebuilt CDKTF provider package on npm."""

    package: str
    version: str


@dataclass(frozen=True)
class TerraformSource:
    """A provider read with ``terraform providers schema -json``."""

    source: str
    version: str


# The CDKTF bindings make every provider-configuration setting optional (they can come from the
# environment); blocks the provider itself requires are restored here. azurerm: "features -
# (Required)", a single block (provider docs; `terraform validate` reports "Insufficient
# features blocks" without it).
PROVIDER_CONFIG_BLOCK_OVERRIDES: dict[str, dict[str, JsonDict]] = {
    "azurerm": {"features": {"min": 1, "max": 1}},
}

SOURCES: dict[str, NpmSource | TerraformSource] = {
    "google": NpmSource("@cdktf/provider-google", "16.12.1"),
    "azurerm": NpmSource("@cdktf/provider-azurerm", "14.23.1"),
    "aws": TerraformSource("hashicorp/aws", "5.100.0"),
}


# --------------------------------------------------------------------------- helpers


def compact(obj: JsonDict) -> JsonDict:
    """Drop keys whose values are empty, false or None."""
    return {k: v for k, v in obj.items() if v not in (None, False, [], {}, 0)}


def camel_to_snake(name: str) -> str:
    """Naive camelCase -> snake_case (used only where no docs anchor exists)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def write_artifact(artifact: JsonDict, out_dir: Path) -> Path:
    """Write ``<provider>-<version>.json.gz`` reproducibly (no mtime in the gzip header)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{artifact['provider']}-{artifact['version']}.json.gz"
    data = json.dumps(artifact, sort_keys=True, separators=(",", ":")).encode()
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)
    return path


# --------------------------------------------------------------------------- jsii (npm)


def docs_text(docs: Any) -> str:
    """Flatten every string inside a jsii ``docs`` object."""
    if isinstance(docs, str):
        return docs
    if isinstance(docs, dict):
        return "\n".join(docs_text(v) for v in docs.values())
    return ""


def enum_values(text: str, attr_type: str) -> list[str]:
    """Allowed values listed in the docs text, or [] when none are listed reliably."""
    if attr_type != "string":
        return []
    match = GOOGLE_ENUM_RE.search(text)
    if match:
        try:
            values = json.loads(match.group(1))
        except json.JSONDecodeError:
            return []
        return [v for v in values if isinstance(v, str)]
    return azure_enum_values(text)


def azure_enum_values(text: str) -> list[str]:
    """Parse azurerm's "Possible values are `A`, `B` and `C`." (strictly; else [])."""
    match = AZURE_ENUM_RE.search(text)
    if not match or "between" in match.group(1):
        return []
    sentence = match.group(1)
    values = BACKTICK_RE.findall(sentence)
    glue = BACKTICK_RE.split(sentence)[::2]
    if not values or not all(AZURE_ENUM_GLUE_RE.match(part) for part in glue):
        return []
    return values


class JsiiExtractor:
    """Turns a CDKTF provider ``.jsii`` manifest into compact schema blocks."""

    def __init__(self, types: dict[str, JsonDict]) -> None:
        self.types = types

    def is_struct(self, type_ref: JsonDict) -> bool:
        """True when the type reference names a jsii data type (a config struct)."""
        fqn = type_ref.get("fqn")
        return isinstance(fqn, str) and bool(self.types.get(fqn, {}).get("datatype"))

    @staticmethod
    def unwrap(type_ref: JsonDict) -> JsonDict:
        """Strip ``cdktf.IResolvable`` from unions."""
        union = type_ref.get("union")
        if not union:
            return type_ref
        rest = [t for t in union["types"] if t.get("fqn") != RESOLVABLE]
        return JsiiExtractor.unwrap(rest[0]) if len(rest) == 1 else {"primitive": "any"}

    def coarse_type(self, type_ref: JsonDict) -> str:
        """Map a jsii type to string/number/bool/list/map/object/any."""
        ref = self.unwrap(type_ref)
        if "primitive" in ref:
            return {"string": "string", "number": "number", "boolean": "bool"}.get(
                ref["primitive"], "any"
            )
        if "collection" in ref:
            return "list" if ref["collection"]["kind"] == "array" else "map"
        return "object" if self.is_struct(ref) else "any"

    def element_struct(self, type_ref: JsonDict) -> str | None:
        """The struct fqn of a struct or collection-of-struct property."""
        ref = self.unwrap(type_ref)
        if "collection" in ref:
            ref = self.unwrap(ref["collection"]["elementtype"])
        return ref["fqn"] if self.is_struct(ref) else None

    def struct_properties(self, fqn: str) -> list[JsonDict]:
        """Properties of a struct, including those of provider-local parent structs."""
        struct = self.types[fqn]
        props = list(struct.get("properties", []))
        for parent in struct.get("interfaces", []):
            if parent in self.types and self.types[parent].get("datatype"):
                props.extend(self.struct_properties(parent))
        return props

    def block(self, fqn: str) -> JsonDict:
        """Compact BLOCK for the struct ``fqn``."""
        attrs: JsonDict = {}
        blocks: JsonDict = {}
        for prop in self.struct_properties(fqn):
            text = docs_text(prop.get("docs", {}))
            link = LINK_RE.search(text)
            name = link.group(2) if link else camel_to_snake(prop["name"])
            required = not prop.get("optional", False)
            struct = self.element_struct(prop["type"])
            kind = self.coarse_type(prop["type"])
            summary = prop.get("docs", {}).get("summary", "")
            if struct and summary.strip() == f"{name} block.":
                blocks[name] = self.nested_block(struct, kind, required)
            else:
                attrs[name] = compact(
                    {
                        "type": kind,
                        "required": required,
                        "enum": enum_values(text, kind),
                        "nested": self.block(struct) if struct else None,
                        # list-of-object attributes also accept block syntax; "any" marks a
                        # nesting level the bindings generator gave up typing (maybe a block)
                        "block_syntax": (bool(struct) and kind == "list") or kind == "any",
                    }
                )
        return compact({"attrs": attrs, "blocks": blocks})

    def nested_block(self, struct: str, kind: str, required: bool) -> JsonDict:
        """Compact NESTED for a block property (single struct => at most one block)."""
        nested: JsonDict = {"min": 1 if required else 0, "block": self.block(struct)}
        if kind == "object":
            nested["max"] = 1
        elif kind == "map":
            nested["nesting"] = "map"
        return compact(nested)

    def computed_only(self, cls: JsonDict, config_props: set[str]) -> list[str]:
        """Top-level attributes exposed by the class but absent from its config struct."""
        props = {p["name"] for p in cls.get("properties", []) if not p.get("static")}
        return sorted(
            camel_to_snake(p)
            for p in props
            if not p.endswith("Input") and f"{p}Input" not in props and p not in config_props
        )

    def entry(self, cls: JsonDict) -> tuple[str, str, JsonDict] | None:
        """(section, terraform type name, BLOCK) for a resource/data source/provider class."""
        section = BASE_KINDS.get(cls.get("base", ""))
        match = TYPE_LINK_RE.search(cls.get("docs", {}).get("summary", ""))
        params = cls.get("initializer", {}).get("parameters", [])
        config = next((p for p in params if p["name"] == "config"), None)
        if not section or not match or not config:
            return None
        fqn = config["type"]["fqn"]
        block = self.block(fqn)
        if section != "provider_config":
            config_props = {p["name"] for p in self.struct_properties(fqn)}
            computed = self.computed_only(cls, config_props)
            if computed:
                block["computed"] = computed
        return section, match.group(1), block

    def extract(self) -> JsonDict:
        """All resources, data sources and the provider config."""
        out: JsonDict = {"resources": {}, "data_sources": {}, "provider_config": {}}
        for cls in self.types.values():
            if cls.get("kind") != "class":
                continue
            found = self.entry(cls)
            if found is None:
                continue
            section, type_name, block = found
            if section == "provider_config":
                out["provider_config"] = block
            else:
                out[section][type_name] = block
        return out


def read_npm_package(path: Path) -> tuple[JsonDict, JsonDict]:
    """(package.json, .jsii) from an unpacked package directory or an ``npm pack`` tarball."""
    if path.is_dir():
        root = path / "package" if (path / "package" / ".jsii").exists() else path
        return json.loads((root / "package.json").read_text()), json.loads(
            (root / ".jsii").read_text()
        )
    with tarfile.open(path) as tar:
        return _tar_json(tar, "package/package.json"), _tar_json(tar, "package/.jsii")


def _tar_json(tar: tarfile.TarFile, member: str) -> JsonDict:
    """Load one JSON member of a tarball."""
    handle = tar.extractfile(member)
    if handle is None:
        raise SystemExit(f"{member} missing from package tarball")
    with handle:
        data: JsonDict = json.load(io.TextIOWrapper(handle, encoding="utf-8"))
    return data


def npm_pack(spec: NpmSource, workdir: Path) -> Path:
    """Run ``npm pack`` for the package into ``workdir`` and return the tarball path."""
    cmd = ["npm", "pack", f"{spec.package}@{spec.version}", "--silent"]
    out = subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, text=True)
    return workdir / out.stdout.strip().splitlines()[-1]


def apply_provider_overrides(name: str, provider_config: JsonDict) -> None:
    """Restore provider-config block limits that the bindings drop."""
    blocks = provider_config.get("blocks", {})
    for block_name, limits in PROVIDER_CONFIG_BLOCK_OVERRIDES.get(name, {}).items():
        if block_name in blocks:
            blocks[block_name].update(limits)


def build_from_npm(name: str, spec: NpmSource, source_path: Path | None) -> JsonDict:
    """Artifact for a CDKTF prebuilt provider package."""
    with tempfile.TemporaryDirectory(prefix="tfschema-npm-") as tmp:
        path = source_path or npm_pack(spec, Path(tmp))
        package, jsii = read_npm_package(path)
    provider = package["cdktf"]["provider"]
    if package["name"] != spec.package and source_path is None:
        raise SystemExit(f"unexpected package {package['name']}")
    extracted = JsiiExtractor(jsii["types"]).extract()
    apply_provider_overrides(name, extracted["provider_config"])
    return {
        "format": FORMAT,
        "provider": name,
        "source": provider["name"],
        "version": provider["version"],
        "generated_from": f"npm {package['name']}@{package['version']} (.jsii manifest)",
        **extracted,
    }


# --------------------------------------------------------------------------- terraform (aws)


def cty_coarse(cty: Any) -> str:
    """Map a cty JSON type to string/number/bool/list/set/map/object/any."""
    if isinstance(cty, str):
        return {"string": "string", "number": "number", "bool": "bool"}.get(cty, "any")
    kind = cty[0]
    return kind if kind in ("list", "set", "map", "object") else "any"


def cty_object_block(cty: Any) -> JsonDict | None:
    """BLOCK (all optional) for list/set/map of object or object cty types."""
    if isinstance(cty, list) and cty[0] in ("list", "set", "map"):
        cty = cty[1]
    if not (isinstance(cty, list) and cty[0] == "object"):
        return None
    attrs = {n: cty_attr(t) for n, t in cty[1].items()}
    return compact({"attrs": attrs})


def cty_attr(cty: Any) -> JsonDict:
    """Compact ATTR for a cty type (list/set of objects may also be written as blocks)."""
    kind = cty_coarse(cty)
    nested = cty_object_block(cty)
    block_syntax = nested is not None and kind in ("list", "set")
    return compact({"type": kind, "nested": nested, "block_syntax": block_syntax})


def tf_attr(attr: JsonDict) -> JsonDict:
    """Compact ATTR from a ``providers schema -json`` attribute."""
    nested_type = attr.get("nested_type")
    if nested_type:
        mode = nested_type.get("nesting_mode", "single")
        kind = "object" if mode == "single" else mode
        nested = tf_block({"attributes": nested_type.get("attributes", {})})
        return compact({"type": kind, "required": attr.get("required"), "nested": nested})
    return compact({**cty_attr(attr.get("type", "dynamic")), "required": attr.get("required")})


def tf_block(block: JsonDict) -> JsonDict:
    """Compact BLOCK from a ``providers schema -json`` block."""
    attrs: JsonDict = {}
    computed: list[str] = []
    for name, attr in block.get("attributes", {}).items():
        if attr.get("computed") and not (attr.get("optional") or attr.get("required")):
            computed.append(name)
        else:
            attrs[name] = tf_attr(attr)
    blocks = {
        name: compact(
            {
                "nesting": bt.get("nesting_mode"),
                "min": bt.get("min_items", 0),
                "max": bt.get("max_items") or None,
                "block": tf_block(bt.get("block", {})),
            }
        )
        for name, bt in block.get("block_types", {}).items()
    }
    return compact({"attrs": attrs, "blocks": blocks, "computed": sorted(computed)})


def terraform_schema(spec: TerraformSource, plugin_dir: Path) -> JsonDict:
    """Run ``terraform init`` (offline, plugin dir) and ``providers schema -json``."""
    local = spec.source.rsplit("/", 1)[-1]
    config = (
        "terraform {\n  required_providers {\n"
        f'    {local} = {{\n      source  = "{spec.source}"\n'
        f'      version = "{spec.version}"\n    }}\n  }}\n}}\n'
    )
    with tempfile.TemporaryDirectory(prefix="tfschema-tf-") as tmp:
        Path(tmp, "main.tf").write_text(config)
        init = ["terraform", "init", "-input=false", "-backend=false", f"-plugin-dir={plugin_dir}"]
        subprocess.run(init, cwd=tmp, check=True, capture_output=True)
        out = subprocess.run(
            ["terraform", "providers", "schema", "-json"],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        )
    data: JsonDict = json.loads(out.stdout)
    return data


def terraform_version() -> str:
    """The installed terraform version, e.g. ``1.11.4``."""
    out = subprocess.run(["terraform", "version", "-json"], check=True, capture_output=True)
    version: str = json.loads(out.stdout)["terraform_version"]
    return version


def build_from_terraform(
    name: str, spec: TerraformSource, source_path: Path | None, plugin_dir: Path
) -> JsonDict:
    """Artifact for a provider available to ``terraform`` through a plugin mirror."""
    if source_path is not None:
        schema = json.loads(source_path.read_text())
        origin = f"terraform providers schema -json (saved: {source_path.name})"
    else:
        schema = terraform_schema(spec, plugin_dir)
        origin = f"terraform {terraform_version()} providers schema -json"
    full_source = f"registry.terraform.io/{spec.source}"
    provider = schema["provider_schemas"][full_source]
    return {
        "format": FORMAT,
        "provider": name,
        "source": full_source,
        "version": spec.version,
        "generated_from": origin,
        "provider_config": tf_block(provider.get("provider", {}).get("block", {})),
        "resources": {k: tf_block(v["block"]) for k, v in provider["resource_schemas"].items()},
        "data_sources": {
            k: tf_block(v["block"]) for k, v in provider["data_source_schemas"].items()
        },
    }


# --------------------------------------------------------------------------- CLI


def build_one(name: str, source_path: Path | None, plugin_dir: Path) -> JsonDict:
    """Artifact for one provider name in ``SOURCES``."""
    spec = SOURCES[name]
    if isinstance(spec, NpmSource):
        return build_from_npm(name, spec, source_path)
    return build_from_terraform(name, spec, source_path, plugin_dir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("provider", choices=[*SOURCES, "all"])
    parser.add_argument(
        "--from",
        dest="source_path",
        type=Path,
        default=None,
        help="npm package dir/.tgz (google, azurerm) or schema.json (aws)",
    )
    parser.add_argument("--plugin-dir", type=Path, default=Path("/opt/tf-plugins"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.provider == "all" and args.source_path is not None:
        parser.error("--from needs a single provider")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: build and write the requested artifacts."""
    args = parse_args(argv)
    names = list(SOURCES) if args.provider == "all" else [args.provider]
    for name in names:
        artifact = build_one(name, args.source_path, args.plugin_dir)
        path = write_artifact(artifact, args.out)
        print(
            f"{path}: {artifact['source']} {artifact['version']}, "
            f"{len(artifact['resources'])} resources, "
            f"{len(artifact['data_sources'])} data sources, {path.stat().st_size} bytes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
