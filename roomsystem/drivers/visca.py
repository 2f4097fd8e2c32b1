"""Sony VISCA camera control over a serial line and over IP (UDP 52381).

Sources (Sony technical manuals; the byte layouts below follow them):

- EVI-D70 / EVI-D100 / BRC-300 Technical Manual, "VISCA Communication Specifications",
  "VISCA Camera-Issued Messages" and "Command List": a packet is a header byte
  ``1sss brrr`` (sender, broadcast bit, receiver; the controller is address 0, cameras 1..7),
  a message and the terminator ``FF``, 3 to 16 bytes in all. A camera answers a command with
  ACK ``y0 4z FF`` then completion ``y0 5z FF`` (z: the socket, 1 or 2; y: address + 8), an
  inquiry with ``y0 50 <data> FF``, failures with ``y0 6z <code> FF``. Address set
  ``88 30 01 FF`` numbers a daisy chain, ``88 01 00 01 FF`` (IF_Clear) empties every
  camera's command buffers, ``y0 38 FF`` (network change) is sent at power up.
- SRG-300H and BRC-X400 Command List, "VISCA over IP": every UDP message carries an 8-byte
  header (payload type, payload length, 32-bit sequence number) before a 1..16-byte payload;
  the control command RESET (``01``) resets the sequence number and is answered by the
  control reply ``01``; ERROR ``0F 01`` reports an abnormal sequence number (a message
  retransmitted after the camera had executed it), ``0F 02`` an abnormal message.
  Delivery confirmation: on a time-out the controller retransmits with the same number.

The codec is sans-I/O; `ViscaCamera` (serial, over a `StreamLink`) and `ViscaIpCamera` (UDP)
are thin clients on top of it and implement `roomsystem.drivers.camera.CameraControl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, NoReturn, Self, TypeVar

from roomsystem.drivers.camera import CameraStatus, Direction
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed
from roomsystem.drivers.link import StreamLink

logger = logging.getLogger(__name__)

VISCA_IP_PORT = 52381
BROADCAST = 8  # the receiver "address" of a broadcast packet (header 0x88)
TERMINATOR = 0xFF
MIN_PACKET = 3
MAX_PACKET = 16


class ViscaErrorCode(IntEnum):
    """The code byte of an error reply ``y0 6z <code> FF``."""

    MESSAGE_LENGTH = 0x01
    SYNTAX = 0x02
    COMMAND_BUFFER_FULL = 0x03
    COMMAND_CANCELLED = 0x04
    NO_SOCKET = 0x05
    NOT_EXECUTABLE = 0x41


_ERROR_TEXT: dict[int, str] = {
    ViscaErrorCode.MESSAGE_LENGTH: "message length error",
    ViscaErrorCode.SYNTAX: "syntax error",
    ViscaErrorCode.COMMAND_BUFFER_FULL: "command buffer full",
    ViscaErrorCode.COMMAND_CANCELLED: "command cancelled",
    ViscaErrorCode.NO_SOCKET: "no socket",
    ViscaErrorCode.NOT_EXECUTABLE: "command not executable",
}


class PanDirection(IntEnum):
    LEFT = 1
    RIGHT = 2
    STOP = 3


class TiltDirection(IntEnum):
    UP = 1
    DOWN = 2
    STOP = 3


class ZoomDirection(IntEnum):
    STOP = 0
    TELE = 2
    WIDE = 3


class PresetAction(IntEnum):
    RESET = 0
    SET = 1
    RECALL = 2


_E = TypeVar("_E", bound=IntEnum)


def _member(kind: type[_E], value: int) -> _E | None:
    """The member of ``kind`` with ``value``, or None (``in`` on enums needs Python 3.12)."""
    try:
        return kind(value)
    except ValueError:
        return None


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, not {value}")


def _to_nibbles(value: int, *, signed: bool) -> bytes:
    """A 16-bit value as four bytes ``0p 0q 0r 0s``, the way VISCA carries positions."""
    raw = value.to_bytes(2, "big", signed=signed)
    return bytes(nibble for byte in raw for nibble in (byte >> 4, byte & 0x0F))


def _from_nibbles(data: bytes, *, signed: bool) -> int | None:
    """The 16-bit value in ``0p 0q 0r 0s``; None if ``data`` is not four nibbles."""
    if len(data) != 4 or any(byte > 0x0F for byte in data):
        return None
    raw = bytes([data[0] << 4 | data[1], data[2] << 4 | data[3]])
    return int.from_bytes(raw, "big", signed=signed)


def _position_range(name: str, value: int, *, signed: bool) -> None:
    if signed:
        _check(name, value, -0x8000, 0x7FFF)
    else:
        _check(name, value, 0, 0xFFFF)


# --- the packet -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViscaPacket:
    """One VISCA packet: header byte, message bytes, terminator ``FF`` (3..16 bytes)."""

    header: int
    body: bytes

    def __post_init__(self) -> None:
        if not 0x80 <= self.header < TERMINATOR:
            raise ValueError(f"a VISCA header is 0x80..0xFE, not {self.header:#x}")
        if not MIN_PACKET - 2 <= len(self.body) <= MAX_PACKET - 2:
            raise ValueError(f"a VISCA message is 1..14 bytes, not {len(self.body)}")
        if TERMINATOR in self.body:
            raise ValueError("0xFF terminates a VISCA packet; it cannot be in its message")

    @classmethod
    def parse(cls, data: bytes) -> ViscaPacket:
        if not MIN_PACKET <= len(data) <= MAX_PACKET:
            raise FrameError(f"a VISCA packet is 3..16 bytes, not {len(data)}: {data.hex(' ')}")
        if not data[0] & 0x80 or data[0] == TERMINATOR:
            raise FrameError(f"not a VISCA header byte: {data[0]:#04x}")
        if data[-1] != TERMINATOR or TERMINATOR in data[1:-1]:
            raise FrameError(f"a VISCA packet ends at its only 0xFF: {data.hex(' ')}")
        return cls(data[0], bytes(data[1:-1]))

    def __bytes__(self) -> bytes:
        return bytes([self.header]) + self.body + bytes([TERMINATOR])

    @property
    def sender(self) -> int:
        return (self.header >> 4) & 0x07

    @property
    def receiver(self) -> int:
        """The camera a request goes to (1..7, `BROADCAST`); 0 in a camera's reply."""
        return self.header & 0x0F


