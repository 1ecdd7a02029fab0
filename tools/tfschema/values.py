"""Classify python-hcl2 serialized values and check literal ones against an argument schema."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .schema import AttrSchema

INTERPOLATION_RE = re.compile(r"(?<!\$)\$\{|(?<!%)%\{")
NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
ARTICLES = {
    "string": "a string",
    "number": "a number",
    "bool": "a bool",
    "list": "a list",
    "set": "a set",
    "map": "a map",
    "object": "an object",
}
# literal kinds each coarse schema type rejects outright (terraform cannot convert them)
REJECTS = {
    "string": {"list", "object"},
    "number": {"list", "object", "bool"},
    "bool": {"list", "object", "number"},
    "list": {"string", "number", "bool", "object"},
    "set": {"string", "number", "bool", "object"},
    "map": {"string", "number", "bool", "list"},
    "object": {"string", "number", "bool", "list"},
}


@dataclass(frozen=True)
class Literal:
    """What is statically known about a value: its kind and, for plain strings, the text."""

    kind: str  # null, string, number, bool, list, object, expr
    text: str | None = None


def literal_text(quoted: str) -> str | None:
    """Content of a quoted string without interpolation, or None when templated."""
    inner = quoted[1:-1]
    if INTERPOLATION_RE.search(inner):
        return None
    return inner.replace("$${", "${").replace("%%{", "%{").replace('\\"', '"').replace("\\\\", "\\")


def classify(value: Any) -> Literal:
    """Literal kind of a serialized value (``expr`` when only known at plan time)."""
    if isinstance(value, str):
        return classify_string(value)
    if value is None:
        kind = "null"
    elif isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, (int, float)):
        kind = "number"
    elif isinstance(value, list):
        kind = "list"
    else:
        kind = "object" if isinstance(value, dict) else "expr"
    return Literal(kind)


def classify_string(value: str) -> Literal:
    """Quoted strings are strings (text known unless templated); the rest are expressions."""
    if len(value) < 2 or not value[0] == value[-1] == '"':
        return Literal("expr")
    if value.startswith('"<<'):
        return Literal("string")
    return Literal("string", literal_text(value))


def object_items(value: Any) -> list[tuple[str, Any]]:
    """(key, value) pairs of an object literal, skipping computed keys and metadata."""
    if not isinstance(value, dict):
        return []
    items: list[tuple[str, Any]] = []
    for key, item in value.items():
        name = str(key)
        if name.startswith("__") or name.startswith("${"):
            continue
        items.append((name[1:-1] if name.startswith('"') else name, item))
    return items


def type_problem(schema: AttrSchema, lit: Literal) -> str | None:
    """Why a literal cannot convert to the argument's type, or None."""
    if lit.kind in REJECTS.get(schema.type, set()):
        return f"expected {ARTICLES[schema.type]}, got {ARTICLES[lit.kind]}"
    if lit.text is None or lit.kind != "string":
        return None
    if schema.type == "number" and not NUMBER_RE.match(lit.text.strip()):
        return f'expected a number, got "{lit.text}"'
    if schema.type == "bool" and lit.text not in ("true", "false"):
        return f'expected a bool, got "{lit.text}"'
    return None


def enum_problem(schema: AttrSchema, lit: Literal) -> str | None:
    """Why a literal string is not one of the documented values, or None."""
    if not schema.enum or lit.kind != "string" or lit.text is None:
        return None
    if lit.text in schema.enum or (lit.text == "" and not schema.required):
        return None
    allowed = ", ".join(f'"{v}"' for v in schema.enum)
    return f'"{lit.text}" is not one of {allowed}'


def nested_objects(schema: AttrSchema, value: Any) -> list[Any]:
    """Object literals inside a value whose schema has nested attributes."""
    if schema.nested is None:
        return []
    if schema.type == "object":
        return [value] if isinstance(value, dict) else []
    if schema.type in ("list", "set") and isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    if schema.type == "map" and isinstance(value, dict):
        return [v for _, v in object_items(value) if isinstance(v, dict)]
    return []
