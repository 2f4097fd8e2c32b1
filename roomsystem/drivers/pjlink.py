"""PJLink projector and display control (TCP port 4352): sans-I/O codec and asyncio client.

Sources: JBMIA "PJLink Specifications", Class 1 (Version 1.04, 2013-12-10) and Class 2
(Version 2.00, 2017-01-31):

- §2 Command format. A command line is ``%`` + class digit + 4-character body + space +
  parameter (at most 128 bytes) + CR, e.g. ``%1POWR 1\\r``; a query's parameter is ``?``.
  The response line repeats header and body with ``=`` instead of the space:
  ``%1POWR=OK\\r``. The longest line is therefore 136 bytes. Error results: ``ERR1``
  undefined command, ``ERR2`` out of parameter, ``ERR3`` unavailable time, ``ERR4``
  projector/display failure.
- §4 Command descriptions. Class 1: POWR (0 off, 1 on; query answers 0 standby, 1 on,
  2 cooling, 3 warm-up), INPT (input ``<type><number>``: type 1 RGB, 2 video, 3 digital,
  4 storage, 5 network; number 1-9), AVMT (11/10 video mute on/off, 21/20 audio, 31/30
  both), ERST (six digits fan, lamp, temperature, cover, filter, other: 0 ok, 1 warning,
  2 error), LAMP (``hours on/off`` pairs, up to 8 lamps), INST, NAME, INF1, INF2, INFO,
  CLSS. Class 2 adds input type 6 (internal) and numbers A-Z (sent as ``%2INPT``,
  ``%2INST``), SNUM, SVER, INNM, IRES, RRES, FILT, RLMP, RFIL, SVOL/MVOL (one step down
  ``0`` or up ``1``: there is no absolute volume), FREZ.
- Authentication procedure. On connect the device sends ``PJLINK 0\\r`` (no
  authentication) or ``PJLINK 1 <8-character random number>\\r``; the controller prefixes its
  first command with MD5(random number + password) as 32 lowercase hex digits, and later
  commands on the same connection go without it. A wrong digest is answered
  ``PJLINK ERRA\\r``.
- Disconnection. The device closes a connection on which nothing was sent for 30 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum

from roomsystem.drivers.display import DisplayStatus
from roomsystem.drivers.errors import (
    DeviceRejected,
    DeviceTimeout,
    DriverError,
    FrameError,
    LinkClosed,
)
from roomsystem.drivers.link import StreamLink

logger = logging.getLogger(__name__)

PJLINK_PORT = 4352
MAX_PARAM = 128
MAX_LINE = 136  # "%1" + body (4) + separator + parameter (128) + CR
DIGEST_LENGTH = 32
IDLE_CLOSE_S = 30.0  # the device drops a connection idle this long
CR = b"\r"

ERROR_MEANINGS = {
    1: "undefined command",
    2: "out of parameter",
    3: "unavailable time",
    4: "projector/display failure",
}

CLASS1_INPUT = re.compile(r"[1-5][1-9]")
CLASS2_INPUT = re.compile(r"[1-6][1-9A-Z]")
_BODY = re.compile(r"[0-9A-Za-z]{4}")
_DIGEST = re.compile(r"[0-9a-fA-F]{32}")
_RANDOM = re.compile(r"[!-~]{8}")  # 8 printable ASCII characters, no space

# The classes under which a device accepts each command (§4). A class 2 device also takes
# class 1 commands with a %2 header; class 2 commands with %1 are undefined (ERR1).
COMMAND_MIN_CLASS = {
    **dict.fromkeys(
        ("POWR", "INPT", "AVMT", "ERST", "LAMP", "INST", "NAME", "INF1", "INF2", "INFO", "CLSS"),
        1,
    ),
    **dict.fromkeys(
        ("SNUM", "SVER", "INNM", "IRES", "RRES", "FILT", "RLMP", "RFIL", "SVOL", "MVOL", "FREZ"),
        2,
    ),
}


class PowerState(IntEnum):
    """The POWR query's answer."""

    OFF = 0
    ON = 1
    COOLING = 2
    WARMING_UP = 3


class ErrorLevel(IntEnum):
    """One ERST digit."""

    OK = 0
    WARNING = 1
    ERROR = 2


def _strip_cr(data: bytes, what: str) -> bytes:
    if not data.endswith(CR):
        raise FrameError(f"PJLink {what} does not end in CR: {data!r}")
    line = data[:-1]
    if CR in line:
        raise FrameError(f"PJLink {what} holds more than one line: {data!r}")
    return line


