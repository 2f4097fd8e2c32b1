"""LG commercial display / TV serial control (RS-232C, 9600 8N1): codec and asyncio client.

Wire format, from the "External control device setup" / "Controlling the multiple product"
appendix of LG owner's manuals (e.g. 42LS75A signage, 32VS10MS, 42LK550 TV)::

    command  [Command1][Command2][ ][Set ID][ ][Data][Cr]       e.g. "ka 01 01\\r"
    reply    [Command2][ ][Set ID][ ][OK/NG][Data][x]           e.g. "a 01 OK01x"

Set ID and data are hex, written lower case by the set; data ``ff`` reads the current
value; set ID 00 addresses every set on the cable (each of them acknowledges, so with
more than one set the replies collide). Commands used here: ``ka`` power (00 off, 01 on),
``xb`` input select (90 HDMI1, 91 HDMI2, 92 HDMI3, C0 DisplayPort; A0/A1/D0 are the "PC"
variants of the same ports), ``kf`` volume 00..64h, ``ke`` volume mute with LG's inverted
meaning (00 = mute on, i.e. volume off; 01 = mute off). An NG reply carries an error code
(01 illegal code, 02 function not supported, 03 wait more time) and raises
`DeviceRejected`. A TV in standby answers only power commands. Set IDs are two hex
digits (1..255); the three-digit IDs (up to 1000) of some signage models are not handled.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from roomsystem.drivers.display import DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, DriverError, FrameError
from roomsystem.drivers.link import StreamLink

logger = logging.getLogger(__name__)

BAUDRATE = 9600

ALL_SETS = 0x00
READ = 0xFF  # data that asks for the current value instead of setting one

POWER = "ka"
INPUT_SELECT = "xb"
VOLUME = "kf"
VOLUME_MUTE = "ke"
MUTE_ON = 0x00  # "volume mute on (volume off)"
MUTE_OFF = 0x01
VOLUME_MAX = 0x64

NG_ILLEGAL_CODE = 0x01
NG_NOT_SUPPORTED = 0x02
NG_WAIT = 0x03

INPUT_CODES: dict[str, int] = {
    "dvi1": 0x80,
    "hdmi1": 0x90,
    "hdmi2": 0x91,
    "hdmi3": 0x92,
    "displayport1": 0xC0,
}
# Codes a set may report for the same port ("PC" and "DTV" variants).
INPUT_NAMES: dict[int, str] = {code: name for name, code in INPUT_CODES.items()} | {
    0x70: "dvi1",
    0xA0: "hdmi1",
    0xA1: "hdmi2",
    0xA2: "hdmi3",
    0xD0: "displayport1",
}

MAX_FRAME_LENGTH = 64  # longer than any command or reply of the protocol

_HEX = rb"[0-9A-Fa-f]"
_COMMAND_RE = re.compile(rb"([a-z]{2}) (" + _HEX + rb"{2})((?: " + _HEX + rb"{2})+)\r\Z")
_COMMAND_END_RE = re.compile(rb"\r")
_REPLY_RE = re.compile(rb"([a-z]) (" + _HEX + rb"{2}) (OK|NG)((?:" + _HEX + rb"{2})*)x\Z")
# A reply ends at the 'x' after OK/NG; a command letter may be an 'x' itself.
_REPLY_END_RE = re.compile(rb"(?:OK|NG)" + _HEX + rb"*x")


def _data_fields(data: bytes) -> bytes:
    return b" ".join(b"%02x" % byte for byte in data)


@dataclass(frozen=True, slots=True)
class LgCommand:
    """A command from the controller: two letters, set ID and one or more data bytes."""

    command: str
    set_id: int
    data: bytes

    @classmethod
    def parse(cls, frame: bytes) -> LgCommand:
        match = _COMMAND_RE.fullmatch(frame)
        if match is None:
            raise FrameError(f"not an LG command: {frame[:MAX_FRAME_LENGTH]!r}")
        name, set_id, data = match.groups()
        return cls(name.decode(), int(set_id, 16), bytes.fromhex(data.decode()))

    def __bytes__(self) -> bytes:
        return b"%s %02x %s\r" % (self.command.encode(), self.set_id, _data_fields(self.data))


@dataclass(frozen=True, slots=True)
class LgReply:
    """A set's acknowledgement: the command's second letter, set ID, OK/NG and data."""

    command: str
    set_id: int
    ok: bool
    data: bytes

    @classmethod
    def parse(cls, frame: bytes) -> LgReply:
        match = _REPLY_RE.fullmatch(frame)
        if match is None:
            raise FrameError(f"not an LG reply: {frame[:MAX_FRAME_LENGTH]!r}")
        name, set_id, status, data = match.groups()
        return cls(name.decode(), int(set_id, 16), status == b"OK", bytes.fromhex(data.decode()))

    def __bytes__(self) -> bytes:
        status = b"OK" if self.ok else b"NG"
        return b"%s %02x %s%sx" % (
            self.command.encode(),
            self.set_id,
            status,
            self.data.hex().encode(),
        )


FrameT = TypeVar("FrameT")


class _Decoder(Generic[FrameT]):
    """Splits a byte stream into frames that end where ``end`` matches.

    Iterating yields complete frames; bytes that are not part of one are dropped and
    reported by raising `FrameError` (iterate again to go on). Garbage glued in front of
    a frame costs only the garbage.
    """

    def __init__(
        self, end: re.Pattern[bytes], frame: re.Pattern[bytes], parse: Callable[[bytes], FrameT]
    ) -> None:
        self._end = end
        self._frame = frame
        self._parse = parse
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def reset(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        """Bytes held that do not form a complete frame yet."""
        return len(self._buffer)

    def __iter__(self) -> Iterator[FrameT]:
        while (frame := self._next()) is not None:
            yield frame

    def _next(self) -> FrameT | None:
        buffer = self._buffer
        end = self._end.search(buffer)
        if end is None:
            if len(buffer) > MAX_FRAME_LENGTH:
                dropped = len(buffer) - MAX_FRAME_LENGTH
                garbage = bytes(buffer[:dropped])
                del buffer[:dropped]
                raise FrameError(f"no LG frame in {garbage[:32]!r}")
            return None
        candidate = bytes(buffer[: end.end()])
        match = self._frame.search(candidate)
        if match is None:
            del buffer[: end.end()]
            raise FrameError(f"not an LG frame: {candidate[:MAX_FRAME_LENGTH]!r}")
        if match.start() > 0:
            del buffer[: match.start()]
            raise FrameError(f"bytes before an LG frame: {candidate[: match.start()][:32]!r}")
        del buffer[: end.end()]
        return self._parse(candidate)


class LgCommandDecoder(_Decoder[LgCommand]):
    """The set's side: commands ending in CR."""

    def __init__(self) -> None:
        super().__init__(_COMMAND_END_RE, _COMMAND_RE, LgCommand.parse)


