"""Samsung MDC (Multiple Display Control): sans-I/O codec and an asyncio display client.

Protocol source: Samsung, *Multiple Display Control Protocol*, SEC-VD-DSW, Ver. 13.7c
(2016-02-23); command codes checked against Ver. 15.0 (2020-11-06) as implemented by
python-samsung-mdc (``samsung_mdc/commands.py``).

- §1.2 Connection Spec: RS-232 (9600 8N1, no flow control) and TCP port 1515 carry the
  same frames. The checksum is the sum of every byte after the header, modulo 256
  (document example, Power On to ID 0xFE: ``AA 11 FE 01 01 11``). ID 0xFE addresses every
  display on a serial chain; they obey SET commands but do not answer.
- §2.1 Commands: 0x00 Status, 0x0B Serial number, 0x0E Software version, 0x11 Power,
  0x12 Volume (0-100), 0x13 Mute, 0x14 Input source, 0x8A Model name (Ver. 15.0).
  A GET sends no data; a SET sends the new value; the ACK repeats the value.

Frames::

    request   AA  cmd  id  len  data...                    checksum
    reply     AA  FF   id  len  'A'|'N'  r-cmd  values...  checksum

In a reply, ``len`` counts the ACK/NAK byte and r-cmd too. A NAK carries a single value,
the display's error code; the document does not list what the codes mean.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from roomsystem.drivers.display import DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError
from roomsystem.drivers.link import StreamLink

logger = logging.getLogger(__name__)

HEADER = 0xAA
REPLY_COMMAND = 0xFF
BROADCAST_ID = 0xFE
ACK = 0x41  # 'A'
NAK = 0x4E  # 'N'
MAX_DATA = 0xFF
DEFAULT_TCP_PORT = 1515
# Header, command, ID and length come before the data; the checksum after it.
_HEAD_SIZE = 4
_MIN_FRAME = _HEAD_SIZE + 1
# A status answer sent by a display without audio: volume and mute are "not available".
NOT_AVAILABLE = 0xFF


class Command(IntEnum):
    """The MDC commands this package speaks (§2.1)."""

    STATUS = 0x00
    SERIAL_NUMBER = 0x0B
    SOFTWARE_VERSION = 0x0E
    POWER = 0x11
    VOLUME = 0x12
    MUTE = 0x13
    INPUT_SOURCE = 0x14
    MODEL_NAME = 0x8A


class Power(IntEnum):
    OFF = 0x00
    ON = 0x01
    REBOOT = 0x02


# Room input names -> Input source (0x14) codes a controller may set.
INPUT_SOURCES: dict[str, int] = {
    "hdmi1": 0x21,
    "hdmi2": 0x23,
    "hdmi3": 0x31,
    "hdmi4": 0x33,
    "displayport1": 0x25,
    "displayport2": 0x26,
    "displayport3": 0x27,
    "dvi1": 0x18,
    "pc1": 0x14,
    "component1": 0x08,
    "av1": 0x0C,
    "av2": 0x0D,
    "hdbaset1": 0x55,
    "magicinfo": 0x20,
    "tv": 0x40,
}
# Codes a display reports but refuses as a SET: the same connector carrying a PC signal.
_REPORTED_ONLY: dict[int, str] = {
    0x1F: "dvi1",
    0x22: "hdmi1",
    0x24: "hdmi2",
    0x32: "hdmi3",
    0x34: "hdmi4",
}
INPUT_NAMES: dict[int, str] = {code: name for name, code in INPUT_SOURCES.items()}
INPUT_NAMES.update(_REPORTED_ONLY)


def checksum(body: bytes) -> int:
    """The MDC checksum of the bytes after the header (§1.2)."""
    return sum(body) & 0xFF


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte (0-255), not {value}")


@dataclass(frozen=True, slots=True)
class MdcFrame:
    """One MDC frame: a request, or (command 0xFF) a reply; see `MdcReply` for those."""

    command: int
    display_id: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_byte("command", self.command)
        _check_byte("display_id", self.display_id)
        if len(self.data) > MAX_DATA:
            raise ValueError(f"MDC data is at most {MAX_DATA} bytes, not {len(self.data)}")
        object.__setattr__(self, "data", bytes(self.data))

    @classmethod
    def parse(cls, data: bytes) -> MdcFrame:
        """Exactly one frame; FrameError for anything else."""
        if len(data) < _MIN_FRAME:
            raise FrameError(f"MDC frame too short: {data.hex(' ')}")
        if data[0] != HEADER:
            raise FrameError(f"MDC frame does not start with 0xAA: {data.hex(' ')}")
        expected = _MIN_FRAME + data[3]
        if len(data) != expected:
            raise FrameError(f"MDC frame of {len(data)} bytes, its length says {expected}")
        if checksum(data[1:-1]) != data[-1]:
            raise FrameError(f"MDC checksum mismatch: {data.hex(' ')}")
        return cls(data[1], data[2], bytes(data[4:-1]))

    def __bytes__(self) -> bytes:
        body = bytes((self.command, self.display_id, len(self.data))) + self.data
        return bytes((HEADER, *body, checksum(body)))


@dataclass(frozen=True, slots=True)
class MdcReply:
    """A display's answer: ACK with the command's values, or NAK with one error code."""

    display_id: int
    command: int
    ack: bool
    values: bytes = b""

    def __post_init__(self) -> None:
        _check_byte("display_id", self.display_id)
        _check_byte("command", self.command)
        object.__setattr__(self, "values", bytes(self.values))
        if len(self.values) > MAX_DATA - 2:
            raise ValueError(f"MDC reply values are at most {MAX_DATA - 2} bytes")
        if not self.ack and len(self.values) != 1:
            raise ValueError("an MDC NAK carries exactly one value, its error code")

    @property
    def error_code(self) -> int | None:
        return None if self.ack else self.values[0]

    @classmethod
    def parse(cls, data: bytes) -> MdcReply:
        return cls.from_frame(MdcFrame.parse(data))

    @classmethod
    def from_frame(cls, frame: MdcFrame) -> MdcReply:
        """Read a decoded frame as a reply; FrameError if it is not one."""
        if frame.command != REPLY_COMMAND:
            raise FrameError(f"not an MDC reply: command 0x{frame.command:02X}")
        if len(frame.data) < 2 or frame.data[0] not in (ACK, NAK):
            raise FrameError(f"MDC reply without ACK/NAK and r-cmd: {frame.data.hex(' ')}")
        ack = frame.data[0] == ACK
        values = frame.data[2:]
        if not ack and len(values) != 1:
            raise FrameError(f"MDC NAK with {len(values)} values instead of an error code")
        return cls(frame.display_id, frame.data[1], ack, values)

    def to_frame(self) -> MdcFrame:
        status = ACK if self.ack else NAK
        return MdcFrame(REPLY_COMMAND, self.display_id, bytes((status, self.command)) + self.values)

    def __bytes__(self) -> bytes:
        return bytes(self.to_frame())


@dataclass(frozen=True, slots=True)
class MdcStatus:
    """The seven values of a Status (0x00) ACK, in wire order (§2.1, Status control)."""

    power: int
    volume: int
    mute: int
    input_source: int
    picture_aspect: int
    # N_TIME_NF / F_TIME_NF: old-style on/off timer flags, always 0 on current models.
    on_timer: int = 0
    off_timer: int = 0

    SIZE = 7

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            _check_byte(name, getattr(self, name))

    @classmethod
    def parse(cls, values: bytes) -> MdcStatus:
        if len(values) != cls.SIZE:
            raise FrameError(f"MDC status with {len(values)} values instead of {cls.SIZE}")
        return cls(*values)

    def __bytes__(self) -> bytes:
        return bytes(
            (
                self.power,
                self.volume,
                self.mute,
                self.input_source,
                self.picture_aspect,
                self.on_timer,
                self.off_timer,
            )
        )

    def to_display_status(self) -> DisplayStatus:
        return DisplayStatus(
            power=self.power != Power.OFF,
            input_source=INPUT_NAMES.get(self.input_source),
            volume=None if self.volume == NOT_AVAILABLE else self.volume,
            muted=None if self.mute == NOT_AVAILABLE else bool(self.mute),
        )


class MdcStreamDecoder:
    """Cuts an MDC byte stream into frames.

    Bytes before a header (0xAA) are skipped and counted in `skipped`: that is how both
    ends find each other again after line noise or half a frame. A candidate with a wrong
    checksum raises FrameError and only its header byte is dropped, since the real frame
    may start inside it; call again to go on. With ``replies_only`` (the controller's
    side) a header not followed by 0xFF is taken for noise straight away, so a stray 0xAA
    does not make the decoder wait for a length's worth of bytes that never come.
    """

    def __init__(self, *, replies_only: bool = False) -> None:
        self._buffer = bytearray()
        self._replies_only = replies_only
        self.skipped = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def clear(self) -> None:
        self._buffer.clear()

    def next_frame(self) -> MdcFrame | None:
        """The next complete frame, or None until more bytes come; FrameError if corrupt."""
        while True:
            self._skip_to_header()
            if len(self._buffer) < 2:
                return None
            if self._replies_only and self._buffer[1] != REPLY_COMMAND:
                self._drop(1)
                continue
            if len(self._buffer) < _HEAD_SIZE:
                return None
            end = _MIN_FRAME + self._buffer[3]
            if len(self._buffer) < end:
                return None
            candidate = bytes(self._buffer[:end])
            try:
                frame = MdcFrame.parse(candidate)
            except FrameError:
                self._drop(1)
                raise
            del self._buffer[:end]
            return frame

    def frames(self) -> Iterator[MdcFrame]:
        """Every complete frame buffered now; a corrupt one raises FrameError and ends it."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _skip_to_header(self) -> None:
        start = self._buffer.find(HEADER)
        self._drop(len(self._buffer) if start < 0 else start)

    def _drop(self, count: int) -> None:
        if count:
            self.skipped += count
            del self._buffer[:count]


