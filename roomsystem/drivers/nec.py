"""NEC (Sharp NEC) large-format display external control: codec and asyncio client.

Wire format, from NEC's "External Control" manual for LCD monitors (e.g. MultiSync P/V/C
series, Rev. 2.x), sections 4 "Communication Format" and 5 "Message type", and section 7
"Power control procedure". RS-232C at 9600 8N1, or TCP port 7142 on the LAN::

    header   SOH '0' destination source type length(2 ASCII hex)
    message  STX ... ETX
    check    BCC = XOR of every byte from the header's second byte up to ETX
    end      CR

The controller is ``'0'``; monitor ID 1..100 is the address ``'A'`` (41h) .. A4h, ``'*'``
addresses every monitor. Message types: A command, B command reply, C get parameter,
D get reply, E set parameter, F set reply. Numbers in messages are ASCII hex.
Get/set replies carry ``result(2) page(2) code(2) type(2) max(4) current(4)`` with result
00 = no error, 01 = unsupported (by the model, or in the monitor's current state).
A monitor that has no answer (busy, or an unknown command) sends the NULL message
``STX 'B' 'E' ETX`` (section 5.5.3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from roomsystem.drivers.display import DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, DriverError, FrameError
from roomsystem.drivers.link import StreamLink

logger = logging.getLogger(__name__)

TCP_PORT = 7142
BAUDRATE = 9600

SOH = 0x01
STX = 0x02
ETX = 0x03
CR = 0x0D
RESERVED = 0x30  # '0'
CONTROLLER = 0x30  # '0': the controller's address, as sender and as receiver of replies
ALL_MONITORS = 0x2A  # '*'
HEADER_LENGTH = 7  # SOH, reserved, destination, source, type, length (2)
MIN_PACKET_LENGTH = HEADER_LENGTH + 2 + 2  # STX ETX BCC CR

OPCODE_INPUT = 0x0060
OPCODE_VOLUME = 0x0062
OPCODE_MUTE = 0x008D
MUTE_ON = 1
MUTE_OFF = 2  # 0 also unmutes, but is "set only": the monitor reports 2
RESULT_OK = 0x00
RESULT_UNSUPPORTED = 0x01
PARAMETER_TYPE_SET = 0x00
PARAMETER_TYPE_MOMENTARY = 0x01

NULL_MESSAGE = b"BE"
POWER_STATUS_READ = b"01D6"
_POWER_STATUS_PREFIX = b"02"  # "reserved data" before the result code
_POWER_MODE_CODE = b"D6"
_POWER_CONTROL = b"C203D6"

# Input codes of opcode 0060h (operation code table; names as the room calls them).
INPUT_CODES: dict[str, int] = {
    "vga1": 0x01,
    "dvi1": 0x03,
    "displayport1": 0x0F,
    "displayport2": 0x10,
    "hdmi1": 0x11,
    "hdmi2": 0x12,
    "hdmi3": 0x82,
    "hdmi4": 0x83,
    "usbc1": 0x89,
}
INPUT_NAMES: dict[int, str] = {code: name for name, code in INPUT_CODES.items()}

_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")


class MessageType(IntEnum):
    """The header's message type byte (section 4.2)."""

    COMMAND = 0x41  # 'A'
    COMMAND_REPLY = 0x42  # 'B'
    GET_PARAMETER = 0x43  # 'C'
    GET_REPLY = 0x44  # 'D'
    SET_PARAMETER = 0x45  # 'E'
    SET_REPLY = 0x46  # 'F'


class PowerMode(IntEnum):
    """Power modes of the power status read and power control commands (section 7)."""

    ON = 1
    STANDBY = 2
    SUSPEND = 3
    OFF = 4


def monitor_address(monitor_id: int) -> int:
    """The header byte that addresses monitor ID 1..100 ('A' is monitor 1)."""
    if not 1 <= monitor_id <= 100:
        raise ValueError(f"NEC monitor ID must be 1..100, not {monitor_id}")
    return 0x41 + monitor_id - 1