def _check_param(param: str) -> None:
    if len(param.encode("utf-8")) > MAX_PARAM:
        raise ValueError(f"PJLink parameter longer than {MAX_PARAM} bytes: {param!r}")
    if any(ch < " " or ch == "\x7f" for ch in param):
        raise ValueError(f"PJLink parameter holds control characters: {param!r}")


def _check_header(body: str, pjlink_class: int) -> None:
    if not _BODY.fullmatch(body):
        raise ValueError(f"PJLink command body must be 4 letters or digits: {body!r}")
    if not 1 <= pjlink_class <= 9:
        raise ValueError(f"PJLink class must be a digit 1-9: {pjlink_class!r}")


def _split_line(line: bytes, separator: bytes, what: str) -> tuple[int, str, str]:
    """Header, body and parameter of ``%<class><body><separator><param>`` (no CR)."""
    header = line[:7]
    if len(header) < 7 or header[:1] != b"%" or header[6:7] != separator:
        raise FrameError(f"PJLink {what} is malformed: {line!r}")
    if not (header.isascii() and header[1:2].isdigit()):
        raise FrameError(f"PJLink {what} header is malformed: {line!r}")
    try:
        param = line[7:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"PJLink {what} is not UTF-8: {line!r}") from None
    return int(header[1:2]), header[2:6].decode("ascii"), param