def _text(values: bytes) -> str:
    return values.rstrip(b"\x00").decode("utf-8", errors="replace")


class MdcDisplay:
    """A Samsung display (signage, monitor) driven over MDC on a serial port or TCP 1515.

    Implements `roomsystem.drivers.display.DisplayControl`. One request is in flight at a
    time. A request that gets no usable answer within ``timeout`` seconds is sent again,
    ``retries`` times at most (every MDC SET carries an absolute value, so sending it twice
    does no harm). Replies from another display ID, or to another command, are skipped.
    The broadcast ID 0xFE is refused: displays never answer it, so nothing could be read.
    """

    def __init__(
        self, link: StreamLink, display_id: int = 1, timeout: float = 1.0, retries: int = 2
    ) -> None:
        if not 0 <= display_id < BROADCAST_ID:
            raise ValueError(f"MDC display ID must be 0-253, not {display_id}")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self._link = link
        self.display_id = display_id
        self.timeout = timeout
        self.retries = retries
        self._decoder = MdcStreamDecoder(replies_only=True)
        self._lock = asyncio.Lock()

    async def request(self, command: int, data: bytes = b"") -> bytes:
        """Send one command; return the values of its ACK.

        Raises DeviceRejected (NAK; ``code`` is the display's error code), DeviceTimeout
        (no answer after every try), FrameError (only corrupt answers) or LinkClosed.
        """
        frame = MdcFrame(command, self.display_id, data)
        async with self._lock:
            reply = await self._exchange(frame)
        if not reply.ack:
            raise DeviceRejected(
                f"{self._link.name}: display {self.display_id} refused command "
                f"0x{command:02X} (NAK, error code 0x{reply.error_code:02X})",
                code=reply.error_code,
            )
        return reply.values

    async def status(self) -> DisplayStatus:
        return (await self.mdc_status()).to_display_status()

    async def mdc_status(self) -> MdcStatus:
        """Everything the Status command reports, in the protocol's own codes."""
        return MdcStatus.parse(await self.request(Command.STATUS))

    async def set_power(self, on: bool) -> None:
        await self.request(Command.POWER, bytes((Power.ON if on else Power.OFF,)))

    async def set_input_source(self, name: str) -> None:
        code = INPUT_SOURCES.get(name)
        if code is None:
            known = ", ".join(INPUT_SOURCES)
            raise ValueError(f"MDC has no input {name!r}; known inputs: {known}")
        await self.request(Command.INPUT_SOURCE, bytes((code,)))

    async def set_volume(self, level: int) -> None:
        if not 0 <= level <= 100:
            raise ValueError(f"MDC volume is 0-100, not {level}")
        await self.request(Command.VOLUME, bytes((level,)))

    async def set_mute(self, on: bool) -> None:
        await self.request(Command.MUTE, bytes((int(on),)))

    async def model_name(self) -> str:
        return _text(await self.request(Command.MODEL_NAME))

    async def serial_number(self) -> str:
        return _text(await self.request(Command.SERIAL_NUMBER))

    async def software_version(self) -> str:
        return _text(await self.request(Command.SOFTWARE_VERSION))

    async def close(self) -> None:
        await self._link.close()

    async def _exchange(self, request: MdcFrame) -> MdcReply:
        wire = bytes(request)
        tries = 1 + self.retries
        corrupt: FrameError | None = None
        for attempt in range(tries):
            if attempt:
                logger.debug("%s: resending command 0x%02X", self._link.name, request.command)
            # Whatever is still buffered is an incomplete frame that timed out: a truncated
            # answer whose length byte would otherwise swallow the next, good answer.
            self._decoder.clear()
            await self._link.write(wire)
            try:
                return await self._read_reply(request)
            except FrameError as exc:
                corrupt = exc
            except DeviceTimeout:
                corrupt = None
        what = f"display {self.display_id}, command 0x{request.command:02X}, {tries} tries"
        if corrupt is not None:
            raise FrameError(f"{self._link.name}: only corrupt answers ({what}): {corrupt}")
        raise DeviceTimeout(f"{self._link.name}: no answer within {self.timeout:g} s ({what})")

    async def _read_reply(self, request: MdcFrame) -> MdcReply:
        """This request's reply, read until ``timeout``; FrameError if only corrupt bytes came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        corrupt: FrameError | None = None
        while True:
            try:
                reply = self._buffered_reply(request)
            except FrameError as exc:
                corrupt = exc
                continue
            if reply is not None:
                return reply
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise corrupt or DeviceTimeout("no answer")
            try:
                data = await self._link.read(remaining)
            except DeviceTimeout:
                if corrupt is not None:
                    raise corrupt from None
                raise
            self._decoder.feed(data)

    def _buffered_reply(self, request: MdcFrame) -> MdcReply | None:
        for frame in self._decoder.frames():
            reply = MdcReply.from_frame(frame)
            if reply.display_id != request.display_id:
                logger.debug(
                    "%s: skipped a reply from display %d", self._link.name, reply.display_id
                )
            elif reply.command != request.command:
                logger.debug("%s: skipped a late reply to 0x%02X", self._link.name, reply.command)
            else:
                return reply
        return None
