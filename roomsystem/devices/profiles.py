"""Certified device profiles: one TOML file per device model, validated strictly.

A profile says how to recognise a device (USB vendor:product, an optional bcdDevice
firmware range, name patterns), how to control it (protocol, transport, address, timing
quirks), what it can do (camera axes, audio channels, display inputs) and which of its
buttons mean what. The files live in ``roomsystem/firmware_profiles/`` (see its README.md
for the layout); every key is declared here, and an unknown key, a wrong type, a value out of
range or a contradiction between keys is an error naming the file, the line and the key:
``displays/lg-uh5f.toml:23: control.port: only allowed with transport = 'tcp' or 'udp'``.

Matching (``ProfileSet.match``) prefers the most specific rule: a USB id with a bcdDevice
range, then a USB id alone, then a name pattern; a device of a known kind that matches
nothing gets the generic (uncertified) profile of its kind. Two profiles whose rules
could claim the same device are an error, so the answer never depends on file order.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from roomsystem.errors import ConfigError
from roomsystem.tomlcheck import KeyLocator, TomlInvalid, dotted_key, parse_toml, validate_toml

logger = logging.getLogger(__name__)

#: The shipped profiles: package data, so a wheel has them as a checkout does (whose
#: top-level firmware_profiles/ links here). An installed package is plain files on disk.
DEFAULT_PROFILES_DIR = Path(str(resources.files("roomsystem") / "firmware_profiles"))
SCHEMA_VERSION = 1
#: A profile is a small hand-written file; anything bigger is not one.
MAX_PROFILE_BYTES = 256 * 1024

Kind = Literal["camera", "audio", "display"]
Protocol = Literal[
    "visca", "visca-ip", "uvc", "mdc", "pjlink", "nec", "lg", "cec", "usb-audio", "none"
]
Transport = Literal["serial", "tcp", "udp", "usb", "cec"]
Action = Literal["mute", "volume_up", "volume_down", "hook", "end_call"]
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000, 192000)

KINDS: tuple[str, ...] = ("camera", "audio", "display")
#: Which protocols drive which kind of device, and over which transports.
PROTOCOL_KINDS: dict[str, tuple[str, ...]] = {
    "visca": ("camera",),
    "visca-ip": ("camera",),
    "uvc": ("camera",),
    "usb-audio": ("audio",),
    "mdc": ("display",),
    "pjlink": ("display",),
    "nec": ("display",),
    "lg": ("display",),
    "cec": ("display",),
    "none": KINDS,
}
PROTOCOL_TRANSPORTS: dict[str, tuple[str, ...]] = {
    "visca": ("serial", "tcp", "udp"),  # raw VISCA bytes (PTZOptics speaks it over TCP/UDP)
    "visca-ip": ("udp",),  # Sony VISCA over IP: 8-byte header, UDP only
    "uvc": ("usb",),
    "usb-audio": ("usb",),
    "mdc": ("serial", "tcp"),
    "pjlink": ("tcp",),
    "nec": ("serial", "tcp"),
    "lg": ("serial", "tcp"),
    "cec": ("cec",),
    "none": ("serial", "tcp", "udp", "usb", "cec"),
}
#: The address each protocol puts on the wire, and its documented range.
ADDRESS_RANGES: dict[str, tuple[int, int, str]] = {
    "visca": (1, 7, "VISCA camera address"),
    "visca-ip": (1, 7, "VISCA camera address"),
    "mdc": (0, 254, "MDC display id"),
    "lg": (0, 99, "LG set id"),
    "nec": (1, 100, "NEC monitor id"),
}

_USB_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")
_BCD = re.compile(r"0x[0-9a-f]{4}")
_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_INPUT_NAME = re.compile(r"[a-z][a-z0-9_]*")
_KEY_NAME = re.compile(r"(KEY|BTN)_[A-Z0-9_]+")


class ProfileError(ConfigError):
    """A profile file that cannot be used; ``lines`` holds one ``FILE:LINE: key: message``
    per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# -- field types


def _tuple_from_array(value: Any) -> Any:
    # TOML arrays arrive as lists; frozen profiles keep tuples. Anything else is left for
    # the strict tuple check to reject with "must be an array".
    return tuple(value) if isinstance(value, list) else value


def _non_empty(value: Any) -> Any:
    # A length check after the items were validated: pydantic's own min_length also
    # fires when an item is merely invalid, which would report one problem twice.
    if not value:
        raise ValueError("must not be empty")
    return value