class ViscaStreamDecoder:
    """Splits a serial byte stream into packets, resynchronising after garbage.

    A packet starts with a byte that has its high bit set (and is not ``FF``) and ends at the
    first ``FF`` at most 16 bytes later. Bytes that cannot belong to a packet are dropped;
    `next_packet` then raises `FrameError` once for them and stays usable.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_packet(self) -> ViscaPacket | None:
        """The next complete packet, or None until more bytes arrive."""
        buffer = self._buffer
        if not buffer:
            return None
        if not _starts_packet(buffer[0]):
            self._drop(self._garbage_run(0), "bytes that start no VISCA packet")
        end = buffer.find(TERMINATOR, 1, MAX_PACKET)
        if end == -1:
            if len(buffer) < MAX_PACKET:
                return None
            self._drop(self._garbage_run(1), "no terminator within 16 bytes")
        if end + 1 < MIN_PACKET:
            self._drop(end + 1, "a packet shorter than 3 bytes")
        packet = ViscaPacket(buffer[0], bytes(buffer[1:end]))
        del buffer[: end + 1]
        return packet

    def _garbage_run(self, start: int) -> int:
        """How many bytes from ``start`` on cannot start a packet, plus ``start``."""
        end = start
        while end < len(self._buffer) and not _starts_packet(self._buffer[end]):
            end += 1
        return end

    def _drop(self, count: int, why: str) -> NoReturn:
        dropped = bytes(self._buffer[:count])
        del self._buffer[:count]
        raise FrameError(f"dropped {len(dropped)} bytes ({why}): {dropped[:32].hex(' ')}")


def _starts_packet(byte: int) -> bool:
    return bool(byte & 0x80) and byte != TERMINATOR


# --- messages ---------------------------------------------------------------------------


class ViscaMessage:
    """A message that is exactly one VISCA packet; ``parse`` and ``bytes()`` go through it."""

    __slots__ = ()

    def to_packet(self) -> ViscaPacket:
        raise NotImplementedError

    @classmethod
    def from_packet(cls, packet: ViscaPacket) -> Self | None:
        """The message, or None if the packet is not one of this kind."""
        raise NotImplementedError

    @classmethod
    def parse(cls, data: bytes) -> Self:
        message = cls.from_packet(ViscaPacket.parse(data))
        if message is None:
            raise FrameError(f"not a VISCA {cls.__name__} message: {data.hex(' ')}")
        return message

    def __bytes__(self) -> bytes:
        return bytes(self.to_packet())


class ViscaRequest(ViscaMessage):
    """A command or inquiry from the controller to camera ``address`` (header ``8x``)."""

    __slots__ = ()
    address: int
    PREFIX: ClassVar[bytes]

    def parameters(self) -> bytes:
        return b""

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        raise NotImplementedError

    def to_packet(self) -> ViscaPacket:
        _check("camera address", self.address, 1, BROADCAST)
        return ViscaPacket(0x80 | self.address, self.PREFIX + self.parameters())

    @classmethod
    def from_packet(cls, packet: ViscaPacket) -> Self | None:
        if packet.sender != 0 or not 1 <= packet.receiver <= BROADCAST:
            return None
        if not packet.body.startswith(cls.PREFIX):
            return None
        return cls.from_parameters(packet.body[len(cls.PREFIX) :], packet.receiver)


@dataclass(frozen=True, slots=True)
class _Plain(ViscaRequest):
    """A request without parameters."""

    address: int = 1

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        return None if parameters else cls(address=address)


@dataclass(frozen=True, slots=True)
class Power(ViscaRequest):
    """CAM_Power ``8x 01 04 00 02/03 FF``: on / standby."""

    on: bool
    address: int = 1
    PREFIX: ClassVar[bytes] = b"\x01\x04\x00"

    def parameters(self) -> bytes:
        return b"\x02" if self.on else b"\x03"

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        if parameters not in (b"\x02", b"\x03"):
            return None
        return cls(parameters == b"\x02", address)


@dataclass(frozen=True, slots=True)
class PanTiltDrive(ViscaRequest):
    """Pan-tiltDrive ``8x 01 06 01 VV WW 0p 0q FF``: move (or stop) each axis at a speed."""

    pan_speed: int
    tilt_speed: int
    pan: PanDirection
    tilt: TiltDirection
    address: int = 1
    PREFIX: ClassVar[bytes] = b"\x01\x06\x01"

    def parameters(self) -> bytes:
        return bytes([self.pan_speed, self.tilt_speed, self.pan, self.tilt])

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        if len(parameters) != 4:
            return None
        pan = _member(PanDirection, parameters[2])
        tilt = _member(TiltDirection, parameters[3])
        if pan is None or tilt is None:
            return None
        return cls(parameters[0], parameters[1], pan, tilt, address)


@dataclass(frozen=True, slots=True)
class _PanTiltPosition(ViscaRequest):
    pan_speed: int
    tilt_speed: int
    pan: int
    tilt: int
    address: int = 1

    def __post_init__(self) -> None:
        _position_range("pan", self.pan, signed=True)
        _position_range("tilt", self.tilt, signed=True)

    def parameters(self) -> bytes:
        speeds = bytes([self.pan_speed, self.tilt_speed])
        return speeds + _to_nibbles(self.pan, signed=True) + _to_nibbles(self.tilt, signed=True)

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        if len(parameters) != 10:
            return None
        pan = _from_nibbles(parameters[2:6], signed=True)
        tilt = _from_nibbles(parameters[6:10], signed=True)
        if pan is None or tilt is None:
            return None
        return cls(parameters[0], parameters[1], pan, tilt, address)


@dataclass(frozen=True, slots=True)
class PanTiltAbsolute(_PanTiltPosition):
    """Pan-tiltDrive AbsolutePosition ``8x 01 06 02 VV WW 0Y 0Y 0Y 0Y 0Z 0Z 0Z 0Z FF``."""

    PREFIX: ClassVar[bytes] = b"\x01\x06\x02"


@dataclass(frozen=True, slots=True)
class PanTiltRelative(_PanTiltPosition):
    """Pan-tiltDrive RelativePosition ``8x 01 06 03 VV WW 0Y 0Y 0Y 0Y 0Z 0Z 0Z 0Z FF``."""

    PREFIX: ClassVar[bytes] = b"\x01\x06\x03"


@dataclass(frozen=True, slots=True)
class PanTiltHome(_Plain):
    """Pan-tiltDrive Home ``8x 01 06 04 FF``."""

    PREFIX: ClassVar[bytes] = b"\x01\x06\x04"


@dataclass(frozen=True, slots=True)
class PanTiltReset(_Plain):
    """Pan-tiltDrive Reset ``8x 01 06 05 FF``: recalibrate, ending at home."""

    PREFIX: ClassVar[bytes] = b"\x01\x06\x05"


@dataclass(frozen=True, slots=True)
class ZoomDrive(ViscaRequest):
    """CAM_Zoom ``8x 01 04 07 xx FF``: stop ``00``, tele/wide ``02``/``03`` at standard speed,
    or ``2p``/``3p`` at variable speed p (0..7)."""

    direction: ZoomDirection
    speed: int | None = None
    address: int = 1
    PREFIX: ClassVar[bytes] = b"\x01\x04\x07"

    def __post_init__(self) -> None:
        if self.speed is not None:
            _check("zoom speed", self.speed, 0, 7)

    def parameters(self) -> bytes:
        if self.direction is ZoomDirection.STOP:
            return b"\x00"
        if self.speed is None:
            return bytes([self.direction])
        return bytes([self.direction << 4 | self.speed])

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        if len(parameters) != 1:
            return None
        value = parameters[0]
        if value == 0:
            return cls(ZoomDirection.STOP, None, address)
        if value in (ZoomDirection.TELE, ZoomDirection.WIDE):
            return cls(ZoomDirection(value), None, address)
        high, speed = value >> 4, value & 0x0F
        if high not in (ZoomDirection.TELE, ZoomDirection.WIDE) or speed > 7:
            return None
        return cls(ZoomDirection(high), speed, address)


@dataclass(frozen=True, slots=True)
class _Position(ViscaRequest):
    position: int
    address: int = 1

    def __post_init__(self) -> None:
        _position_range("position", self.position, signed=False)

    def parameters(self) -> bytes:
        return _to_nibbles(self.position, signed=False)

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        position = _from_nibbles(parameters, signed=False)
        return None if position is None else cls(position, address)


@dataclass(frozen=True, slots=True)
class ZoomDirect(_Position):
    """CAM_Zoom Direct ``8x 01 04 47 0p 0q 0r 0s FF``."""

    PREFIX: ClassVar[bytes] = b"\x01\x04\x47"


@dataclass(frozen=True, slots=True)
class FocusDirect(_Position):
    """CAM_Focus Direct ``8x 01 04 48 0p 0q 0r 0s FF`` (manual focus mode only)."""

    PREFIX: ClassVar[bytes] = b"\x01\x04\x48"


@dataclass(frozen=True, slots=True)
class FocusMode(ViscaRequest):
    """CAM_Focus Auto / Manual ``8x 01 04 38 02/03 FF``."""

    auto: bool
    address: int = 1
    PREFIX: ClassVar[bytes] = b"\x01\x04\x38"

    def parameters(self) -> bytes:
        return b"\x02" if self.auto else b"\x03"

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        if parameters not in (b"\x02", b"\x03"):
            return None
        return cls(parameters == b"\x02", address)


@dataclass(frozen=True, slots=True)
class Preset(ViscaRequest):
    """CAM_Memory ``8x 01 04 3F 0a pp FF``: reset (0), set (1) or recall (2) preset pp."""

    action: PresetAction
    number: int
    address: int = 1
    PREFIX: ClassVar[bytes] = b"\x01\x04\x3f"

    def __post_init__(self) -> None:
        _check("preset number", self.number, 0, 0xFE)

    def parameters(self) -> bytes:
        return bytes([self.action, self.number])

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        action = _member(PresetAction, parameters[0]) if len(parameters) == 2 else None
        return None if action is None else cls(action, parameters[1], address)


@dataclass(frozen=True, slots=True)
class IfClear(_Plain):
    """IF_Clear ``8x 01 00 01 FF``; address `BROADCAST` gives ``88 01 00 01 FF``, which
    travels the whole chain and comes back unchanged."""

    PREFIX: ClassVar[bytes] = b"\x01\x00\x01"


@dataclass(frozen=True, slots=True)
class Cancel(ViscaRequest):
    """CommandCancel ``8x 2p FF``: cancel the command running in socket p."""

    socket: int
    address: int = 1
    PREFIX: ClassVar[bytes] = b""

    def __post_init__(self) -> None:
        _check("socket", self.socket, 0, 0x0F)

    def parameters(self) -> bytes:
        return bytes([0x20 | self.socket])

    @classmethod
    def from_parameters(cls, parameters: bytes, address: int) -> Self | None:
        if len(parameters) != 1 or parameters[0] & 0xF0 != 0x20:
            return None
        return cls(parameters[0] & 0x0F, address)


@dataclass(frozen=True, slots=True)
class AddressSet(ViscaMessage):
    """AddressSet ``88 30 0p FF``: the camera that receives it takes address p and passes
    on p + 1, so the controller gets back the number of cameras + 1."""

    address: int = 1

    def __post_init__(self) -> None:
        _check("address", self.address, 1, BROADCAST)

    def to_packet(self) -> ViscaPacket:
        return ViscaPacket(0x88, bytes([0x30, self.address]))

    @classmethod
    def from_packet(cls, packet: ViscaPacket) -> Self | None:
        body = packet.body
        if packet.header != 0x88 or len(body) != 2 or body[0] != 0x30:
            return None
        return cls(body[1]) if 1 <= body[1] <= BROADCAST else None


class ViscaInquiry(_Plain):
    """An inquiry ``8x 09 ... FF``; the camera answers with ``y0 50 <data> FF``."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PowerInquiry(ViscaInquiry):
    """CAM_PowerInq ``8x 09 04 00 FF`` -> ``y0 50 02 FF`` (on) / ``y0 50 03 FF`` (standby)."""

    PREFIX: ClassVar[bytes] = b"\x09\x04\x00"

    @staticmethod
    def answer(on: bool) -> bytes:
        return b"\x02" if on else b"\x03"

    @staticmethod
    def decode(data: bytes) -> bool:
        if data not in (b"\x02", b"\x03"):
            raise FrameError(f"power inquiry answered {data.hex(' ')}")
        return data == b"\x02"