def block_check_code(data: bytes) -> int:
    """XOR of ``data``: pass the bytes from the header's second byte up to ETX."""
    code = 0
    for byte in data:
        code ^= byte
    return code


def decode_hex(field: bytes) -> int:
    """An ASCII hex field as a number; FrameError for anything but hex digits."""
    if not field or not _HEX_DIGITS.issuperset(field):
        raise FrameError(f"not ASCII hex: {field!r}")
    return int(field, 16)


def encode_hex(value: int, digits: int) -> bytes:
    """``value`` as ``digits`` upper-case ASCII hex digits, as the monitor writes them."""
    if not 0 <= value < 16**digits:
        raise ValueError(f"{value} does not fit in {digits} hex digits")
    return b"%0*X" % (digits, value)


@dataclass(frozen=True, slots=True)
class NecPacket:
    """One packet: header, the message between STX and ETX, check code and delimiter."""

    destination: int
    source: int
    message_type: MessageType
    message: bytes

    @classmethod
    def parse(cls, data: bytes) -> NecPacket:
        if len(data) < MIN_PACKET_LENGTH:
            raise FrameError(f"NEC packet too short: {data!r}")
        if data[0] != SOH or data[1] != RESERVED:
            raise FrameError(f"NEC packet does not start with SOH '0': {data[:2]!r}")
        length = decode_hex(data[5:7])
        if len(data) != HEADER_LENGTH + length + 2:
            raise FrameError(f"NEC packet length field says {length}, packet is {len(data)}")
        end = HEADER_LENGTH + length - 1
        if data[HEADER_LENGTH] != STX or data[end] != ETX:
            raise FrameError("NEC message is not framed by STX .. ETX")
        if data[-1] != CR:
            raise FrameError("NEC packet does not end with CR")
        expected = block_check_code(data[1 : end + 1])
        if data[-2] != expected:
            raise FrameError(f"NEC check code {data[-2]:02X}h, expected {expected:02X}h")
        try:
            message_type = MessageType(data[4])
        except ValueError:
            raise FrameError(f"unknown NEC message type {data[4]:02X}h") from None
        return cls(data[2], data[3], message_type, bytes(data[HEADER_LENGTH + 1 : end]))

    def __bytes__(self) -> bytes:
        body = (
            bytes([RESERVED, self.destination, self.source, self.message_type])
            + encode_hex(len(self.message) + 2, 2)
            + bytes([STX])
            + self.message
            + bytes([ETX])
        )
        return bytes([SOH]) + body + bytes([block_check_code(body), CR])


class NecDecoder:
    """Splits a byte stream into `NecPacket`s.

    Iterating yields the complete packets buffered so far. Bytes that cannot start or
    complete a packet are dropped and reported by raising `FrameError`; iterate again to
    go on from the next SOH (a bad packet only costs its SOH, so a good packet hidden
    in it is still found).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def reset(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        """Bytes held that do not form a complete packet yet."""
        return len(self._buffer)

    def __iter__(self) -> Iterator[NecPacket]:
        while (packet := self._next()) is not None:
            yield packet

    def _next(self) -> NecPacket | None:
        buffer = self._buffer
        if not buffer:
            return None
        start = buffer.find(SOH)
        if start != 0:
            dropped = len(buffer) if start < 0 else start
            garbage = bytes(buffer[:dropped])
            del buffer[:dropped]
            raise FrameError(f"bytes outside an NEC packet: {garbage[:32]!r}")
        if len(buffer) < HEADER_LENGTH:
            return None
        total = self._packet_length(buffer)
        if len(buffer) < total:
            return None
        try:
            packet = NecPacket.parse(bytes(buffer[:total]))
        except FrameError:
            del buffer[:1]
            raise
        del buffer[:total]
        return packet

    @staticmethod
    def _packet_length(buffer: bytearray) -> int:
        try:
            if buffer[1] != RESERVED:
                raise FrameError(f"NEC reserved byte is {buffer[1]:02X}h, not 30h")
            length = decode_hex(bytes(buffer[5:7]))
            if length < 2:
                raise FrameError(f"NEC message length {length} is shorter than STX ETX")
        except FrameError:
            del buffer[:1]
            raise
        return HEADER_LENGTH + length + 2


@dataclass(frozen=True, slots=True)
class GetParameter:
    """Message of a "get parameter" (type C): the opcode's page and code (section 5.1)."""

    opcode: int

    @classmethod
    def parse(cls, message: bytes) -> GetParameter:
        if len(message) != 4:
            raise FrameError(f"NEC get parameter message must be 4 bytes: {message!r}")
        return cls(decode_hex(message))

    def __bytes__(self) -> bytes:
        return encode_hex(self.opcode, 4)