def _check_schema_version(value: int) -> int:
    if value != SCHEMA_VERSION:
        raise ValueError(f"this program reads schema_version {SCHEMA_VERSION}, got {value}")
    return value


def _one_of(allowed: tuple[int, ...]) -> AfterValidator:
    # Not a Literal: pydantic lets 9600.0 and true pass for Literal[9600] and Literal[1].
    def check(value: int) -> int:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}, got {value}")
        return value

    return AfterValidator(check)


def _check_text(value: str) -> str:
    if not value.strip() or any(not ch.isprintable() for ch in value):
        raise ValueError(f"must be printable text that is not blank, got {value!r}")
    return value


def _check_usb_id(value: str) -> str:
    if not _USB_ID.fullmatch(value):
        raise ValueError(
            f"must be VENDOR:PRODUCT as 4+4 lower-case hex digits like '046d:085f', got {value!r}"
        )
    return value


def _check_bcd(value: str) -> str:
    if not _BCD.fullmatch(value):
        raise ValueError(f"must be 0x and 4 lower-case hex digits like '0x0100', got {value!r}")
    return value


def _check_pattern(value: str) -> str:
    try:
        pattern = re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"is not a regular expression ({exc}), got {value!r}") from None
    if pattern.search("") is not None:
        raise ValueError(f"matches every name, got {value!r}")
    return value


Text = Annotated[str, Field(min_length=1, max_length=80), AfterValidator(_check_text)]
Source = Annotated[str, Field(min_length=1, max_length=400), AfterValidator(_check_text)]
UsbId = Annotated[str, AfterValidator(_check_usb_id)]
BcdValue = Annotated[str, AfterValidator(_check_bcd)]
Baudrate = Annotated[int, _one_of(BAUDRATES)]
SampleRate = Annotated[int, _one_of(SAMPLE_RATES)]
NamePattern = Annotated[str, Field(max_length=200), AfterValidator(_check_pattern)]


class _Table(BaseModel):
    # strict: "8" is not 8 and 1 is not true; a profile says what it means.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# -- the tables of a profile


class DeviceInfo(_Table):
    """``[device]``: what the device is and where its identifiers come from."""

    kind: Kind
    vendor: Text
    model: Text
    certified: bool
    sources: Annotated[
        tuple[Source, ...], BeforeValidator(_tuple_from_array), AfterValidator(_non_empty)
    ]


class BcdRange(_Table):
    """An inclusive bcdDevice (firmware) range, written as hex strings."""

    min: BcdValue
    max: BcdValue

    @model_validator(mode="after")
    def _ordered(self) -> BcdRange:
        if self.low > self.high:
            raise ValueError(f"min must not be above max, got min = {self.min}, max = {self.max}")
        return self

    @property
    def low(self) -> int:
        return int(self.min, 16)

    @property
    def high(self) -> int:
        return int(self.max, 16)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def overlaps(self, other: BcdRange) -> bool:
        return self.low <= other.high and other.low <= self.high


class MatchRules(_Table):
    """``[match]``: a device matches if any rule matches; the more specific rule wins."""

    usb: Annotated[tuple[UsbId, ...], BeforeValidator(_tuple_from_array)] = ()
    bcd_device: BcdRange | None = None
    name: Annotated[tuple[NamePattern, ...], BeforeValidator(_tuple_from_array)] = ()

    @property
    def empty(self) -> bool:
        return not self.usb and not self.name