@dataclass(frozen=True, slots=True)
class FocusModeInquiry(ViscaInquiry):
    """CAM_FocusModeInq ``8x 09 04 38 FF`` -> ``y0 50 02 FF`` (auto) / ``03`` (manual)."""

    PREFIX: ClassVar[bytes] = b"\x09\x04\x38"

    @staticmethod
    def answer(auto: bool) -> bytes:
        return b"\x02" if auto else b"\x03"

    @staticmethod
    def decode(data: bytes) -> bool:
        if data not in (b"\x02", b"\x03"):
            raise FrameError(f"focus mode inquiry answered {data.hex(' ')}")
        return data == b"\x02"


class _PositionInquiry(ViscaInquiry):
    __slots__ = ()

    @staticmethod
    def answer(position: int) -> bytes:
        return _to_nibbles(position, signed=False)

    @staticmethod
    def decode(data: bytes) -> int:
        position = _from_nibbles(data, signed=False)
        if position is None:
            raise FrameError(f"position inquiry answered {data.hex(' ')}")
        return position


@dataclass(frozen=True, slots=True)
class ZoomPositionInquiry(_PositionInquiry):
    """CAM_ZoomPosInq ``8x 09 04 47 FF`` -> ``y0 50 0p 0q 0r 0s FF``."""

    PREFIX: ClassVar[bytes] = b"\x09\x04\x47"


