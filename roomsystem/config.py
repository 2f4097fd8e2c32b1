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
DEFAULT_WEB_LISTEN = "0.0.0.0:8443"


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
    personal_id: Annotated[str, Field(pattern=r"^[1-9][0-9]{8,10}$")] | None = None
    authenticated_only: bool = False
    invite_valid_h: Annotated[float, Field(gt=0, le=720)] = 12.0
    guess_limit_per_address: Annotated[int, Field(ge=1, le=100)] = 5
    guess_limit_per_meeting: Annotated[int, Field(ge=1, le=1000)] = 30
    guess_window_s: Annotated[float, Field(ge=1, le=86400)] = 300.0
    max_participants: Annotated[int, Field(ge=1, le=500)] = 50
    remove_bans_address: bool = True

    @model_validator(mode="after")
    def _personal_id_fits(self) -> MeetingSettings:
        if self.personal_id is not None and len(self.personal_id) != self.id_digits:
            raise ValueError(
                f"personal_id must have id_digits ({self.id_digits}) digits,"
                f" got {len(self.personal_id)}"
            )
        return self


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


class WebSettings(_Section):
    """The HTTPS site that serves the browser client and its WebRTC signalling."""

    listen: Listen = DEFAULT_WEB_LISTEN
    # Host name or address put in join links; empty: the listen address, or when that is
    # every interface, this machine's host name.
    public_host: Annotated[str, Field(max_length=253, pattern=r"^[A-Za-z0-9.\-:\[\]]*$")] = ""
    tls_cert: AbsolutePath | None = None
    tls_key: AbsolutePath | None = None

    @model_validator(mode="after")
    def _cert_and_key(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither (a certificate is made)")
        return self


def _check_interface_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"must be an interface's IP address, such as '127.0.0.1', got {value!r}"
        ) from None
    return value


InterfaceAddress = Annotated[str, AfterValidator(_check_interface_address)]


class SharingSettings(_Section):
    """Wireless screen sharing: how the room is announced and who may share."""

    enabled: bool = True
    # Addresses of the interfaces to announce the room on; empty: every interface.
    mdns_interfaces: Annotated[tuple[InterfaceAddress, ...], Field(strict=False)] = ()
    mdns_refresh_s: Annotated[float, Field(ge=0.5, le=300)] = 5.0
    require_key: bool = True
    pairing_code: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{4,12}$")] | None = None
    key_rotate_min: Annotated[float, Field(ge=0, le=10080)] = 30.0
    free_attempts: Annotated[int, Field(ge=0, le=100)] = 3
    lockout_initial_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    lockout_max_s: Annotated[float, Field(ge=1, le=86400)] = 300.0
    takeover: Literal["allow", "confirm"] = "allow"
    confirm_timeout_s: Annotated[float, Field(ge=1, le=300)] = 30.0
    stall_timeout_s: Annotated[float, Field(ge=0.2, le=60)] = 2.0

    @model_validator(mode="after")
    def _lockout_range(self) -> SharingSettings:
        if self.lockout_max_s < self.lockout_initial_s:
            raise ValueError("lockout_max_s must be at least lockout_initial_s")
        return self


