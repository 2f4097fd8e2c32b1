"""Validate TOML data files against pydantic models, with errors that say where and what.

Used for the configuration file and the device profiles. Every error is one line,
``FILE:LINE: dotted.key: what is allowed, got what``, sorted by line.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

ModelT = TypeVar("ModelT", bound=BaseModel)
Loc = Sequence[int | str]


class TomlInvalid(ValueError):
    """A TOML file that cannot be used; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def parse_toml(text: str, filename: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlInvalid([_syntax_error(filename, exc)]) from None


def validate_toml(model: type[ModelT], data: dict[str, Any], text: str, filename: str) -> ModelT:
    """``data`` (parsed from ``text``) as ``model``, or `TomlInvalid` naming every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        locator = KeyLocator(text)
        found = sorted(
            (locator.line_of(err["loc"]), dotted_key(err["loc"]), _describe(model, err))
            for err in exc.errors()
        )
        raise TomlInvalid(
            [f"{filename}:{line}: {key}: {what}" for line, key, what in found]
        ) from None


def _syntax_error(filename: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column \d+\)$", message)
    if match:
        return f"{filename}:{match.group(1)}: TOML syntax error: {message[: match.start()].strip()}"
    return f"{filename}: TOML syntax error: {message}"


_BARE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def dotted_key(loc: Loc) -> str:
    """The key as TOML writes it: bare where it can be, quoted (escaped) where not."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        shown = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
        text += f".{shown}" if text else shown
    return text or "(file)"


def _describe(model: type[BaseModel], err: Any) -> str:
    """Say what is allowed and what was found, in the words of the file."""
    kind, got = err["type"], _shown(err.get("input"))
    loc, ctx = err["loc"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(_model_fields(_annotation(model, loc[:-1])))) or "none"
        return f"unknown key (allowed here: {allowed})"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _constraint(model, loc, "ge"), _constraint(model, loc, "le")
        if low is not None and high is not None:
            return f"must be {low} to {high}, got {got}"
        relation, bound = {
            "greater_than_equal": ("at least", ctx.get("ge")),
            "greater_than": ("more than", ctx.get("gt")),
            "less_than_equal": ("at most", ctx.get("le")),
            "less_than": ("less than", ctx.get("lt")),
        }[kind]
        return f"must be {relation} {bound}, got {got}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        low, high = _constraint(model, loc, "min_length"), _constraint(model, loc, "max_length")
        unit = "characters long" if kind.startswith("string") else "items"
        size = len(err["input"]) if hasattr(err.get("input"), "__len__") else got
        if high is None:
            return f"must have at least {low} {unit}, got {size}"
        return f"must be {low or 0} to {high} {unit}, got {size}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    expected = {
        "int_type": "an integer",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "path_type": "a path string",
        "model_type": "a table",
        "dict_type": "a table",
        "list_type": "an array",
        "tuple_type": "an array",
        "missing": None,
    }
    if kind == "missing":
        return "required key is missing"
    if expected.get(kind):
        return f"must be {expected[kind]}, got {got}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected')}, got {got}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {got}"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _model_fields(annotation: Any) -> dict[str, FieldInfo]:
    fields = getattr(annotation, "model_fields", None)
    return fields if isinstance(fields, dict) else {}


def _unwrap(annotation: Any, index: bool) -> Any:
    """The model inside ``X | None``, or the item type of a list, tuple or dict."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if _model_fields(a) or typing.get_origin(a)]
        return _unwrap(models[0], index) if models else annotation
    if index and origin in (list, tuple) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return annotation


def _field(model: type[BaseModel], loc: Loc) -> FieldInfo | None:
    annotation: Any = model
    info: FieldInfo | None = None
    for part in loc:
        annotation = _unwrap(annotation, index=isinstance(part, int))
        if isinstance(part, int):
            continue
        fields = _model_fields(annotation)
        if part in fields:
            info = fields[part]
            annotation = info.annotation
        elif typing.get_origin(annotation) is dict:
            annotation = _unwrap(annotation, index=False)
        else:
            return None
    return info


def _annotation(model: type[BaseModel], loc: Loc) -> Any:
    if not loc:
        return model
    info = _field(model, loc)
    return _unwrap(info.annotation, index=True) if info else None


def _constraint(model: type[BaseModel], loc: Loc, name: str) -> Any:
    info = _field(model, loc)
    for item in info.metadata if info else ():
        if getattr(item, name, None) is not None:
            return getattr(item, name)
    return None


class KeyLocator:
    """Finds the line of a dotted key in TOML text (tomllib keeps no positions).

    It understands table headers, arrays of tables (``[[devices]]``, counted from 0), dotted
    and quoted keys, and skips multi-line strings, which is all a data file needs; a key it
    cannot find is reported at the line of its table, or line 1.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = r"(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')"
    _ASSIGN = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        for number, path in self._keys(text):
            self._lines.setdefault(path, number)

    def line_of(self, loc: Loc) -> int:
        path = tuple(str(part) for part in loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return 1

    def _keys(self, text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
        table: tuple[str, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = self._HEADER.match(line)
            if header:
                table = _split_key(header.group(2))
                if header.group(1) == "[[":
                    arrays[table] = arrays.get(table, -1) + 1
                    yield number, table
                    table = (*table, str(arrays[table]))
                yield number, table
                continue
            assign = self._ASSIGN.match(line)
            if assign:
                yield number, table + _split_key(assign.group(1))
                rest = line[assign.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_string = quote


def _split_key(key: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_\-]+)", key)
    return tuple(next((p for p in groups if p), "") for groups in parts)