class LgReplyDecoder(_Decoder[LgReply]):
    """The controller's side: replies ending in the 'x' after OK/NG."""

    def __init__(self) -> None:
        super().__init__(_REPLY_END_RE, _REPLY_RE, LgReply.parse)


class LgDisplay:
    """An LG display on a serial (or TCP) link (see the module docstring).

    Each request waits ``timeout`` s for its reply and is sent again up to ``retries``
    times when none (or only garbage) came; an NG reply raises `DeviceRejected` at once.
    With set ID 0 every set on the cable obeys and a reply from any set is taken.
    """

    def __init__(
        self, link: StreamLink, set_id: int = 1, timeout: float = 1.0, retries: int = 2
    ) -> None:
        if not 0 <= set_id <= 0xFF:
            raise ValueError(f"LG set ID must be 0..255, not {set_id}")
        if retries < 0 or timeout <= 0:
            raise ValueError("timeout must be positive and retries not negative")
        self._link = link
        self._set_id = set_id
        self._timeout = timeout
        self._retries = retries
        self._decoder = LgReplyDecoder()
        self._lock = asyncio.Lock()

    async def status(self) -> DisplayStatus:
        if await self.read(POWER) != 0x01:
            # A set in standby answers nothing but power commands.
            return DisplayStatus(power=False)
        source = await self.read(INPUT_SELECT)
        volume = await self.read(VOLUME)
        mute = await self.read(VOLUME_MUTE)
        return DisplayStatus(
            power=True,
            input_source=INPUT_NAMES.get(source),
            volume=volume,
            muted=mute == MUTE_ON,
        )

    async def set_power(self, on: bool) -> None:
        await self.write(POWER, 0x01 if on else 0x00)

    async def set_input_source(self, name: str) -> None:
        try:
            code = INPUT_CODES[name]
        except KeyError:
            raise ValueError(f"LG displays have no input named {name!r}") from None
        await self.write(INPUT_SELECT, code)

    async def set_volume(self, level: int) -> None:
        if not 0 <= level <= VOLUME_MAX:
            raise ValueError(f"volume must be 0..100, not {level}")
        await self.write(VOLUME, level)

    async def set_mute(self, on: bool) -> None:
        await self.write(VOLUME_MUTE, MUTE_ON if on else MUTE_OFF)

    async def read(self, command: str) -> int:
        """The current value of a one-byte setting (data ``ff``)."""
        reply = await self._transact(LgCommand(command, self._set_id, bytes([READ])))
        if len(reply.data) != 1:
            raise FrameError(f"LG {command} read answered {len(reply.data)} data bytes, not 1")
        return reply.data[0]

    async def write(self, command: str, *data: int) -> bytes:
        """Send a command with data bytes; the set's acknowledged data."""
        reply = await self._transact(LgCommand(command, self._set_id, bytes(data)))
        return reply.data

    async def close(self) -> None:
        await self._link.close()

    async def _transact(self, command: LgCommand) -> LgReply:
        data = bytes(command)
        async with self._lock:
            error: DriverError = DeviceTimeout(f"{self._link.name}: no reply")
            for attempt in range(self._retries + 1):
                self._decoder.reset()  # a half reply left from the last attempt is dead
                await self._link.write(data)
                try:
                    reply = await self._receive(command)
                except (DeviceTimeout, FrameError) as exc:
                    logger.debug("%s: attempt %d failed: %s", self._link.name, attempt + 1, exc)
                    error = exc
                    continue
                if not reply.ok:
                    code = reply.data[0] if reply.data else None
                    raise DeviceRejected(f"LG set answered NG to {data!r}", code=code)
                return reply
            raise error

    async def _receive(self, command: LgCommand) -> LgReply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        garbage: FrameError | None = None
        while True:  # every read is bounded by the deadline
            replies, error = _drain(self._decoder)
            garbage = error or garbage
            for reply in replies:
                if self._answers(command, reply):
                    return reply
                logger.debug("%s: ignored a reply: %r", self._link.name, reply)
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise DeviceTimeout(f"{self._link.name}: no reply within {self._timeout:g} s")
                self._decoder.feed(await self._link.read(remaining))
            except DeviceTimeout:
                if garbage is not None:
                    raise FrameError(f"{self._link.name}: no valid reply: {garbage}") from None
                if self._decoder.pending:
                    raise FrameError(f"{self._link.name}: truncated reply") from None
                raise

    def _answers(self, command: LgCommand, reply: LgReply) -> bool:
        if reply.command != command.command[1]:
            return False
        return self._set_id == ALL_SETS or reply.set_id == self._set_id


def _drain(decoder: LgReplyDecoder) -> tuple[list[LgReply], FrameError | None]:
    """Every reply buffered, and the last framing error met on the way."""
    replies: list[LgReply] = []
    error: FrameError | None = None
    while True:  # each FrameError consumes at least one byte, so this ends
        try:
            replies.extend(decoder)
        except FrameError as exc:
            error = exc
            continue
        return replies, error