class CalendarSettings(_Section):
    """Where the room's bookings come from, and how the room treats them."""

    backend: Literal["local", "ews", "graph", "caldav"] = "local"
    # EWS: the Exchange.asmx address; CalDAV: the calendar collection; Graph: the API root.
    url: Annotated[str, Field(max_length=2048, pattern=r"^(https?://\S+)?$")] = ""
    username: Annotated[str, Field(max_length=256)] = ""
    # The password (EWS, CalDAV) or client secret (Graph), in a file only its owner can read;
    # without it, the environment variable ROOMSYSTEM_CALENDAR_PASSWORD.
    password_file: AbsolutePath | None = None
    mailbox: Annotated[str, Field(max_length=256)] = ""
    poll_seconds: Annotated[float, Field(ge=0.05, le=3600)] = 60.0
    timeout_s: Annotated[float, Field(ge=0.1, le=300)] = 20.0
    sync_days: Annotated[int, Field(ge=1, le=400)] = 14
    max_bookings: Annotated[int, Field(ge=10, le=100000)] = 2000
    verify_tls: bool = True
    # Certificates to trust for the calendar server (and Graph's sign-in), besides the system's.
    ca_file: AbsolutePath | None = None
    ews_auth: Literal["basic", "ntlm", "oauth"] = "ntlm"
    ews_access: Literal["delegate", "impersonation"] = "delegate"
    ews_version: Literal["2013", "2013_SP1", "2016", "2019"] = "2016"
    graph_tenant: Annotated[str, Field(max_length=128)] = ""
    graph_client_id: Annotated[str, Field(max_length=128)] = ""
    graph_authority: Annotated[str, Field(pattern=r"^https?://\S+$")] = (
        "https://login.microsoftonline.com"
    )
    # Graph: accept new bookings as the room (the room mailbox auto-accepts).
    accept_bookings: bool = False
    # EWS: streaming notifications trigger a sync at once (polling stays as the fallback).
    ews_streaming: bool = True
    release_no_shows: bool = False
    release_after_min: Annotated[int, Field(ge=1, le=120)] = 10
    checkin_before_min: Annotated[int, Field(ge=0, le=60)] = 5
    decline_series_after: Annotated[int, Field(ge=0, le=100)] = 3
    show_subjects: bool = True
    show_organizers: bool = True
    sample_bookings: bool = False

    @model_validator(mode="after")
    def _backend_needs(self) -> CalendarSettings:
        needs = {
            "ews": ("url", "mailbox"),
            "caldav": ("url",),
            "graph": ("mailbox", "graph_tenant", "graph_client_id"),
        }
        missing = [key for key in needs.get(self.backend, ()) if not getattr(self, key)]
        if missing:
            raise ValueError(f"backend {self.backend!r} needs {', '.join(missing)}")
        return self


def _check_ice_url(value: str) -> str:
    if not re.fullmatch(r"(stun|stuns|turn|turns):[^\s]+", value):
        raise ValueError(
            "must be a stun:, stuns:, turn: or turns: URL such as 'turn:turn.example.org:3478',"
            f" got {value!r}"
        )
    return value


IceUrl = Annotated[str, AfterValidator(_check_ice_url)]


class IceServerSettings(_Section):
    """One STUN or TURN server the room's WebRTC peers may use."""

    urls: Annotated[tuple[IceUrl, ...], Field(strict=False, min_length=1)]
    username: Annotated[str, Field(max_length=256)] = ""
    credential: Annotated[str, Field(max_length=256)] = ""


class WebRTCSettings(_Section):
    """Where the room's WebRTC peers gather ICE candidates."""

    # Addresses offered as ICE host candidates; empty: every interface (but loopback).
    ice_host_addresses: Annotated[tuple[InterfaceAddress, ...], Field(strict=False)] = ()
    # STUN/TURN servers; empty: none (never a public STUN server by default).
    ice_servers: Annotated[tuple[IceServerSettings, ...], Field(strict=False)] = ()


