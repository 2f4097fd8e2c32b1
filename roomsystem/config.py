"""The room's configuration: one TOML file, validated into typed, frozen settings.

Every key is declared here; a key nobody declared is an error, so a typo never passes
silently. Errors name the file, the line and the dotted key, and say what is allowed:
``roomsystem.toml:12: meeting.passcode_length: must be 6 to 10, got 4``.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from roomsystem.errors import ConfigError
from roomsystem.tomlcheck import TomlInvalid, parse_toml, validate_toml

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
# TOML writes paths as strings: let those through strict mode, then insist on absolute.
AbsolutePath = Annotated[Path, Field(strict=False), AfterValidator(_check_absolute)]
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


def _check_device_id(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", value):
        raise ValueError(
            "must be 1 to 32 lower-case letters, digits or '-', not starting with '-',"
            f" got {value!r}"
        )
    return value


DeviceId = Annotated[str, AfterValidator(_check_device_id)]


class AddedDevice(_Section):
    """A device the room cannot discover by itself: on the network or on a serial port."""

    id: DeviceId
    profile: Annotated[str, Field(min_length=1, max_length=64)]
    name: Annotated[str, Field(max_length=64)] = ""
    serial: Annotated[str, Field(min_length=1)] | None = None
    host: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    address: Annotated[int, Field(ge=0, le=254)] | None = None
    password_file: AbsolutePath | None = None

    @model_validator(mode="after")
    def _one_connection(self) -> AddedDevice:
        if (self.serial is None) == (self.host is None):
            raise ValueError("give either serial (a device path) or host (a network address)")
        return self


class DevicesSettings(_Section):
    """How the room finds, watches and drives its devices."""

    profiles_dir: AbsolutePath | None = None
    discover_usb: bool = True
    discover_cec: bool = True
    poll_s: Annotated[float, Field(ge=0.2, le=300)] = 5.0
    rediscover_s: Annotated[float, Field(ge=0.5, le=60)] = 2.0
    display_standby_after_min: Annotated[int, Field(ge=0, le=1440)] = 10
    # TOML arrays are lists; strict mode alone would refuse them for a tuple.
    add: Annotated[tuple[AddedDevice, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> DevicesSettings:
        ids = [device.id for device in self.add]
        if len(ids) != len(set(ids)):
            raise ValueError(f"device ids must be unique, got {ids}")
        return self


class LifecycleSettings(_Section):
    """How the room retries a service that failed."""

    retry_initial_s: Annotated[float, Field(ge=0.01, le=60)] = 1.0
    retry_max_s: Annotated[float, Field(ge=0.1, le=3600)] = 60.0
    setup_timeout_s: Annotated[float, Field(ge=0.1, le=600)] = 30.0


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Section):
    """Everything the room is told by its configuration file."""

    state_dir: AbsolutePath = DEFAULT_STATE_DIR
    room: RoomSettings = RoomSettings()
    api: ApiSettings = ApiSettings()
    meeting: MeetingSettings = MeetingSettings()
    devices: DevicesSettings = DevicesSettings()
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
        return validate_toml(Settings, parse_toml(text, filename), text, filename)
    except TomlInvalid as exc:
        raise ConfigError(str(exc)) from None