@dataclass(frozen=True, slots=True)
class SetParameter:
    """Message of a "set parameter" (type E): opcode and 16-bit value (section 5.3)."""

    opcode: int
    value: int

    @classmethod
    def parse(cls, message: bytes) -> SetParameter:
        if len(message) != 8:
            raise FrameError(f"NEC set parameter message must be 8 bytes: {message!r}")
        return cls(decode_hex(message[:4]), decode_hex(message[4:]))

    def __bytes__(self) -> bytes:
        return encode_hex(self.opcode, 4) + encode_hex(self.value, 4)


@dataclass(frozen=True, slots=True)
class ParameterReply:
    """Message of a get or set reply (types D, F; sections 5.2 and 5.4).

    ``current_value`` is the value now in force (for a set reply: the requested one).
    """

    result: int
    opcode: int
    parameter_type: int
    max_value: int
    current_value: int

    @classmethod
    def parse(cls, message: bytes) -> ParameterReply:
        if len(message) != 16:
            raise FrameError(f"NEC parameter reply must be 16 bytes: {message!r}")
        return cls(
            result=decode_hex(message[0:2]),
            opcode=decode_hex(message[2:6]),
            parameter_type=decode_hex(message[6:8]),
            max_value=decode_hex(message[8:12]),
            current_value=decode_hex(message[12:16]),
        )

    def __bytes__(self) -> bytes:
        return (
            encode_hex(self.result, 2)
            + encode_hex(self.opcode, 4)
            + encode_hex(self.parameter_type, 2)
            + encode_hex(self.max_value, 4)
            + encode_hex(self.current_value, 4)
        )


@dataclass(frozen=True, slots=True)
class PowerStatusReply:
    """Reply to the power status read ``01D6`` (section 7.1): ``02 result D6 type max mode``."""

    result: int
    mode: int
    max_mode: int = 4
    parameter_type: int = PARAMETER_TYPE_SET

    @classmethod
    def parse(cls, message: bytes) -> PowerStatusReply:
        if (
            len(message) != 16
            or message[0:2] != _POWER_STATUS_PREFIX
            or message[4:6].upper() != _POWER_MODE_CODE
        ):
            raise FrameError(f"not an NEC power status reply: {message!r}")
        return cls(
            result=decode_hex(message[2:4]),
            parameter_type=decode_hex(message[6:8]),
            max_mode=decode_hex(message[8:12]),
            mode=decode_hex(message[12:16]),
        )

    def __bytes__(self) -> bytes:
        return (
            _POWER_STATUS_PREFIX
            + encode_hex(self.result, 2)
            + _POWER_MODE_CODE
            + encode_hex(self.parameter_type, 2)
            + encode_hex(self.max_mode, 4)
            + encode_hex(self.mode, 4)
        )


