"""The subset of JSON Schema (draft 2020-12) that `manifest.schema.json` uses, so the runtime validates the manifest
with the very file it ships (no `jsonschema` dependency) and the schema, the docs and the loader cannot disagree.

Supported: `type`, `const`, `enum`, `required`, `properties`, `additionalProperties` (boolean or schema),
`propertyNames`, `items`, `uniqueItems`, `minimum`, `maximum`, `minLength`, `pattern`, `format` (a named hook the
caller supplies, run before `pattern` for a precise message) and local `$ref` (`#/$defs/name`). Annotations
(`title`, `description`, `$schema`, `$id`, `$defs`, `$comment`) are ignored. A schema that uses any other keyword is
refused when it is loaded (`check_supported`), so extending the schema can never silently weaken validation.

Semantics follow JSON Schema: "integer" accepts any integral number (JSON has one number type; 23.0 is 23) but
not booleans; `minimum`/`maximum` apply to numbers only, `minLength`/`pattern` to strings only. Errors name the
field path (`graphs.decoder.inputs[3].shape`) and stop at the first problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

SUPPORTED = frozenset(
    {
        "type", "const", "enum", "required", "properties", "additionalProperties", "propertyNames", "items",
        "uniqueItems", "minimum", "maximum", "minLength", "pattern", "format", "$ref",
    }
)  # fmt: skip
ANNOTATIONS = frozenset({"title", "description", "$schema", "$id", "$defs", "$comment"})
_SCHEMA_VALUED = ("additionalProperties", "propertyNames", "items")

FormatHook = Callable[[str, str], None]  # (value, path) -> None, raising SchemaViolation


class SchemaViolation(ValueError):
    """The document does not satisfy the schema; `path` names the field ('' for the document)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


class UnsupportedSchemaError(RuntimeError):
    """The schema uses a keyword this validator does not implement (a bug in the shipped schema)."""


def at(path: str, key: str | int) -> str:
    """`path.key` or `path[i]`: how error messages name a field."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key == "":  # the default operator domain
        return f'{path}[""]'
    return f"{path}.{key}" if path else key


def kind(v: Any) -> str:
    """How an error message names a JSON value's type."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def is_integer(v: Any) -> bool:
    """JSON Schema's integer: a number with no fractional part, never a boolean."""
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "object": (lambda v: isinstance(v, dict), "an object"),
    "array": (lambda v: isinstance(v, list), "an array"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (is_integer, "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "null": (lambda v: v is None, "null"),
}


def check_supported(schema: Any, where: str = "#") -> None:
    """UnsupportedSchemaError unless every keyword of `schema` (recursively) is implemented here."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise UnsupportedSchemaError(f"{where}: a schema must be an object or a boolean")
    for key, value in schema.items():
        if key not in SUPPORTED and key not in ANNOTATIONS:
            raise UnsupportedSchemaError(f"{where}: keyword {key!r} is not implemented by rxt_edge._schema")
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#/$defs/")):
            raise UnsupportedSchemaError(f"{where}: only local '#/$defs/...' references are supported")
        if key == "type":
            types = [value] if isinstance(value, str) else value
            if not all(t in _TYPES for t in types):
                raise UnsupportedSchemaError(f"{where}: unknown type {value!r}")
    for key in _SCHEMA_VALUED:
        if key in schema:
            check_supported(schema[key], f"{where}/{key}")
    for group in ("properties", "$defs"):
        for name, sub in schema.get(group, {}).items():
            check_supported(sub, f"{where}/{group}/{name}")


class Validator:
    """Validates documents against one root schema; `formats` maps a `format` name to its check."""

    def __init__(self, root: Mapping[str, Any], formats: Mapping[str, FormatHook] | None = None):
        check_supported(root)
        self.root, self.formats = root, dict(formats or {})

    def validate(self, value: Any, schema: Mapping[str, Any] | bool | None = None, path: str = "") -> None:
        """SchemaViolation (naming the field) at the first place `value` breaks `schema` (default: the root)."""
        self._check(value, self.root if schema is None else schema, path)

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """The schema a `$ref` points to (siblings of `$ref` are validated as well, by `_check`)."""
        ref = schema["$ref"]
        return self.root["$defs"][ref.removeprefix("#/$defs/")]

    def _check(self, v: Any, s: Mapping[str, Any] | bool, path: str) -> None:
        if s is True:
            return
        if s is False:
            raise SchemaViolation(path, "not allowed here")
        if "$ref" in s:
            self._check(v, self.resolve(s), path)
        if "const" in s and not _same(v, s["const"]):
            raise SchemaViolation(path, f"expected {s['const']!r}, got {v!r}")
        if "enum" in s and not any(_same(v, e) for e in s["enum"]):
            raise SchemaViolation(path, f"expected one of {list(s['enum'])}, got {v!r}")
        if "type" in s:
            types = [s["type"]] if isinstance(s["type"], str) else list(s["type"])
            if not any(_TYPES[t][0](v) for t in types):
                want = " or ".join(_TYPES[t][1] for t in types)
                if "string" in types and s.get("minLength", 0) >= 1 and len(types) == 1:
                    want = "a non-empty string"
                raise SchemaViolation(path, f"expected {want}, got {kind(v)}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            self._range(v, s, path)
        elif isinstance(v, str):
            self._string(v, s, path)
        elif isinstance(v, dict):
            self._object(v, s, path)
        elif isinstance(v, list):
            self._array(v, s, path)

    @staticmethod
    def _range(v: float, s: Mapping[str, Any], path: str) -> None:
        lo, hi = s.get("minimum"), s.get("maximum")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            what = "an integer" if is_integer(v) or s.get("type") == "integer" else "a number"
            lo_s, hi_s = ("-inf" if lo is None else lo), ("inf" if hi is None else hi)
            raise SchemaViolation(path, f"expected {what} in [{lo_s}, {hi_s}], got {v}")

    def _string(self, v: str, s: Mapping[str, Any], path: str) -> None:
        if len(v) < s.get("minLength", 0):
            raise SchemaViolation(path, "expected a non-empty string" if s["minLength"] == 1 else "too short")
        if "format" in s and s["format"] in self.formats:
            self.formats[s["format"]](v, path)
        if "pattern" in s and not _regex(s["pattern"]).search(v):
            raise SchemaViolation(path, f"expected {s.get('title', 'a match of ' + s['pattern'])}, got {v!r}")

    def _object(self, v: dict, s: Mapping[str, Any], path: str) -> None:
        props = s.get("properties", {})
        for k in s.get("required", ()):
            if k not in v:
                raise SchemaViolation(at(path, k), "missing")
        extra = s.get("additionalProperties", True)
        names = s.get("propertyNames")
        for k, item in v.items():
            if names is not None:
                self._check(k, names, at(path, k))
            if k in props:
                self._check(item, props[k], at(path, k))
            elif extra is False:
                known = ", ".join(props)
                raise SchemaViolation(at(path, str(k)), f"unknown field (the schema defines: {known})")
            else:
                self._check(item, extra, at(path, k))

    def _array(self, v: list, s: Mapping[str, Any], path: str) -> None:
        if "items" in s:
            for i, item in enumerate(v):
                self._check(item, s["items"], at(path, i))
        if s.get("uniqueItems"):
            seen: list[Any] = []
            for i, item in enumerate(v):
                if any(_same(item, x) for x in seen):
                    raise SchemaViolation(at(path, i), f"duplicate item {item!r}")
                seen.append(item)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but a boolean never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