VideoSize = Annotated[str, Field(pattern=r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$")]


class MediaSettings(_Section):
    """The room's camera, microphone and speaker, how they are encoded, where recordings go."""

    # Capture devices; empty: a synthetic test picture and tone (the demo room's).
    camera: Annotated[str, Field(max_length=256)] = ""
    # What the camera is asked to send; empty: its driver's default. USB cameras often
    # manage 720p at 30 fps only as "mjpeg".
    camera_format: Literal["", "mjpeg", "yuyv422", "nv12"] = ""
    microphone: Annotated[str, Field(max_length=256)] = ""
    # ALSA device that plays the meeting's mixed audio; empty: none (mixed audio is kept).
    speaker: Annotated[str, Field(max_length=256)] = ""
    video_size: VideoSize = "1280x720"
    frame_rate: Annotated[int, Field(ge=5, le=60)] = 30
    video_codec: Literal["vp8", "h264"] = "vp8"
    min_bitrate_kbps: Annotated[int, Field(ge=50, le=20000)] = 250
    max_bitrate_kbps: Annotated[int, Field(ge=100, le=50000)] = 1500
    # Where recordings are written; unset: "recordings" in the state directory.
    recordings_dir: AbsolutePath | None = None

    @model_validator(mode="after")
    def _bitrate_range(self) -> MediaSettings:
        if self.max_bitrate_kbps < self.min_bitrate_kbps:
            raise ValueError("max_bitrate_kbps must be at least min_bitrate_kbps")
        return self


class LifecycleSettings(_Section):
    """How the room retries a service that failed."""

    retry_initial_s: Annotated[float, Field(ge=0.01, le=60)] = 1.0
    retry_max_s: Annotated[float, Field(ge=0.1, le=3600)] = 60.0
    setup_timeout_s: Annotated[float, Field(ge=0.1, le=600)] = 30.0


def _check_mail_address(value: str) -> str:
    if not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", value):
        raise ValueError(f"must be an e-mail address such as 'it@example.org', got {value!r}")
    return value


MailAddress = Annotated[str, AfterValidator(_check_mail_address)]


class AlertsSettings(_Section):
    """Where the room's alerts (device offline, service failed, calendar stale) are sent."""

    grace_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    webhook_url: Annotated[str, Field(max_length=2048, pattern=r"^(https?://\S+)?$")] = ""
    webhook_token_file: AbsolutePath | None = None
    webhook_timeout_s: Annotated[float, Field(ge=0.1, le=120)] = 10.0
    attempts: Annotated[int, Field(ge=1, le=50)] = 8
    retry_initial_s: Annotated[float, Field(ge=0.01, le=600)] = 2.0
    retry_max_s: Annotated[float, Field(ge=0.01, le=3600)] = 300.0
    smtp_host: Annotated[str, Field(max_length=253)] = ""
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_starttls: bool = True
    smtp_username: Annotated[str, Field(max_length=256)] = ""
    smtp_password_file: AbsolutePath | None = None
    smtp_ca_file: AbsolutePath | None = None
    smtp_timeout_s: Annotated[float, Field(ge=0.1, le=120)] = 20.0
    mail_from: Annotated[MailAddress, Field(max_length=256)] | Literal[""] = ""
    mail_to: Annotated[tuple[MailAddress, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _mail_needs(self) -> AlertsSettings:
        if self.smtp_host and (not self.mail_from or not self.mail_to):
            raise ValueError("smtp_host needs mail_from and mail_to")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be at least retry_initial_s")
        return self


class MetricsSettings(_Section):
    """``GET /metrics`` on the API address, in the Prometheus format (bearer token needed)."""

    enabled: bool = True


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Section):
    """Everything the room is told by its configuration file."""

    state_dir: AbsolutePath = DEFAULT_STATE_DIR
    room: RoomSettings = RoomSettings()
    api: ApiSettings = ApiSettings()
    meeting: MeetingSettings = MeetingSettings()
    devices: DevicesSettings = DevicesSettings()
    web: WebSettings = WebSettings()
    sharing: SharingSettings = SharingSettings()
    webrtc: WebRTCSettings = WebRTCSettings()
    media: MediaSettings = MediaSettings()
    calendar: CalendarSettings = CalendarSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    logging: LoggingSettings = LoggingSettings()
    alerts: AlertsSettings = AlertsSettings()
    metrics: MetricsSettings = MetricsSettings()


def demo_settings() -> Settings:
    """The embedded default: what the room runs with when no file configures it, which is
    the defaults plus a few sample bookings in its new local calendar."""
    settings = Settings()
    calendar = settings.calendar.model_copy(update={"sample_bookings": True})
    return settings.model_copy(update={"calendar": calendar})


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