@dataclass(frozen=True, slots=True)
class PowerControl:
    """The power control command ``C203D6`` and its mode (section 7.2): 1 on, 4 off."""

    mode: int

    @classmethod
    def parse(cls, message: bytes) -> PowerControl:
        if len(message) != 10 or message[:6].upper() != _POWER_CONTROL:
            raise FrameError(f"not an NEC power control command: {message!r}")
        return cls(decode_hex(message[6:]))

    def __bytes__(self) -> bytes:
        return _POWER_CONTROL + encode_hex(self.mode, 4)


@dataclass(frozen=True, slots=True)
class PowerControlReply:
    """Reply to power control (section 7.2): ``result C203D6 mode``."""

    result: int
    mode: int

    @classmethod
    def parse(cls, message: bytes) -> PowerControlReply:
        if len(message) != 12 or message[2:8].upper() != _POWER_CONTROL:
            raise FrameError(f"not an NEC power control reply: {message!r}")
        return cls(decode_hex(message[:2]), decode_hex(message[8:]))

    def __bytes__(self) -> bytes:
        return encode_hex(self.result, 2) + _POWER_CONTROL + encode_hex(self.mode, 4)


class _NullMessage(DeviceRejected):
    """The monitor answered with the NULL message: busy, or it has no answer."""


T = TypeVar("T")