class Control(_Table):
    """``[control]``: how the room talks to the device, with its timing quirks."""

    protocol: Protocol
    transport: Transport
    baudrate: Baudrate | None = None
    address: int | None = Field(default=None, ge=0, le=254)
    port: int | None = Field(default=None, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    command_gap_ms: int = Field(default=0, ge=0, le=10_000)
    # Some displays ignore commands for seconds after a power or input change (NEC's
    # manual asks for 15 s and 10 s); the driver waits this long before the next one.
    power_settle_s: float = Field(default=0.0, ge=0, le=60)
    input_settle_s: float = Field(default=0.0, ge=0, le=60)


class Axis(_Table):
    """A pan or tilt axis in the protocol's own units (VISCA steps, UVC arc seconds)."""

    min: int
    max: int
    max_speed: int = Field(ge=1, le=255)
    # False when the device only takes relative moves (UVC "PanTilt (Relative)"): the
    # range is then the mechanical limit, and positions cannot be read back.
    absolute: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Axis:
        if self.min >= self.max:
            raise ValueError(f"min must be less than max, got min = {self.min}, max = {self.max}")
        return self


class ZoomRange(_Table):
    """The zoom positions the protocol accepts, wide to tele."""

    min: int = Field(ge=0)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ZoomRange:
        if self.min >= self.max:
            raise ValueError(f"min must be less than max, got min = {self.min}, max = {self.max}")
        return self


class VideoFormat(_Table):
    width: int = Field(ge=16, le=8192)
    height: int = Field(ge=16, le=8192)
    fps: int = Field(ge=1, le=240)


class CameraCaps(_Table):
    """``[camera]``: axes (omitted for fixed cameras), presets and video formats."""

    pan: Axis | None = None
    tilt: Axis | None = None
    zoom: ZoomRange | None = None
    presets: int = Field(ge=0, le=256)
    formats: Annotated[
        tuple[VideoFormat, ...], BeforeValidator(_tuple_from_array), AfterValidator(_non_empty)
    ]


class AudioCaps(_Table):
    """``[audio]``: channels, echo cancellation in the device, sample rates."""

    capture_channels: int = Field(ge=0, le=32)
    playback_channels: int = Field(ge=0, le=32)
    echo_cancellation: bool
    sample_rates: Annotated[
        tuple[SampleRate, ...], BeforeValidator(_tuple_from_array), AfterValidator(_non_empty)
    ]


class VolumeRange(_Table):
    min: int = Field(ge=0, le=255)
    max: int = Field(ge=1, le=255)

    @model_validator(mode="after")
    def _ordered(self) -> VolumeRange:
        if self.min >= self.max:
            raise ValueError(f"min must be less than max, got min = {self.min}, max = {self.max}")
        return self


class DisplayCaps(_Table):
    """``[display]``: room input name -> the label the device shows, and its volume range."""

    inputs: Annotated[dict[str, Text], AfterValidator(_non_empty)]
    volume: VolumeRange | None = None


class Profile(_Table):
    """One device model, as one TOML file describes it. ``path`` and ``name`` (the file
    name without ``.toml``, which the room configuration refers to) are set by
    `load_profile`."""

    schema_version: Annotated[int, AfterValidator(_check_schema_version)]
    device: DeviceInfo
    match: MatchRules = MatchRules()
    control: Control
    camera: CameraCaps | None = None
    audio: AudioCaps | None = None
    display: DisplayCaps | None = None
    buttons: dict[str, Action] = Field(default_factory=dict)

    _path: Path | None = PrivateAttr(default=None)
    _text: str = PrivateAttr(default="")

    def __hash__(self) -> int:
        # The tables hold dicts (inputs, buttons), so hash by where the profile came from.
        return hash((self._path, self._text))

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def name(self) -> str:
        if self._path is not None:
            return self._path.stem
        return re.sub(r"[^a-z0-9]+", "-", f"{self.device.vendor} {self.device.model}".lower())

    @property
    def generic(self) -> bool:
        """An uncertified fallback for its kind (it has no match rules)."""
        return not self.device.certified

    def line_of(self, loc: Sequence[int | str]) -> int:
        """The line of a dotted key in the file this profile was loaded from (1 if unknown)."""
        return _locator(self._text).line_of(loc)

    def where(self, loc: Sequence[int | str]) -> str:
        """``FILE:LINE`` of a key, for messages that point at it."""
        return f"{self._path or self.name}:{self.line_of(loc)}"


@functools.lru_cache(maxsize=256)
def _locator(text: str) -> KeyLocator:
    return KeyLocator(text)


# -- loading one file


class _Problem(NamedTuple):
    """A cross-field rule that failed: where to point, which key to name, what is wrong."""

    loc: tuple[int | str, ...]
    message: str
    key: str | None = None


def load_profile(path: Path) -> Profile:
    """Read and validate one profile; raise `ProfileError` naming every problem."""
    filename = str(path)
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError([f"{filename}: larger than {MAX_PROFILE_BYTES} bytes"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError([f"{filename}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError([f"{filename}: cannot read: {exc}"]) from None
    profile = parse_profile(text, filename)
    if not _PROFILE_NAME.fullmatch(path.stem):
        raise ProfileError(
            [
                f"{filename}:1: (file): the file name is the profile's name and must be "
                f"up to 64 lower-case letters, digits, '-' or '_', got {path.stem!r}"
            ]
        )
    profile._path = path
    return profile


def parse_profile(text: str, filename: str = "profile.toml") -> Profile:
    """Validate TOML ``text`` as a profile; ``filename`` is only used in messages."""
    try:
        data = parse_toml(text, filename)
        profile = validate_toml(Profile, data, text, filename)
    except TomlInvalid as exc:
        raise ProfileError(exc.lines) from None
    except RecursionError:
        # tomllib recurses once per nested array or table; a hostile file can exhaust it.
        raise ProfileError([f"{filename}: TOML syntax error: nested too deeply"]) from None
    profile._text = text
    problems = list(_problems(profile))
    if problems:
        found = sorted(
            (profile.line_of(p.loc), p.key or dotted_key(p.loc), p.message) for p in problems
        )
        raise ProfileError([f"{filename}:{line}: {key}: {what}" for line, key, what in found])
    return profile


def _problems(profile: Profile) -> Iterator[_Problem]:
    """The rules that tie keys together; each problem names the key that has to change."""
    yield from _section_problems(profile)
    yield from _control_problems(profile)
    yield from _match_problems(profile)
    yield from _capability_problems(profile)
    yield from _button_problems(profile)


def _section_problems(profile: Profile) -> Iterator[_Problem]:
    kind = profile.device.kind
    for section in KINDS:
        present = getattr(profile, section) is not None
        if section == kind and not present:
            yield _Problem(
                ("device", "kind"), f"kind = {kind!r} needs the [{section}] table", key=section
            )
        elif section != kind and present:
            yield _Problem((section,), f"not allowed for kind = {kind!r}")


def _control_problems(profile: Profile) -> Iterator[_Problem]:
    control, kind = profile.control, profile.device.kind
    if kind not in PROTOCOL_KINDS[control.protocol]:
        allowed = ", ".join(repr(k) for k in PROTOCOL_KINDS[control.protocol])
        yield _Problem(
            ("control", "protocol"),
            f"protocol {control.protocol!r} drives kind {allowed}, not {kind!r}",
        )
    transports = PROTOCOL_TRANSPORTS[control.protocol]
    if control.transport not in transports:
        allowed = ", ".join(repr(t) for t in transports)
        yield _Problem(
            ("control", "transport"),
            f"protocol {control.protocol!r} runs over {allowed}, got {control.transport!r}",
        )
    yield from _transport_key_problems(control)
    yield from _address_problems(control)


def _transport_key_problems(control: Control) -> Iterator[_Problem]:
    serial = control.transport == "serial"
    network = control.transport in ("tcp", "udp")
    if control.baudrate is not None and not serial:
        yield _Problem(("control", "baudrate"), "only allowed with transport = 'serial'")
    if control.baudrate is None and serial:
        yield _Problem(
            ("control", "transport"), "transport = 'serial' needs a baudrate", "control.baudrate"
        )
    if control.port is not None and not network:
        yield _Problem(("control", "port"), "only allowed with transport = 'tcp' or 'udp'")
    if control.port is None and network:
        yield _Problem(
            ("control", "transport"),
            f"transport = {control.transport!r} needs a default port",
            "control.port",
        )


def _address_problems(control: Control) -> Iterator[_Problem]:
    limits = ADDRESS_RANGES.get(control.protocol)
    if limits is None:
        if control.address is not None:
            yield _Problem(
                ("control", "address"),
                f"protocol {control.protocol!r} has no device address; remove the key",
            )
        return
    low, high, what = limits
    if control.address is None:
        yield _Problem(
            ("control", "protocol"),
            f"protocol {control.protocol!r} needs an address ({what} {low} to {high})",
            "control.address",
        )
    elif not low <= control.address <= high:
        yield _Problem(
            ("control", "address"),
            f"{what} must be {low} to {high}, got {control.address}",
        )


def _match_problems(profile: Profile) -> Iterator[_Problem]:
    rules = profile.match
    if rules.bcd_device is not None and not rules.usb:
        yield _Problem(("match", "bcd_device"), "only allowed together with usb ids")
    for index, usb_id in enumerate(rules.usb):
        if usb_id in rules.usb[:index]:
            yield _Problem(("match", "usb", index), f"{usb_id} is listed twice")
    if profile.device.certified and rules.empty:
        yield _Problem(
            ("match",) if "match" in profile.model_fields_set else ("device", "certified"),
            "a certified profile needs at least one usb or name rule",
            "match",
        )
    if not profile.device.certified and not rules.empty:
        yield _Problem(
            ("match",),
            "an uncertified profile is the generic fallback of its kind and has no match rules",
        )


def _capability_problems(profile: Profile) -> Iterator[_Problem]:
    camera, audio, display = profile.camera, profile.audio, profile.display
    if camera is not None and profile.control.protocol == "uvc" and camera.presets:
        yield _Problem(
            ("camera", "presets"), f"UVC has no preset command; must be 0, got {camera.presets}"
        )
    if audio is not None:
        if audio.capture_channels == 0 and audio.playback_channels == 0:
            yield _Problem(
                ("audio", "capture_channels"),
                "an audio device needs capture or playback channels",
            )
        if len(set(audio.sample_rates)) != len(audio.sample_rates):
            yield _Problem(("audio", "sample_rates"), "lists a rate twice")
    if display is not None:
        for name in display.inputs:
            if not _INPUT_NAME.fullmatch(name):
                yield _Problem(
                    ("display", "inputs", name),
                    f"input names are lower-case words like 'hdmi1', got {name!r}",
                    f"display.inputs.{dotted_key([name])}",
                )


def _button_problems(profile: Profile) -> Iterator[_Problem]:
    known = _known_key_names()
    for key in profile.buttons:
        shaped = _KEY_NAME.fullmatch(key) is not None
        if not shaped or (known is not None and key not in known):
            yield _Problem(
                ("buttons", key),
                f"must be an evdev key name like 'KEY_MICMUTE', got {key!r}",
                dotted_key(["buttons", key]),
            )


@functools.cache
def _known_key_names() -> frozenset[str] | None:
    try:
        from evdev import ecodes
    except ImportError:  # evdev is Linux-only; elsewhere the name's shape is checked
        return None
    return frozenset(name for name in ecodes.ecodes if name.startswith(("KEY_", "BTN_")))


# -- a set of profiles


@dataclass(frozen=True, slots=True)
class Candidate:
    """What discovery knows about a device: its kind (None if unknown), USB id
    (``"046d:085f"``), bcdDevice, and names (USB product, V4L2 card, ALSA card, or the
    model name the device reports over its control protocol)."""

    kind: str | None = None
    usb_id: str | None = None
    bcd_device: int | None = None
    names: tuple[str, ...] = ()


class ProfileSet:
    """The profiles that loaded, the problems of those that did not, and matching."""

    def __init__(self, profiles: Iterable[Profile], errors: Iterable[str] = ()) -> None:
        self.profiles: tuple[Profile, ...] = tuple(profiles)
        self.errors: list[str] = list(errors)
        self._by_name = {profile.name: profile for profile in self.profiles}

    @classmethod
    def empty(cls) -> ProfileSet:
        return cls(())

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, name: str) -> Profile | None:
        """The profile of that name (its file name without ``.toml``)."""
        return self._by_name.get(name)

    def generic(self, kind: str) -> Profile | None:
        """The uncertified fallback profile for ``kind``, if one loaded."""
        return next((p for p in self.profiles if p.generic and p.device.kind == kind), None)

    def match(self, candidate: Candidate) -> Profile | None:
        """The most specific profile for ``candidate``: USB id with a bcdDevice range, then
        USB id, then name pattern; else the generic profile of the candidate's kind."""
        pool = [
            profile
            for profile in self.profiles
            if candidate.kind is None or profile.device.kind == candidate.kind
        ]
        found = _match_usb(pool, candidate) or _match_name(pool, candidate)
        if found is not None:
            return found
        return self.generic(candidate.kind) if candidate.kind is not None else None


def _match_usb(pool: Sequence[Profile], candidate: Candidate) -> Profile | None:
    if candidate.usb_id is None:
        return None
    usb_id = candidate.usb_id.lower()
    claiming = [p for p in pool if usb_id in p.match.usb]
    ranged = [
        p
        for p in claiming
        if p.match.bcd_device is not None and candidate.bcd_device in p.match.bcd_device
    ]
    # The overlap check keeps each tier to at most one profile per device.
    if ranged:
        return ranged[0]
    return next((p for p in claiming if p.match.bcd_device is None), None)


def _match_name(pool: Sequence[Profile], candidate: Candidate) -> Profile | None:
    best: tuple[int, int] | None = None
    chosen: Profile | None = None
    for profile in pool:
        for pattern in profile.match.name:
            for name in candidate.names:
                hit = re.search(pattern, name, re.IGNORECASE)
                if hit is None:
                    continue
                # The longest matched text wins ("Rally Bar" over "Rally"), then the
                # longer pattern; ties go to the first file in path order.
                score = (hit.end() - hit.start(), len(pattern))
                if best is None or score > best:
                    best, chosen = score, profile
    return chosen


# -- overlaps between profiles


def overlap_errors(first: Profile, second: Profile) -> list[str]:
    """Why ``first`` and ``second`` could claim the same device, one line per reason,
    pointing at ``second`` and naming ``first``."""
    lines: list[str] = []
    if first.name == second.name:
        lines.append(
            f"{second.where(())}: (file): profile name {second.name!r} is also "
            f"used by {first.where(())}"
        )
    lines += _usb_overlaps(first, second)
    if first.device.kind == second.device.kind:
        lines += _name_overlaps(first, second)
        if first.generic and second.generic:
            loc = ("device", "certified")
            lines.append(
                f"{second.where(loc)}: device.certified: a second generic fallback for kind "
                f"{second.device.kind!r}; the first is {first.where(loc)}"
            )
    return lines


def _usb_overlaps(first: Profile, second: Profile) -> Iterator[str]:
    # A ranged rule beside an unranged one is fine: the ranged one is more specific.
    a_range, b_range = first.match.bcd_device, second.match.bcd_device
    if (a_range is None) != (b_range is None):
        return
    if a_range is not None and b_range is not None and not a_range.overlaps(b_range):
        return
    for index, usb_id in enumerate(second.match.usb):
        if usb_id not in first.match.usb:
            continue
        loc = ("match", "usb", index)
        other = first.where(("match", "usb", first.match.usb.index(usb_id)))
        why = "with overlapping bcd_device ranges" if a_range else "without bcd_device ranges"
        yield (
            f"{second.where(loc)}: {dotted_key(loc)}: usb id {usb_id} is also claimed by "
            f"{other} {why}"
        )


def _name_overlaps(first: Profile, second: Profile) -> Iterator[str]:
    theirs = {pattern.lower(): index for index, pattern in enumerate(first.match.name)}
    for index, pattern in enumerate(second.match.name):
        if pattern.lower() not in theirs:
            continue
        loc = ("match", "name", index)
        other = first.where(("match", "name", theirs[pattern.lower()]))
        yield (
            f"{second.where(loc)}: {dotted_key(loc)}: name pattern {pattern!r} is also used "
            f"by {other} for the same kind"
        )


# -- loading and checking many files


def load_profiles(root: Path) -> ProfileSet:
    """Every ``*.toml`` under ``root``. A broken file, or one that overlaps a profile
    loaded before it (in path order), is logged, kept in ``errors`` and skipped."""
    if not root.is_dir():
        return ProfileSet((), [f"{root}: no such directory"])
    loaded = _load_files(sorted(root.rglob("*.toml")))
    for line in loaded.errors:
        logger.warning("device profile skipped: %s", line)
    return loaded


def check_profiles(paths: Sequence[Path]) -> list[str]:
    """Every problem in the profiles at ``paths`` (files or folders), checked together
    for overlaps; empty when all are valid. For ``roomsystem profiles check``."""
    files: list[Path] = []
    errors: list[str] = []
    for path in paths or [DEFAULT_PROFILES_DIR]:
        if path.is_dir():
            found = sorted(path.rglob("*.toml"))
            if not found:
                errors.append(f"{path}: no *.toml profiles in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(files))
    return errors + _load_files(unique, every_overlap=True).errors


def _load_files(files: Sequence[Path], every_overlap: bool = False) -> ProfileSet:
    """Load ``files`` in order; a profile that overlaps one accepted before it is skipped.
    With ``every_overlap``, overlaps with skipped profiles are reported too."""
    errors: list[str] = []
    valid: list[Profile] = []
    accepted: list[Profile] = []
    for path in files:
        try:
            profile = load_profile(path)
        except ProfileError as exc:
            errors += exc.lines
            continue
        clashes = [line for earlier in accepted for line in overlap_errors(earlier, profile)]
        if every_overlap:
            errors += [line for earlier in valid for line in overlap_errors(earlier, profile)]
        else:
            errors += clashes
        valid.append(profile)
        if not clashes:
            accepted.append(profile)
    return ProfileSet(accepted, errors)