@dataclass(frozen=True, slots=True)
class FocusPositionInquiry(_PositionInquiry):
    """CAM_FocusPosInq ``8x 09 04 48 FF`` -> ``y0 50 0p 0q 0r 0s FF``."""

    PREFIX: ClassVar[bytes] = b"\x09\x04\x48"


@dataclass(frozen=True, slots=True)
class PanTiltPositionInquiry(ViscaInquiry):
    """Pan-tiltPosInq ``8x 09 06 12 FF`` -> ``y0 50 0w 0w 0w 0w 0z 0z 0z 0z FF`` (signed)."""

    PREFIX: ClassVar[bytes] = b"\x09\x06\x12"

    @staticmethod
    def answer(pan: int, tilt: int) -> bytes:
        return _to_nibbles(pan, signed=True) + _to_nibbles(tilt, signed=True)

    @staticmethod
    def decode(data: bytes) -> tuple[int, int]:
        pan = _from_nibbles(data[:4], signed=True)
        tilt = _from_nibbles(data[4:], signed=True)
        if pan is None or tilt is None or len(data) != 8:
            raise FrameError(f"pan/tilt position inquiry answered {data.hex(' ')}")
        return pan, tilt


REQUEST_TYPES: tuple[type[ViscaRequest], ...] = (
    Power,
    PanTiltDrive,
    PanTiltAbsolute,
    PanTiltRelative,
    PanTiltHome,
    PanTiltReset,
    ZoomDrive,
    ZoomDirect,
    FocusMode,
    FocusDirect,
    Preset,
    IfClear,
    Cancel,
    PowerInquiry,
    ZoomPositionInquiry,
    FocusPositionInquiry,
    FocusModeInquiry,
    PanTiltPositionInquiry,
)


def decode_request(packet: ViscaPacket) -> ViscaRequest | None:
    """The command or inquiry in ``packet``; None if it is none this codec knows."""
    for kind in REQUEST_TYPES:
        request = kind.from_packet(packet)
        if request is not None:
            return request
    return None


# --- replies ----------------------------------------------------------------------------


