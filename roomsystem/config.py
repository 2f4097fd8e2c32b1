"""The room's configuration: one TOML file, validated into typed, frozen settings.

Every key is declared here; a key nobody declared is an error, so a typo never passes
silently. Errors name the file, the line and the dotted key, and say what is allowed:
``roomsystem.toml:12: meeting.passcode_length: must be 6 to 10, got 4``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
import zoneinfo
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from roomsystem.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/roomsystem/roomsystem.toml")
DEFAULT_STATE_DIR = Path("/var/lib/roomsystem")
DEFAULT_LISTEN = "127.0.0.1:8080"


class _Section(BaseModel):
    # strict: "8" is not 8 and 1 is not true; a config file says what it means.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


def _check_listen(value: str) -> str:
    split_listen(value)
    return value


def split_listen(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) as ``(host, port)``; port 0 picks a free one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError(f"an IPv6 address must be in brackets, as [::1]:8080, got {value!r}")
    return host, int(port_text)


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"must be an IANA time zone such as 'Europe/Berlin', got {value!r}"
        ) from None
    return value


def _check_absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path, got {str(value)!r}")
    return value


def _check_name(value: str) -> str:
    if not value.strip() or any(not ch.isprintable() for ch in value):
        raise ValueError(f"must be printable text that is not blank, got {value!r}")
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]
TimeZone = Annotated[str, AfterValidator(_check_timezone)]
Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_name)]


class RoomSettings(_Section):
    """Who this room is."""

    name: Name = "Demo Room"
    location: Annotated[str, Field(max_length=128)] = ""
    timezone: TimeZone = "UTC"


class ApiSettings(_Section):
    """The local API that the panel, the display and admin tools use."""

    listen: Listen = DEFAULT_LISTEN
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024


class MeetingSettings(_Section):
    """Security defaults for meetings the room hosts (the settings IT guides ask for)."""

    id_digits: Annotated[int, Field(ge=9, le=11)] = 10
    passcode_length: Annotated[int, Field(ge=6, le=10)] = 8
    waiting_room: bool = True
    join_before_host: bool = False
    mute_on_entry: bool = True
    video_off_on_entry: bool = True
    host_only_sharing: bool = True


class LifecycleSettings(_Section):
    """How the room retries a service that failed."""

    retry_initial_s: Annotated[float, Field(ge=0.01, le=60)] = 1.0
    retry_max_s: Annotated[float, Field(ge=0.1, le=3600)] = 60.0
    setup_timeout_s: Annotated[float, Field(ge=0.1, le=600)] = 30.0


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Section):
    """Everything the room is told by its configuration file."""

    state_dir: Annotated[Path, AfterValidator(_check_absolute)] = DEFAULT_STATE_DIR
    room: RoomSettings = RoomSettings()
    api: ApiSettings = ApiSettings()
    meeting: MeetingSettings = MeetingSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    logging: LoggingSettings = LoggingSettings()


def demo_settings() -> Settings:
    """The embedded default: what the room runs with when no file configures it."""
    return Settings()


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; raise `ConfigError` naming file, line and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_settings(text, str(path))


def parse_settings(text: str, filename: str = "roomsystem.toml") -> Settings:
    """Validate TOML ``text``; ``filename`` is only used in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_syntax_error(filename, exc)) from None
    # Paths are written as strings in TOML; strict mode would refuse them otherwise.
    if isinstance(data.get("state_dir"), str):
        data["state_dir"] = Path(data["state_dir"])
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        locator = KeyLocator(text)
        found = sorted(
            (locator.line_of(err["loc"]), _dotted(err["loc"]), _describe(err))
            for err in exc.errors()
        )
        raise ConfigError(
            "\n".join(f"{filename}:{line}: {key}: {what}" for line, key, what in found)
        ) from None


def _syntax_error(filename: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column \d+\)$", message)
    if match:
        return f"{filename}:{match.group(1)}: TOML syntax error: {message[: match.start()].strip()}"
    return f"{filename}: TOML syntax error: {message}"


def _dotted(loc: Sequence[int | str]) -> str:
    """The key as TOML writes it: bare where it can be, quoted (escaped) where not."""
    bare = re.compile(r"[A-Za-z0-9_\-]+")
    parts = (str(p) if bare.fullmatch(str(p)) else json.dumps(str(p)) for p in loc)
    return ".".join(parts) or "(file)"


def _describe(err: Any) -> str:
    """Say what is allowed and what was found, in the words of the config file."""
    kind, got = err["type"], _shown(err.get("input"))
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(err["loc"][:-1])) or "none"
        return f"unknown key (allowed here: {allowed})"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(err["loc"])
        return f"must be {low} to {high}, got {got}"
    if kind in ("string_too_short", "string_too_long"):
        low, high = _length_bounds(err["loc"])
        return f"must be {low} to {high} characters long, got {len(str(err.get('input')))}"
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
    }.get(kind)
    if expected:
        return f"must be {expected}, got {got}"
    if kind == "literal_error":
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


def _field(loc: Sequence[int | str]) -> FieldInfo | None:
    model: Any = Settings
    info: FieldInfo | None = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    return info


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    info = _field(loc) if loc else None
    model: Any = info.annotation if info else Settings
    return sorted(getattr(model, "model_fields", {}))


def _constraint(loc: Sequence[int | str], name: str) -> Any:
    info = _field(loc)
    for item in info.metadata if info else ():
        if hasattr(item, name):
            return getattr(item, name)
    return None


def _bounds(loc: Sequence[int | str]) -> tuple[Any, Any]:
    return _constraint(loc, "ge"), _constraint(loc, "le")


def _length_bounds(loc: Sequence[int | str]) -> tuple[Any, Any]:
    return _constraint(loc, "min_length"), _constraint(loc, "max_length")


class KeyLocator:
    """Finds the line of a dotted key in TOML text (tomllib keeps no positions).

    It understands table headers, dotted and quoted keys and skips multi-line strings,
    which is all a configuration file needs; a key it cannot find is reported at the
    line of its table, or line 1.
    """

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _ASSIGN = re.compile(
        r"^\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*="
    )

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        for number, path in self._keys(text):
            self._lines.setdefault(path, number)

    def line_of(self, loc: Sequence[int | str]) -> int:
        path = tuple(str(part) for part in loc if isinstance(part, str))
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return 1

    def _keys(self, text: str) -> Iterator[tuple[int, tuple[str, ...]]]:
        table: tuple[str, ...] = ()
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = self._HEADER.match(line)
            if header:
                table = _split_key(header.group(1))
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
    return tuple(next(p for p in groups if p) if any(groups) else "" for groups in parts)