class NecDisplay:
    """An NEC large-format display on a serial or TCP link (see the module docstring).

    Each request waits ``timeout`` s for its reply and is sent again up to ``retries``
    times when none (or a NULL message, or only garbage) came. A reply with result 01
    raises `DeviceRejected` at once.
    """

    def __init__(
        self, link: StreamLink, monitor_id: int = 1, timeout: float = 1.0, retries: int = 2
    ) -> None:
        if retries < 0 or timeout <= 0:
            raise ValueError("timeout must be positive and retries not negative")
        self._link = link
        self._address = monitor_address(monitor_id)
        self._timeout = timeout
        self._retries = retries
        self._decoder = NecDecoder()
        self._lock = asyncio.Lock()

    async def status(self) -> DisplayStatus:
        if await self.power_mode() != PowerMode.ON:
            # A monitor in standby answers "unsupported" for input and audio.
            return DisplayStatus(power=False)
        source = await self.get_parameter(OPCODE_INPUT)
        volume = await self.get_parameter(OPCODE_VOLUME)
        mute = await self.get_parameter(OPCODE_MUTE)
        return DisplayStatus(
            power=True,
            input_source=INPUT_NAMES.get(source.current_value),
            volume=volume.current_value,
            muted=mute.current_value == MUTE_ON,
        )

    async def power_mode(self) -> PowerMode | int:
        """The power mode; an int if the monitor reports one the manual does not name."""
        request = self._packet(MessageType.COMMAND, POWER_STATUS_READ)
        reply = await self._transact(request, _power_status_reply)
        _check_result(reply.result, "power status read")
        try:
            return PowerMode(reply.mode)
        except ValueError:
            return reply.mode

    async def set_power(self, on: bool) -> None:
        mode = PowerMode.ON if on else PowerMode.OFF
        request = self._packet(MessageType.COMMAND, bytes(PowerControl(mode)))
        reply = await self._transact(request, _power_control_reply)
        _check_result(reply.result, "power control")

    async def set_input_source(self, name: str) -> None:
        try:
            code = INPUT_CODES[name]
        except KeyError:
            raise ValueError(f"NEC displays have no input named {name!r}") from None
        await self.set_parameter(OPCODE_INPUT, code)

    async def set_volume(self, level: int) -> None:
        # Audio volume (0062h) runs 0..100 on these monitors: no scaling needed.
        if not 0 <= level <= 100:
            raise ValueError(f"volume must be 0..100, not {level}")
        await self.set_parameter(OPCODE_VOLUME, level)

    async def set_mute(self, on: bool) -> None:
        await self.set_parameter(OPCODE_MUTE, MUTE_ON if on else MUTE_OFF)

    async def get_parameter(self, opcode: int) -> ParameterReply:
        """Read any opcode of the operation code table."""
        request = self._packet(MessageType.GET_PARAMETER, bytes(GetParameter(opcode)))
        reply = await self._transact(request, _parameter_reply(MessageType.GET_REPLY, opcode))
        _check_result(reply.result, f"get parameter {opcode:04X}h")
        return reply

    async def set_parameter(self, opcode: int, value: int) -> ParameterReply:
        """Write any opcode of the operation code table."""
        request = self._packet(MessageType.SET_PARAMETER, bytes(SetParameter(opcode, value)))
        reply = await self._transact(request, _parameter_reply(MessageType.SET_REPLY, opcode))
        _check_result(reply.result, f"set parameter {opcode:04X}h = {value}")
        return reply

    async def close(self) -> None:
        await self._link.close()

    def _packet(self, message_type: MessageType, message: bytes) -> NecPacket:
        return NecPacket(self._address, CONTROLLER, message_type, message)

    async def _transact(self, request: NecPacket, interpret: Callable[[NecPacket], T | None]) -> T:
        """Send ``request`` until ``interpret`` accepts a reply from this monitor."""
        data = bytes(request)
        async with self._lock:
            error: DriverError = DeviceTimeout(f"{self._link.name}: no reply")
            for attempt in range(self._retries + 1):
                self._decoder.reset()  # a half packet left from the last attempt is dead
                await self._link.write(data)
                try:
                    return await self._receive(interpret)
                except (DeviceTimeout, FrameError, _NullMessage) as exc:
                    logger.debug("%s: attempt %d failed: %s", self._link.name, attempt + 1, exc)
                    error = exc
            raise error

    async def _receive(self, interpret: Callable[[NecPacket], T | None]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        garbage: FrameError | None = None
        while True:  # every read is bounded by the deadline
            packets, error = _drain(self._decoder)
            garbage = error or garbage
            for packet in packets:
                reply = self._accept(packet, interpret)
                if reply is not None:
                    return reply
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

    def _accept(self, packet: NecPacket, interpret: Callable[[NecPacket], T | None]) -> T | None:
        if packet.destination != CONTROLLER or packet.source != self._address:
            logger.debug("%s: ignored a packet for someone else: %r", self._link.name, packet)
            return None
        if packet.message_type == MessageType.COMMAND_REPLY and packet.message == NULL_MESSAGE:
            raise _NullMessage(f"{self._link.name}: monitor sent the NULL message (busy)")
        reply = interpret(packet)
        if reply is None:
            logger.debug("%s: ignored a stale reply: %r", self._link.name, packet)
        return reply


def _drain(decoder: NecDecoder) -> tuple[list[NecPacket], FrameError | None]:
    """Every packet buffered, and the last framing error met on the way."""
    packets: list[NecPacket] = []
    error: FrameError | None = None
    while True:  # each FrameError consumes at least one byte, so this ends
        try:
            packets.extend(decoder)
        except FrameError as exc:
            error = exc
            continue
        return packets, error


def _power_status_reply(packet: NecPacket) -> PowerStatusReply | None:
    if packet.message_type != MessageType.COMMAND_REPLY:
        return None
    try:
        return PowerStatusReply.parse(packet.message)
    except FrameError:
        return None


def _power_control_reply(packet: NecPacket) -> PowerControlReply | None:
    if packet.message_type != MessageType.COMMAND_REPLY:
        return None
    try:
        return PowerControlReply.parse(packet.message)
    except FrameError:
        return None


def _parameter_reply(
    message_type: MessageType, opcode: int
) -> Callable[[NecPacket], ParameterReply | None]:
    def interpret(packet: NecPacket) -> ParameterReply | None:
        if packet.message_type != message_type:
            return None
        reply = ParameterReply.parse(packet.message)
        return reply if reply.opcode == opcode else None

    return interpret


def _check_result(result: int, what: str) -> None:
    if result != RESULT_OK:
        raise DeviceRejected(f"NEC monitor rejected {what} (result {result:02X}h)", code=result)