class ViscaReply(ViscaMessage):
    """A message from camera ``address`` to the controller (header ``y0``, y = address + 8)."""

    __slots__ = ()
    address: int

    def message(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_message(cls, body: bytes, address: int) -> Self | None:
        raise NotImplementedError

    def to_packet(self) -> ViscaPacket:
        _check("camera address", self.address, 1, 7)
        return ViscaPacket((self.address + 8) << 4, self.message())

    @classmethod
    def from_packet(cls, packet: ViscaPacket) -> Self | None:
        if packet.receiver != 0 or packet.sender == 0:
            return None
        return cls.from_message(packet.body, packet.sender)


@dataclass(frozen=True, slots=True)
class Ack(ViscaReply):
    """ACK ``y0 4z FF``: the command is accepted and runs in socket z."""

    socket: int
    address: int = 1

    def message(self) -> bytes:
        return bytes([0x40 | self.socket])

    @classmethod
    def from_message(cls, body: bytes, address: int) -> Self | None:
        if len(body) != 1 or body[0] & 0xF0 != 0x40:
            return None
        return cls(body[0] & 0x0F, address)


@dataclass(frozen=True, slots=True)
class Completion(ViscaReply):
    """Completion ``y0 5z FF`` of the command in socket z, or ``y0 50 <data> FF`` answering
    an inquiry."""

    socket: int = 0
    data: bytes = b""
    address: int = 1

    def message(self) -> bytes:
        return bytes([0x50 | self.socket]) + self.data

    @classmethod
    def from_message(cls, body: bytes, address: int) -> Self | None:
        if body[0] & 0xF0 != 0x50:
            return None
        return cls(body[0] & 0x0F, body[1:], address)


@dataclass(frozen=True, slots=True)
class ErrorReply(ViscaReply):
    """Error ``y0 6z cc FF``; cc is a `ViscaErrorCode`."""

    code: int
    socket: int = 0
    address: int = 1

    def message(self) -> bytes:
        return bytes([0x60 | self.socket, self.code])

    @classmethod
    def from_message(cls, body: bytes, address: int) -> Self | None:
        if len(body) != 2 or body[0] & 0xF0 != 0x60:
            return None
        return cls(body[1], body[0] & 0x0F, address)

    def describe(self) -> str:
        text = _ERROR_TEXT.get(self.code, "unknown error")
        return f"camera {self.address}: {text} ({self.code:#04x}, socket {self.socket})"


@dataclass(frozen=True, slots=True)
class NetworkChange(ViscaReply):
    """Network change ``y0 38 FF``: sent when the camera powers up or the chain changes."""

    address: int = 1

    def message(self) -> bytes:
        return b"\x38"

    @classmethod
    def from_message(cls, body: bytes, address: int) -> Self | None:
        return cls(address) if body == b"\x38" else None


_REPLY_TYPES: tuple[type[ViscaMessage], ...] = (
    Ack,
    Completion,
    ErrorReply,
    NetworkChange,
    AddressSet,
)


def decode_reply(packet: ViscaPacket) -> ViscaMessage | None:
    """What a camera sent: `Ack`, `Completion`, `ErrorReply`, `NetworkChange`, or a
    broadcast that came back round the chain (`AddressSet`, `IfClear`); None otherwise."""
    for kind in _REPLY_TYPES:
        reply = kind.from_packet(packet)
        if reply is not None:
            return reply
    if packet.header == 0x88:
        return IfClear.from_packet(packet)
    return None


# --- VISCA over IP ----------------------------------------------------------------------


class PayloadType(IntEnum):
    """Byte 0-1 of the VISCA-over-IP header."""

    VISCA_COMMAND = 0x0100
    VISCA_INQUIRY = 0x0110
    VISCA_REPLY = 0x0111
    DEVICE_SETTING = 0x0120
    CONTROL_COMMAND = 0x0200
    CONTROL_REPLY = 0x0201


class ControlError(IntEnum):
    """The ERROR control payload ``0F yy``, as a two-byte value."""

    SEQUENCE_NUMBER = 0x0F01
    MESSAGE = 0x0F02


CONTROL_RESET = b"\x01"
CONTROL_ACK = b"\x01"
_IP_HEADER = struct.Struct(">HHI")


@dataclass(frozen=True, slots=True)
class ViscaIpMessage:
    """One VISCA-over-IP message: payload type, length, sequence number, then the payload."""

    payload_type: int
    sequence: int
    payload: bytes

    def __post_init__(self) -> None:
        _check("payload type", self.payload_type, 0, 0xFFFF)
        _check("sequence number", self.sequence, 0, 0xFFFF_FFFF)
        _check("payload length", len(self.payload), 1, MAX_PACKET)

    @classmethod
    def parse(cls, data: bytes) -> ViscaIpMessage:
        message, end = cls._parse_at(data, 0)
        if end != len(data):
            raise FrameError(f"{len(data) - end} bytes after a VISCA-over-IP message")
        return message

    @classmethod
    def split(cls, datagram: bytes) -> list[ViscaIpMessage]:
        """Every message in a datagram (a device may send several back to back)."""
        messages = []
        offset = 0
        while True:
            message, offset = cls._parse_at(datagram, offset)
            messages.append(message)
            if offset == len(datagram):
                return messages

    @classmethod
    def _parse_at(cls, data: bytes, offset: int) -> tuple[ViscaIpMessage, int]:
        if len(data) - offset < _IP_HEADER.size + 1:
            raise FrameError(f"a VISCA-over-IP message is at least 9 bytes: {data.hex(' ')}")
        payload_type, length, sequence = _IP_HEADER.unpack_from(data, offset)
        if not 1 <= length <= MAX_PACKET:
            raise FrameError(f"VISCA-over-IP payload length {length} is not 1..16")
        start = offset + _IP_HEADER.size
        end = start + length
        if end > len(data):
            raise FrameError(f"VISCA-over-IP payload truncated: {end - len(data)} bytes short")
        return cls(payload_type, sequence, bytes(data[start:end])), end

    def __bytes__(self) -> bytes:
        header = _IP_HEADER.pack(self.payload_type, len(self.payload), self.sequence)
        return header + self.payload

    @staticmethod
    def peek_sequence(data: bytes) -> int | None:
        """The sequence number of a datagram too broken to parse, if it has a header."""
        if len(data) < _IP_HEADER.size:
            return None
        return int(_IP_HEADER.unpack_from(data)[2])

    def control_error(self) -> ControlError | None:
        """The ERROR a device reported in this message, if it is one."""
        is_control = self.payload_type in (PayloadType.CONTROL_COMMAND, PayloadType.CONTROL_REPLY)
        if not is_control or len(self.payload) != 2 or self.payload[0] != 0x0F:
            return None
        return _member(ControlError, int.from_bytes(self.payload, "big"))


# --- clients ----------------------------------------------------------------------------

_DIRECTIONS: dict[Direction, tuple[PanDirection, TiltDirection]] = {
    Direction.UP: (PanDirection.STOP, TiltDirection.UP),
    Direction.DOWN: (PanDirection.STOP, TiltDirection.DOWN),
    Direction.LEFT: (PanDirection.LEFT, TiltDirection.STOP),
    Direction.RIGHT: (PanDirection.RIGHT, TiltDirection.STOP),
    Direction.UP_LEFT: (PanDirection.LEFT, TiltDirection.UP),
    Direction.UP_RIGHT: (PanDirection.RIGHT, TiltDirection.UP),
    Direction.DOWN_LEFT: (PanDirection.LEFT, TiltDirection.DOWN),
    Direction.DOWN_RIGHT: (PanDirection.RIGHT, TiltDirection.DOWN),
}


def _is_if_clear(reply: ViscaMessage) -> bool:
    return isinstance(reply, IfClear)


def _is_address_set(reply: ViscaMessage) -> bool:
    return isinstance(reply, AddressSet)


def _rejected(error: ErrorReply) -> DeviceRejected:
    return DeviceRejected(error.describe(), code=error.code)


class _ViscaControl:
    """`CameraControl` in VISCA terms; subclasses move the packets."""

    address: int

    async def execute(self, command: ViscaRequest) -> None:
        """Send a command; return once the camera reports it complete."""
        raise NotImplementedError

    async def inquire(self, inquiry: ViscaInquiry) -> bytes:
        """Send an inquiry; return the data of the camera's answer."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def power(self) -> bool:
        return PowerInquiry.decode(await self.inquire(PowerInquiry(self.address)))

    async def pan_tilt_position(self) -> tuple[int, int]:
        data = await self.inquire(PanTiltPositionInquiry(self.address))
        return PanTiltPositionInquiry.decode(data)

    async def zoom_position(self) -> int:
        return ZoomPositionInquiry.decode(await self.inquire(ZoomPositionInquiry(self.address)))

    async def focus_position(self) -> int:
        return FocusPositionInquiry.decode(await self.inquire(FocusPositionInquiry(self.address)))

    async def focus_is_auto(self) -> bool:
        return FocusModeInquiry.decode(await self.inquire(FocusModeInquiry(self.address)))

    async def status(self) -> CameraStatus:
        if not await self.power():
            return CameraStatus(power=False)
        pan, tilt = await self.pan_tilt_position()
        return CameraStatus(power=True, pan=pan, tilt=tilt, zoom=await self.zoom_position())

    async def set_power(self, on: bool) -> None:
        await self.execute(Power(on, self.address))

    async def pan_tilt_absolute(self, pan: int, tilt: int, pan_speed: int, tilt_speed: int) -> None:
        await self.execute(PanTiltAbsolute(pan_speed, tilt_speed, pan, tilt, self.address))

    async def pan_tilt_relative(self, pan: int, tilt: int, pan_speed: int, tilt_speed: int) -> None:
        await self.execute(PanTiltRelative(pan_speed, tilt_speed, pan, tilt, self.address))

    async def pan_tilt_drive(self, direction: Direction, pan_speed: int, tilt_speed: int) -> None:
        pan, tilt = _DIRECTIONS[direction]
        await self.execute(PanTiltDrive(pan_speed, tilt_speed, pan, tilt, self.address))

    async def pan_tilt_stop(self) -> None:
        stop = PanTiltDrive(1, 1, PanDirection.STOP, TiltDirection.STOP, self.address)
        await self.execute(stop)

    async def home(self) -> None:
        await self.execute(PanTiltHome(self.address))

    async def zoom_absolute(self, position: int) -> None:
        await self.execute(ZoomDirect(position, self.address))

    async def zoom_drive(self, direction: ZoomDirection, speed: int | None = None) -> None:
        await self.execute(ZoomDrive(direction, speed, self.address))

    async def set_focus_auto(self, auto: bool) -> None:
        await self.execute(FocusMode(auto, self.address))

    async def focus_absolute(self, position: int) -> None:
        await self.execute(FocusDirect(position, self.address))

    async def preset_recall(self, number: int) -> None:
        await self.execute(Preset(PresetAction.RECALL, number, self.address))

    async def preset_set(self, number: int) -> None:
        await self.execute(Preset(PresetAction.SET, number, self.address))

    async def preset_reset(self, number: int) -> None:
        await self.execute(Preset(PresetAction.RESET, number, self.address))


class ViscaCamera(_ViscaControl):
    """A VISCA camera on a serial line (RS-232/RS-422), at ``address`` 1..7 of its chain.

    One request at a time: a command waits for its ACK (up to ``timeout`` s, resent up to
    ``retries`` times when nothing comes) and then for the completion of the socket the ACK
    named (up to ``completion_timeout`` s: a preset recall can take seconds and must not be
    sent twice). Error replies raise `DeviceRejected` with the VISCA error code.
    """

    def __init__(
        self,
        link: StreamLink,
        address: int = 1,
        *,
        timeout: float = 1.0,
        retries: int = 2,
        completion_timeout: float = 15.0,
    ) -> None:
        _check("camera address", address, 1, 7)
        self._link = link
        self.address = address
        self.timeout = timeout
        self.retries = retries
        self.completion_timeout = completion_timeout
        self._decoder = ViscaStreamDecoder()
        self._lock = asyncio.Lock()
        self._garbage_seen = False

    @classmethod
    async def open_serial(
        cls,
        port: str,
        address: int = 1,
        baudrate: int = 9600,
        *,
        timeout: float = 1.0,
        retries: int = 2,
        completion_timeout: float = 15.0,
    ) -> ViscaCamera:
        """Open ``port``: a device path or a pyserial URL such as ``socket://host:port``."""
        link = await StreamLink.open_serial(port, baudrate)
        return cls(
            link, address, timeout=timeout, retries=retries, completion_timeout=completion_timeout
        )

    async def close(self) -> None:
        await self._link.close()

    async def execute(self, command: ViscaRequest) -> None:
        async with self._lock:
            reply = await self._send_until_answered(command, self._answers_command)
            if isinstance(reply, ErrorReply):
                raise _rejected(reply)
            if isinstance(reply, Ack):
                await self._await_completion(reply.socket)

    async def inquire(self, inquiry: ViscaInquiry) -> bytes:
        async with self._lock:
            reply = await self._send_until_answered(inquiry, self._answers_inquiry)
            if isinstance(reply, ErrorReply):
                raise _rejected(reply)
            assert isinstance(reply, Completion)
            return reply.data

    async def clear_interface(self) -> None:
        """Broadcast IF_Clear; it returns once it has been round the chain."""
        async with self._lock:
            await self._send_until_answered(IfClear(BROADCAST), _is_if_clear)

    async def assign_addresses(self) -> int:
        """Broadcast AddressSet: number the chain 1, 2, ...; return how many cameras it has."""
        async with self._lock:
            reply = await self._send_until_answered(AddressSet(1), _is_address_set)
            assert isinstance(reply, AddressSet)
            return reply.address - 1

    def _answers_command(self, reply: ViscaMessage) -> bool:
        return isinstance(reply, Ack | Completion | ErrorReply) and reply.address == self.address

    def _answers_inquiry(self, reply: ViscaMessage) -> bool:
        # Inquiries are answered in socket 0; anything else is late news of a command.
        return self._in_socket(reply, 0)

    def _in_socket(self, reply: ViscaMessage, socket: int) -> bool:
        if not isinstance(reply, Completion | ErrorReply):
            return False
        return reply.address == self.address and reply.socket == socket

    async def _send_until_answered(
        self, request: ViscaMessage, accept: Callable[[ViscaMessage], bool]
    ) -> ViscaMessage:
        self._garbage_seen = False
        for attempt in range(self.retries + 1):
            await self._link.write(bytes(request))
            try:
                return await self._next_reply(self.timeout, accept)
            except DeviceTimeout:
                logger.debug("%s: no answer to %s (attempt %d)", self._link.name, request, attempt)
        raise self._silence(f"no answer to {request} after {self.retries + 1} tries")

    async def _await_completion(self, socket: int) -> None:
        def completes(reply: ViscaMessage) -> bool:
            return self._in_socket(reply, socket)

        try:
            reply = await self._next_reply(self.completion_timeout, completes)
        except DeviceTimeout:
            raise self._silence(f"socket {socket} never completed") from None
        if isinstance(reply, ErrorReply):
            raise _rejected(reply)

    async def _next_reply(
        self, timeout: float, accept: Callable[[ViscaMessage], bool]
    ) -> ViscaMessage:
        """The next reply that ``accept`` takes, within ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            packet = self._next_packet()
            if packet is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise DeviceTimeout(f"{self._link.name}: no answer within {timeout:g} s")
                self._decoder.feed(await self._link.read(remaining))
                continue
            reply = decode_reply(packet)
            if reply is not None and accept(reply):
                return reply
            logger.debug("%s: ignored %s", self._link.name, packet)

    def _next_packet(self) -> ViscaPacket | None:
        while True:  # ends: every FrameError consumed at least one byte
            try:
                return self._decoder.next_packet()
            except FrameError as exc:
                self._garbage_seen = True
                logger.debug("%s: %s", self._link.name, exc)

    def _silence(self, message: str) -> FrameError | DeviceTimeout:
        if self._garbage_seen:
            return FrameError(f"{self._link.name}: {message}; it sent only garbage")
        return DeviceTimeout(f"{self._link.name}: {message}")


class _ViscaIpProtocol(asyncio.DatagramProtocol):
    """Receives datagrams from the camera and queues the messages in them."""

    QUEUE_LIMIT = 64

    def __init__(self) -> None:
        self.messages: asyncio.Queue[ViscaIpMessage] = asyncio.Queue(self.QUEUE_LIMIT)
        self.garbage_seen = False

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        try:
            messages = ViscaIpMessage.split(data)
        except FrameError as exc:
            self.garbage_seen = True
            logger.debug("VISCA over IP: ignored a datagram from %s: %s", addr, exc)
            return
        for message in messages:
            if self.messages.full():
                logger.warning("VISCA over IP: dropped a message; nobody is reading")
                return
            self.messages.put_nowait(message)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the device may still come up; the request
        # that is waiting times out and resends.
        logger.debug("VISCA over IP: %s", exc)


class ViscaIpCamera(_ViscaControl):
    """A camera controlled with VISCA over IP (UDP, port 52381 by default).

    Every message carries a sequence number; replies are matched to requests by it. When no
    answer comes within ``timeout`` s (``completion_timeout`` once ACKed), the message is
    resent with the same number, up to ``retries`` times; a camera that had already
    executed it answers "abnormal sequence number", which for a command means done, and for
    an inquiry means its answer was lost, so the inquiry goes again with a new number.
    """

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        protocol: _ViscaIpProtocol,
        name: str,
        *,
        timeout: float = 0.5,
        retries: int = 2,
        completion_timeout: float = 15.0,
    ) -> None:
        self.address = 1  # VISCA over IP always addresses camera 1
        self._transport = transport
        self._protocol = protocol
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.completion_timeout = completion_timeout
        self._sequence = 0
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = VISCA_IP_PORT,
        *,
        timeout: float = 0.5,
        retries: int = 2,
        completion_timeout: float = 15.0,
    ) -> ViscaIpCamera:
        """Open a UDP endpoint to ``host:port`` and RESET the camera's sequence number."""
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                _ViscaIpProtocol, remote_addr=(host, port)
            )
        except OSError as exc:
            raise LinkClosed(f"cannot reach {host}:{port}: {exc}") from None
        camera = cls(
            transport,
            protocol,
            f"{host}:{port}",
            timeout=timeout,
            retries=retries,
            completion_timeout=completion_timeout,
        )
        try:
            await camera.reset_sequence()
        except BaseException:
            await camera.close()
            raise
        return camera

    async def close(self) -> None:
        self._transport.close()

    async def reset_sequence(self) -> None:
        """Control command RESET: the camera forgets the last sequence number it saw."""
        async with self._lock:
            self._protocol.garbage_seen = False
            reset = ViscaIpMessage(PayloadType.CONTROL_COMMAND, self._sequence, CONTROL_RESET)
            for _ in range(self.retries + 1):
                self._send(reset)
                with contextlib.suppress(DeviceTimeout):
                    reply = await self._answer_to(reset.sequence, self.timeout)
                    error = reply.control_error()
                    if error is not None:
                        raise DeviceRejected(f"{self.name}: RESET refused", code=error)
                    if reply.payload_type == PayloadType.CONTROL_REPLY:
                        self._sequence = 0
                        return
            raise self._silence("no reply to RESET")

    async def execute(self, command: ViscaRequest) -> None:
        async with self._lock:
            await self._transact(PayloadType.VISCA_COMMAND, command)

    async def inquire(self, inquiry: ViscaInquiry) -> bytes:
        async with self._lock:
            completion = await self._transact(PayloadType.VISCA_INQUIRY, inquiry)
            assert completion is not None
            return completion.data

    async def _transact(
        self, payload_type: PayloadType, request: ViscaRequest
    ) -> Completion | None:
        """The completion of ``request``; None for a command the camera had already run."""
        self._protocol.garbage_seen = False
        sequence = self._next_sequence()
        for attempt in range(self.retries + 1):
            self._send(ViscaIpMessage(payload_type, sequence, bytes(request)))
            try:
                outcome = await self._outcome(sequence)
            except DeviceTimeout:
                logger.debug("%s: no answer to %s (attempt %d)", self.name, request, attempt)
                continue
            if isinstance(outcome, Completion):
                return outcome
            # The camera had already executed this sequence number: our answer was lost.
            if attempt == 0:
                raise DeviceRejected(
                    f"{self.name}: sequence number {sequence} refused", code=outcome
                )
            if payload_type is not PayloadType.VISCA_INQUIRY:
                return None
            sequence = self._next_sequence()  # the answer is needed: ask again, anew
        raise self._silence(f"no answer to {request} after {self.retries + 1} tries")

    async def _outcome(self, sequence: int) -> Completion | ControlError:
        """The completion of message ``sequence`` (after its ACK if it has one), or the
        abnormal-sequence-number error; error replies raise `DeviceRejected`."""
        timeout = self.timeout
        while True:
            message = await self._answer_to(sequence, timeout)
            error = message.control_error()
            if error is ControlError.MESSAGE:
                raise DeviceRejected(f"{self.name}: abnormal message", code=error)
            if error is not None:
                return error
            reply = self._visca_reply(message)
            if isinstance(reply, Ack):
                timeout = self.completion_timeout  # moving to a position takes a while
            elif isinstance(reply, Completion):
                return reply
            elif isinstance(reply, ErrorReply):
                raise _rejected(reply)

    async def _answer_to(self, sequence: int, timeout: float) -> ViscaIpMessage:
        """The next message from the camera carrying ``sequence``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await self._protocol.messages.get()
            except TimeoutError:
                raise DeviceTimeout(f"{self.name}: no answer within {timeout:g} s") from None
            if message.sequence == sequence:
                return message
            logger.debug("%s: ignored a late answer to message %d", self.name, message.sequence)

    def _visca_reply(self, message: ViscaIpMessage) -> ViscaMessage | None:
        if message.payload_type != PayloadType.VISCA_REPLY:
            return None
        try:
            return decode_reply(ViscaPacket.parse(message.payload))
        except FrameError as exc:
            self._protocol.garbage_seen = True
            logger.debug("%s: %s", self.name, exc)
            return None

    def _next_sequence(self) -> int:
        self._sequence = (self._sequence + 1) & 0xFFFF_FFFF
        return self._sequence

    def _send(self, message: ViscaIpMessage) -> None:
        if self._transport.is_closing():
            raise LinkClosed(f"{self.name}: closed")
        self._transport.sendto(bytes(message))

    def _silence(self, message: str) -> FrameError | DeviceTimeout:
        if self._protocol.garbage_seen:
            return FrameError(f"{self.name}: {message}; it sent only garbage")
        return DeviceTimeout(f"{self.name}: {message}")