@dataclass(frozen=True, slots=True)
class Greeting:
    """What the device sends on connect: ``PJLINK 0`` or ``PJLINK 1 <random>`` (authentication)."""

    random: str | None = None

    def __post_init__(self) -> None:
        if self.random is not None and not _RANDOM.fullmatch(self.random):
            raise ValueError(
                f"PJLink random number must be 8 printable characters: {self.random!r}"
            )

    @classmethod
    def parse(cls, data: bytes) -> Greeting:
        line = _strip_cr(data, "greeting")
        if line == b"PJLINK 0":
            return cls()
        if len(line) != 17 or not line.startswith(b"PJLINK 1 "):
            raise FrameError(f"not a PJLink greeting: {data!r}")
        try:
            return cls(line[9:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise FrameError(f"PJLink greeting has a bad random number: {data!r}") from None

    def __bytes__(self) -> bytes:
        if self.random is None:
            return b"PJLINK 0\r"
        return b"PJLINK 1 " + self.random.encode("ascii") + CR

    def digest(self, password: str) -> str:
        """The 32 hex digits that prefix the first command: MD5(random number + password)."""
        if self.random is None:
            raise ValueError("this PJLink device asks for no authentication")
        return hashlib.md5((self.random + password).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """``PJLINK ERRA``: the device refused the password digest."""

    @classmethod
    def parse(cls, data: bytes) -> AuthFailure:
        if data != b"PJLINK ERRA\r":
            raise FrameError(f"not a PJLink authentication error: {data!r}")
        return cls()

    def __bytes__(self) -> bytes:
        return b"PJLINK ERRA\r"


@dataclass(frozen=True, slots=True)
class Command:
    """A command line ``[digest]%<class><body> <param>``; queries have param ``?``."""

    body: str
    param: str = "?"
    pjlink_class: int = 1
    digest: str | None = None

    def __post_init__(self) -> None:
        _check_header(self.body, self.pjlink_class)
        _check_param(self.param)
        if self.digest is not None and not _DIGEST.fullmatch(self.digest):
            raise ValueError(f"PJLink digest must be 32 hex digits: {self.digest!r}")

    @classmethod
    def parse(cls, data: bytes) -> Command:
        line = _strip_cr(data, "command")
        digest = None
        if not line.startswith(b"%"):
            # Only the first command of an authenticated connection carries a digest.
            digest, line = line[:DIGEST_LENGTH].decode("latin-1"), line[DIGEST_LENGTH:]
        pjlink_class, body, param = _split_line(line, b" ", "command")
        try:
            return cls(body, param, pjlink_class, digest)
        except ValueError as exc:
            raise FrameError(f"{exc} in {data!r}") from None

    def __bytes__(self) -> bytes:
        line = f"{self.digest or ''}%{self.pjlink_class}{self.body} {self.param}\r"
        return line.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Response:
    """A response line ``%<class><body>=<result>``; ``result`` is ``OK``, a value or ``ERRn``."""

    body: str
    result: str
    pjlink_class: int = 1

    def __post_init__(self) -> None:
        _check_header(self.body, self.pjlink_class)
        _check_param(self.result)

    @classmethod
    def parse(cls, data: bytes) -> Response:
        pjlink_class, body, result = _split_line(_strip_cr(data, "response"), b"=", "response")
        try:
            return cls(body, result, pjlink_class)
        except ValueError as exc:
            raise FrameError(f"{exc} in {data!r}") from None

    def __bytes__(self) -> bytes:
        return f"%{self.pjlink_class}{self.body}={self.result}\r".encode()

    @classmethod
    def error(cls, command: Command, code: int) -> Response:
        return cls(command.body.upper(), f"ERR{code}", command.pjlink_class)

    @property
    def error_code(self) -> int | None:
        """1-4 for ``ERR1``-``ERR4``, None for any other result."""
        if len(self.result) == 4 and self.result[:3] == "ERR" and self.result[3] in "1234":
            return int(self.result[3])
        return None


def parse_device_line(data: bytes) -> Greeting | AuthFailure | Response:
    """Any line a PJLink device sends on TCP."""
    if data.startswith(b"PJLINK "):
        return AuthFailure.parse(data) if data == b"PJLINK ERRA\r" else Greeting.parse(data)
    return Response.parse(data)


class LineDecoder:
    """Splits a byte stream into CR-terminated lines of at most ``max_length`` bytes.

    A line that grows past ``max_length`` is dropped up to its CR and reported once as a
    `FrameError`; decoding then resumes at the next line. A LF after a CR (controllers that
    end lines in CR LF) is dropped, and so are empty lines.
    """

    def __init__(self, max_length: int = MAX_LINE) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        """The next complete line with its CR, or None until more bytes arrive."""
        while True:  # every pass consumes bytes from the buffer or returns
            end = self._buffer.find(CR)
            if self._skipping:
                if end < 0:
                    self._buffer.clear()
                    return None
                del self._buffer[: end + 1]
                self._skipping = False
                continue
            if end < 0:
                if len(self._buffer) >= self.max_length:
                    size = len(self._buffer)
                    self._buffer.clear()
                    self._skipping = True
                    raise FrameError(f"PJLink line longer than {self.max_length} bytes ({size}+)")
                return None
            line = bytes(self._buffer[: end + 1]).lstrip(b"\n")
            del self._buffer[: end + 1]
            if len(line) > self.max_length:
                raise FrameError(f"PJLink line longer than {self.max_length} bytes: {line[:40]!r}")
            if line != CR:
                return line


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """The ERST answer: a level per component."""

    fan: ErrorLevel = ErrorLevel.OK
    lamp: ErrorLevel = ErrorLevel.OK
    temperature: ErrorLevel = ErrorLevel.OK
    cover: ErrorLevel = ErrorLevel.OK
    filter: ErrorLevel = ErrorLevel.OK
    other: ErrorLevel = ErrorLevel.OK

    @classmethod
    def parse(cls, param: str) -> ErrorStatus:
        if len(param) != 6 or any(digit not in "012" for digit in param):
            raise FrameError(f"PJLink error status must be 6 digits 0-2: {param!r}")
        return cls(*(ErrorLevel(int(digit)) for digit in param))

    def __str__(self) -> str:
        levels = (self.fan, self.lamp, self.temperature, self.cover, self.filter, self.other)
        return "".join(str(int(level)) for level in levels)

    @property
    def ok(self) -> bool:
        return str(self) == "000000"


@dataclass(frozen=True, slots=True)
class Lamp:
    """One lamp of the LAMP answer: cumulative lighting hours and whether it is lit."""

    hours: int
    on: bool


def parse_lamps(param: str) -> tuple[Lamp, ...]:
    """``"1200 1 300 0"`` -> two lamps. Up to 8 lamps, hours 0-99999."""
    fields = param.split(" ")
    if len(fields) % 2 or not 2 <= len(fields) <= 16:
        raise FrameError(f"PJLink lamp status needs 1-8 'hours on/off' pairs: {param!r}")
    lamps = []
    for hours, on in zip(fields[::2], fields[1::2], strict=True):
        if not (hours.isdigit() and hours.isascii() and len(hours) <= 5) or on not in ("0", "1"):
            raise FrameError(f"PJLink lamp status is malformed: {param!r}")
        lamps.append(Lamp(int(hours), on == "1"))
    return tuple(lamps)


def format_lamps(lamps: tuple[Lamp, ...]) -> str:
    return " ".join(f"{lamp.hours} {int(lamp.on)}" for lamp in lamps)


@dataclass(frozen=True, slots=True)
class AvMute:
    """The AVMT state: video (picture blanked) and audio mute."""

    video: bool = False
    audio: bool = False

    @classmethod
    def parse(cls, param: str) -> AvMute:
        states = {
            "11": cls(video=True),
            "21": cls(audio=True),
            "31": cls(video=True, audio=True),
            "30": cls(),
            # Not in the query's answer list, but meaning "nothing muted" where seen.
            "10": cls(),
            "20": cls(),
        }
        if param not in states:
            raise FrameError(f"PJLink mute state must be 11, 21, 31 or 30: {param!r}")
        return states[param]

    def __str__(self) -> str:
        if self.video and self.audio:
            return "31"
        if self.video:
            return "11"
        return "21" if self.audio else "30"


def input_class(code: str) -> int:
    """1 for a class 1 input code (``"31"``), 2 for a class 2 one (``"3A"``, ``"61"``)."""
    if CLASS1_INPUT.fullmatch(code):
        return 1
    if CLASS2_INPUT.fullmatch(code):
        return 2
    raise ValueError(f"not a PJLink input code: {code!r}")


def _room_input_names() -> dict[str, str]:
    # Primary names first: the reverse lookup (code -> room name) takes the first match.
    kinds = (
        ("vga", "1"),
        ("video", "2"),
        ("hdmi", "3"),
        ("usb", "4"),
        ("network", "5"),
        ("internal", "6"),
        ("rgb", "1"),
        ("digital", "3"),
        ("storage", "4"),
    )
    return {f"{name}{n}": f"{kind}{n}" for name, kind in kinds for n in range(1, 10)}


DEFAULT_INPUT_MAP: Mapping[str, str] = _room_input_names()
"""Room input names to PJLink codes: ``hdmi1`` -> ``31`` (digital 1), ``vga2`` -> ``12``.

PJLink only names the kind of terminal, so ``hdmi1`` is the first digital input whatever its
connector; a device profile overrides this (``input_map=``) for projectors that number
their HDMI, DVI and DisplayPort terminals differently.
"""

LinkOpener = Callable[[], Awaitable[StreamLink]]

# Every other command sets an absolute state, so resending it after a timeout is harmless.
_STEPS = frozenset({"SVOL", "MVOL"})


@dataclass(slots=True)
class _Connection:
    link: StreamLink
    last_used: float
    decoder: LineDecoder = field(default_factory=LineDecoder)
    digest: str | None = None  # owed by the next command: the first on this connection


class PjlinkDisplay:
    """A PJLink class 1 or 2 projector or display, as a `DisplayControl`.

    ``link`` is either an open `StreamLink` (used once: when the device closes it, requests
    fail with `LinkClosed`) or an async callable opening a new one, which lets the client
    reconnect transparently: PJLink devices drop connections idle for 30 s, so a connection
    unused for ``idle_reconnect_s`` is replaced before use, and a request that finds its
    connection closed or silent is sent again on a new one, up to ``retries`` times (volume
    steps are not resent after a timeout). ``timeout`` bounds each attempt (greeting and
    reply).

    Volume: PJLink has no absolute volume (class 2 SVOL only steps it), so `set_volume`
    raises `DeviceRejected`; `volume_step` sends the class 2 step. `set_mute` is the audio
    mute of AVMT; `set_video_mute` blanks the picture.
    """

    def __init__(
        self,
        link: StreamLink | LinkOpener,
        password: str | None = None,
        timeout: float = 2.0,
        *,
        retries: int = 1,
        idle_reconnect_s: float = IDLE_CLOSE_S - 5.0,
        input_map: Mapping[str, str] = DEFAULT_INPUT_MAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unused_link = link if isinstance(link, StreamLink) else None
        self._opener = None if isinstance(link, StreamLink) else link
        self._password = password
        self._timeout = timeout
        self._retries = retries
        self._idle_reconnect_s = idle_reconnect_s
        self._input_codes = {name.lower(): code for name, code in input_map.items()}
        self._room_names: dict[str, str] = {}
        for name, code in self._input_codes.items():
            self._room_names.setdefault(code, name)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._connection: _Connection | None = None
        self._class: int | None = None
        self._closed = False

    @classmethod
    def tcp(
        cls,
        host: str,
        port: int = PJLINK_PORT,
        password: str | None = None,
        timeout: float = 2.0,
        *,
        retries: int = 1,
        input_map: Mapping[str, str] = DEFAULT_INPUT_MAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> PjlinkDisplay:
        """A client that opens ``host:port`` on first use and again whenever it must."""

        async def open_link() -> StreamLink:
            return await StreamLink.open_tcp(host, port, timeout)

        return cls(open_link, password, timeout, retries=retries, input_map=input_map, clock=clock)

    # DisplayControl

    async def status(self) -> DisplayStatus:
        power = await self.power_state()
        if power is not PowerState.ON:
            return DisplayStatus(power=power is PowerState.WARMING_UP)
        code = await self._query_unless_unavailable("INPT")
        mute = await self._query_unless_unavailable("AVMT")
        return DisplayStatus(
            power=True,
            input_source=None if code is None else self._room_names.get(code, code),
            muted=None if mute is None else AvMute.parse(mute).audio,
        )

    async def set_power(self, on: bool) -> None:
        await self._set("POWR", "1" if on else "0")

    async def set_input_source(self, name: str) -> None:
        """Switch to a room input name (``"hdmi1"``) or a raw PJLink code (``"31"``, ``"3A"``)."""
        code = self._input_codes.get(name.lower(), name.upper())
        try:
            pjlink_class = input_class(code)
        except ValueError:
            raise ValueError(f"no PJLink input named {name!r}") from None
        await self._set("INPT", code, pjlink_class)

    async def set_volume(self, level: int) -> None:
        raise DeviceRejected(
            "PJLink has no absolute volume: class 2 devices only step it (volume_step)"
        )

    async def set_mute(self, on: bool) -> None:
        await self._set("AVMT", "21" if on else "20")

    async def close(self) -> None:
        self._closed = True
        unused, self._unused_link = self._unused_link, None
        if unused is not None:
            await unused.close()
        await self._drop()

    # Beyond DisplayControl

    async def power_state(self) -> PowerState:
        result = await self._query("POWR")
        if result not in ("0", "1", "2", "3"):
            raise FrameError(f"PJLink power state must be 0-3: {result!r}")
        return PowerState(int(result))

    async def set_video_mute(self, on: bool) -> None:
        await self._set("AVMT", "11" if on else "10")

    async def av_mute(self) -> AvMute:
        return AvMute.parse(await self._query("AVMT"))

    async def volume_step(self, up: bool, microphone: bool = False) -> None:
        """Class 2: one step of speaker (SVOL) or microphone (MVOL) volume."""
        await self._set("MVOL" if microphone else "SVOL", "1" if up else "0", 2)

    async def set_freeze(self, on: bool) -> None:
        await self._set("FREZ", "1" if on else "0", 2)

    async def frozen(self) -> bool:
        return await self._query("FREZ", 2) == "1"

    async def lamps(self) -> tuple[Lamp, ...]:
        return parse_lamps(await self._query("LAMP"))

    async def lamp_hours(self) -> tuple[int, ...]:
        """Lighting hours of each lamp; ERR1 (`DeviceRejected` code 1) if it has none."""
        return tuple(lamp.hours for lamp in await self.lamps())

    async def errors(self) -> ErrorStatus:
        return ErrorStatus.parse(await self._query("ERST"))

    async def name(self) -> str:
        return await self._query("NAME")

    async def manufacturer(self) -> str:
        return await self._query("INF1")

    async def product_name(self) -> str:
        return await self._query("INF2")

    async def other_info(self) -> str:
        return await self._query("INFO")

    async def pjlink_class(self) -> int:
        if self._class is None:
            result = await self._query("CLSS")
            if len(result) != 1 or result not in "123456789":
                raise FrameError(f"PJLink class must be a digit: {result!r}")
            self._class = int(result)
        return self._class

    async def inputs(self) -> tuple[str, ...]:
        """The device's input codes; class 2 devices list their class 2 inputs too."""
        pjlink_class = min(await self.pjlink_class(), 2)
        result = await self._query("INST", pjlink_class)
        codes = tuple(result.split(" ")) if result else ()
        pattern = CLASS1_INPUT if pjlink_class == 1 else CLASS2_INPUT
        if not all(pattern.fullmatch(code) for code in codes):
            raise FrameError(f"PJLink input list is malformed: {result!r}")
        return codes

    async def input_name(self, code: str) -> str:
        """Class 2: the device's name for an input terminal."""
        return await self._query("INNM", 2, f"?{code}")

    async def serial_number(self) -> str:
        return await self._query("SNUM", 2)

    async def software_version(self) -> str:
        return await self._query("SVER", 2)

    async def input_resolution(self) -> str:
        return await self._query("IRES", 2)

    async def recommended_resolution(self) -> str:
        return await self._query("RRES", 2)

    async def filter_hours(self) -> int:
        result = await self._query("FILT", 2)
        if not (result.isdigit() and result.isascii()):
            raise FrameError(f"PJLink filter hours must be a number: {result!r}")
        return int(result)

    async def lamp_model(self) -> str:
        return await self._query("RLMP", 2)

    async def filter_model(self) -> str:
        return await self._query("RFIL", 2)

    # Requests

    async def _query(self, body: str, pjlink_class: int = 1, param: str = "?") -> str:
        return await self._call(Command(body, param, pjlink_class))

    async def _query_unless_unavailable(self, body: str) -> str | None:
        try:
            return await self._query(body)
        except DeviceRejected as exc:
            if exc.code == 3:  # the device left the "on" state between queries
                return None
            raise

    async def _set(self, body: str, param: str, pjlink_class: int = 1) -> None:
        result = await self._call(Command(body, param, pjlink_class))
        if result != "OK":
            raise FrameError(f"PJLink {body} {param}: expected OK, got {result!r}")

    async def _call(self, command: Command) -> str:
        reply = await self._request(command)
        code = reply.error_code
        if code is not None:
            raise DeviceRejected(
                f"PJLink %{command.pjlink_class}{command.body} {command.param}: "
                f"{reply.result} ({ERROR_MEANINGS[code]})",
                code=code,
            )
        return reply.result

    async def _request(self, command: Command) -> Response:
        if self._closed:
            raise LinkClosed("PJLink client is closed")
        async with self._lock:
            for attempt in range(self._retries + 1):
                try:
                    return await self._exchange(command)
                except (LinkClosed, DeviceTimeout) as exc:
                    await self._drop()
                    if attempt == self._retries or self._opener is None:
                        raise
                    if isinstance(exc, DeviceTimeout) and command.body in _STEPS:
                        raise  # the device may have taken the step: sending it again is not safe
                    logger.debug("PJLink %s: %s; reconnecting", command.body, exc)
                except DriverError:
                    await self._drop()  # wrong password, garbage: start the next one afresh
                    raise
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _exchange(self, command: Command) -> Response:
        deadline = asyncio.get_running_loop().time() + self._timeout
        connection = await self._connect(deadline)
        sent = replace(command, digest=connection.digest)
        await connection.link.write(bytes(sent))
        connection.digest = None
        while True:  # bounded by the deadline: stale lines are skipped, reads time out
            reply = parse_device_line(await self._read_line(connection, deadline))
            if isinstance(reply, AuthFailure):
                raise DeviceRejected("PJLink authentication failed: wrong password (PJLINK ERRA)")
            if isinstance(reply, Greeting):
                raise FrameError(f"PJLink greeting in place of a reply to {command.body}")
            if reply.body.upper() == command.body.upper():
                connection.last_used = self._clock()
                return reply
            logger.debug(
                "PJLink: skipping a reply to %s while waiting for %s", reply.body, command.body
            )

    async def _connect(self, deadline: float) -> _Connection:
        connection = self._connection
        if (
            connection is not None
            and self._opener is not None
            and self._clock() - connection.last_used > self._idle_reconnect_s
        ):
            # The device is about to drop (or has dropped) this one; do not race it.
            await self._drop()
            connection = None
        if connection is None:
            connection = self._connection = _Connection(await self._open_link(), self._clock())
            greeting = parse_device_line(await self._read_line(connection, deadline))
            if not isinstance(greeting, Greeting):
                raise FrameError(f"PJLink device did not greet: {greeting!r}")
            connection.digest = self._digest_for(greeting)
        return connection

    async def _open_link(self) -> StreamLink:
        if self._unused_link is not None:
            link, self._unused_link = self._unused_link, None
            return link
        if self._opener is None:
            raise LinkClosed("PJLink connection is closed and this client cannot reopen it")
        return await self._opener()

    def _digest_for(self, greeting: Greeting) -> str | None:
        if greeting.random is None:
            return None
        if self._password is None:
            raise DeviceRejected("PJLink device requires a password and none is configured")
        return greeting.digest(self._password)

    async def _read_line(self, connection: _Connection, deadline: float) -> bytes:
        loop = asyncio.get_running_loop()
        while True:  # bounded by the deadline
            line = connection.decoder.next_line()
            if line is not None:
                return line
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeviceTimeout(
                    f"{connection.link.name}: no PJLink answer within {self._timeout:g} s"
                )
            connection.decoder.feed(await connection.link.read(remaining))

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.link.close()
