"""HDMI-CEC display control through libCEC's ``cec-client``.

Sources:

- HDMI Specification 1.4b, Supplement 1 "Consumer Electronics Control (CEC)": a frame is a
  header block (initiator << 4 | destination), an optional opcode and at most 14 operands
  (CEC 6); opcodes (CEC 15 and Table 8); operands Power Status, Abort Reason, UI Command and
  Audio Status (CEC 17). The same numbers are in Linux ``include/uapi/linux/cec.h``.
- libCEC ``src/cec-client/cec-client.cpp`` and ``src/libcec/CECProcessor.cpp``: cec-client
  reads console commands on stdin (``tx 10:04``: hex bytes joined by ``:``; ``self``;
  ``poll 5``; ``q``) and prints log lines ``TRAFFIC: [%16lld]\\t<< 10:04`` for a frame it sends
  and ``TRAFFIC: [%16lld]\\t>> 01:90:00`` for a frame it receives (time in ms, lowercase
  hex), ``waiting for input`` when it is ready, ``Addresses controlled by libCEC: 4`` for
  ``self`` and ``POLL message sent`` / ``POLL message not sent`` for ``poll``.

What CEC can and cannot do for a room:

- Power: <Image View On> (0x04) wakes the TV, <Standby> (0x36) puts it to sleep,
  <Give Device Power Status> (0x8F) is answered by <Report Power Status> (0x90).
- Input: CEC has no "select HDMI n" message. A source announces itself with
  <Active Source> (0x82) and asks for a route with <Set Stream Path> (0x86); sending both with
  the physical address of the wanted port is what TVs follow. The TV's current input is only
  known from Active Source / Set Stream Path / Routing Change frames seen on the bus.
- Volume: CEC 1.4 has no absolute volume (<Set Audio Volume Level> 0x73 is CEC 2.0). Volume
  up/down and mute are remote-control keys (<User Control Pressed> 0x44, then
  <User Control Released> 0x45) sent to the audio system (or the TV); <Give Audio Status>
  (0x71) is answered by <Report Audio Status> (0x7A: bit 7 mute, bits 0-6 volume 0-100).
  `CecDisplay.set_volume` presses keys until the reported level is reached.
- Acknowledgement: at log level 8 cec-client does not say whether a frame was acknowledged.
  A command counts as done when cec-client logs it as sent; an absent TV shows as a timeout
  of `CecDisplay.status`, an absent audio system as a failed ``poll``.
- cec-client started without ``-s`` uses libCEC's defaults for waking devices on start and
  powering them off on exit; its help says ``q`` "switches off all connected CEC devices".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from roomsystem.drivers.display import DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed

logger = logging.getLogger(__name__)

MAX_OPERANDS = 14
MAX_LINE = 4096
MAX_VOLUME = 100
AUDIO_VOLUME_UNKNOWN = 0x7F
LIBCEC_VERSION = "6.0.2"


class LogicalAddress(IntEnum):
    """CEC 10.2: the 16 logical addresses."""

    TV = 0
    RECORDING_1 = 1
    RECORDING_2 = 2
    TUNER_1 = 3
    PLAYBACK_1 = 4
    AUDIO_SYSTEM = 5
    TUNER_2 = 6
    TUNER_3 = 7
    PLAYBACK_2 = 8
    RECORDING_3 = 9
    TUNER_4 = 10
    PLAYBACK_3 = 11
    BACKUP_1 = 12
    BACKUP_2 = 13
    SPECIFIC_USE = 14
    BROADCAST = 15


class Opcode(IntEnum):
    """CEC 15, Table 8 (the messages a room controller sends or reads)."""

    FEATURE_ABORT = 0x00
    IMAGE_VIEW_ON = 0x04
    TEXT_VIEW_ON = 0x0D
    STANDBY = 0x36
    USER_CONTROL_PRESSED = 0x44
    USER_CONTROL_RELEASED = 0x45
    GIVE_OSD_NAME = 0x46
    SET_OSD_NAME = 0x47
    SYSTEM_AUDIO_MODE_REQUEST = 0x70
    GIVE_AUDIO_STATUS = 0x71
    SET_SYSTEM_AUDIO_MODE = 0x72
    REPORT_AUDIO_STATUS = 0x7A
    GIVE_SYSTEM_AUDIO_MODE_STATUS = 0x7D
    SYSTEM_AUDIO_MODE_STATUS = 0x7E
    ROUTING_CHANGE = 0x80
    ROUTING_INFORMATION = 0x81
    ACTIVE_SOURCE = 0x82
    GIVE_PHYSICAL_ADDRESS = 0x83
    REPORT_PHYSICAL_ADDRESS = 0x84
    REQUEST_ACTIVE_SOURCE = 0x85
    SET_STREAM_PATH = 0x86
    DEVICE_VENDOR_ID = 0x87
    GIVE_DEVICE_VENDOR_ID = 0x8C
    GIVE_DEVICE_POWER_STATUS = 0x8F
    REPORT_POWER_STATUS = 0x90
    INACTIVE_SOURCE = 0x9D
    CEC_VERSION = 0x9E
    GET_CEC_VERSION = 0x9F
    ABORT = 0xFF


class PowerStatus(IntEnum):
    """CEC 17, [Power Status] operand of <Report Power Status>."""

    ON = 0
    STANDBY = 1
    TRANSITION_STANDBY_TO_ON = 2
    TRANSITION_ON_TO_STANDBY = 3

    @property
    def is_on(self) -> bool:
        """On, or on its way on: the display will show a picture."""
        return self in (PowerStatus.ON, PowerStatus.TRANSITION_STANDBY_TO_ON)


class AbortReason(IntEnum):
    """CEC 17, [Abort Reason] operand of <Feature Abort>."""

    UNRECOGNIZED_OPCODE = 0
    NOT_IN_CORRECT_MODE = 1
    CANNOT_PROVIDE_SOURCE = 2
    INVALID_OPERAND = 3
    REFUSED = 4
    UNABLE_TO_DETERMINE = 5


class UserControl(IntEnum):
    """CEC 17, [UI Command] operand of <User Control Pressed> (the keys used here)."""

    POWER = 0x40
    VOLUME_UP = 0x41
    VOLUME_DOWN = 0x42
    MUTE = 0x43
    MUTE_FUNCTION = 0x65
    RESTORE_VOLUME_FUNCTION = 0x66
    POWER_TOGGLE_FUNCTION = 0x6B
    POWER_OFF_FUNCTION = 0x6C
    POWER_ON_FUNCTION = 0x6D


DEFAULT_INPUTS: Mapping[str, int] = {f"hdmi{port}": port << 12 for port in range(1, 5)}


def format_physical_address(address: int) -> str:
    """0x1000 -> ``"1.0.0.0"`` (CEC 8.7: four nibbles, one per HDMI hop)."""
    return ".".join(f"{(address >> shift) & 0xF:x}" for shift in (12, 8, 4, 0))


def _hex_bytes(text: str) -> bytes:
    parts = text.split(":")
    if any(len(part) not in (1, 2) for part in parts):
        raise FrameError(f"not colon-separated hex bytes: {text!r}")
    try:
        return bytes(int(part, 16) for part in parts)
    except ValueError:
        raise FrameError(f"not colon-separated hex bytes: {text!r}") from None


@dataclass(frozen=True, slots=True)
class CecFrame:
    """One CEC message: header block, optional opcode (none: a polling message), operands."""

    initiator: int
    destination: int
    opcode: int | None = None
    operands: bytes = b""

    def __post_init__(self) -> None:
        if not (0 <= self.initiator <= 15 and 0 <= self.destination <= 15):
            raise ValueError("logical addresses are 0..15")
        if self.opcode is None and self.operands:
            raise ValueError("a frame without opcode has no operands")
        if self.opcode is not None and not 0 <= self.opcode <= 0xFF:
            raise ValueError("an opcode is one byte")
        if len(self.operands) > MAX_OPERANDS:
            raise ValueError(f"at most {MAX_OPERANDS} operands")

    @classmethod
    def parse(cls, data: bytes) -> CecFrame:
        """The blocks of a frame as they go over the bus."""
        if not data:
            raise FrameError("empty CEC frame")
        if len(data) > MAX_OPERANDS + 2:
            raise FrameError(f"CEC frame of {len(data)} blocks, at most {MAX_OPERANDS + 2}")
        opcode = data[1] if len(data) > 1 else None
        return cls(data[0] >> 4, data[0] & 0xF, opcode, bytes(data[2:]))

    def __bytes__(self) -> bytes:
        header = bytes([self.initiator << 4 | self.destination])
        if self.opcode is None:
            return header
        return header + bytes([self.opcode]) + self.operands

    @classmethod
    def from_hex(cls, text: str) -> CecFrame:
        """cec-client's notation: ``"10:04"``, ``"1F:82:10:00"`` (either case)."""
        return cls.parse(_hex_bytes(text.strip()))

    def hex(self) -> str:
        """cec-client's notation, lowercase as libCEC logs it: ``"1f:82:10:00"``."""
        return ":".join(f"{block:02x}" for block in bytes(self))

    @property
    def physical_address(self) -> int | None:
        """The [Physical Address] a routing message carries (the new one for Routing Change)."""
        offset = _ADDRESS_OFFSET.get(self.opcode) if self.opcode is not None else None
        if offset is None or len(self.operands) < offset + 2:
            return None
        return int.from_bytes(self.operands[offset : offset + 2], "big")


_ADDRESS_OFFSET: dict[int, int] = {
    Opcode.ACTIVE_SOURCE: 0,
    Opcode.SET_STREAM_PATH: 0,
    Opcode.ROUTING_INFORMATION: 0,
    Opcode.REPORT_PHYSICAL_ADDRESS: 0,
    Opcode.ROUTING_CHANGE: 2,  # [Original Address] [New Address]
}


class TrafficDirection(StrEnum):
    """The arrow libCEC logs: ``<<`` sent by libCEC, ``>>`` received from the bus."""

    SENT = "<<"
    RECEIVED = ">>"


_TRAFFIC = re.compile(r"TRAFFIC:\s*\[\s*(\d{1,19})\]\s*(<<|>>)\s*([0-9A-Fa-f:]+)")


@dataclass(frozen=True, slots=True)
class TrafficLine:
    """A ``TRAFFIC:`` log line of cec-client (one line, without its newline)."""

    direction: TrafficDirection
    frame: CecFrame
    time_ms: int = 0

    @classmethod
    def parse(cls, data: bytes) -> TrafficLine:
        text = _decode_line(data)
        match = _TRAFFIC.fullmatch(text.strip())
        if match is None:
            raise FrameError(f"not a cec-client TRAFFIC line: {text[:80]!r}")
        time_ms, arrow, frame = match.groups()
        return cls(TrafficDirection(arrow), CecFrame.from_hex(frame), int(time_ms))

    def __bytes__(self) -> bytes:
        return f"TRAFFIC: [{self.time_ms:16d}]\t{self.direction} {self.frame.hex()}".encode()


@dataclass(frozen=True, slots=True)
class TxCommand:
    """The console command that makes cec-client send a frame: ``tx 10:04``."""

    frame: CecFrame

    @classmethod
    def parse(cls, data: bytes) -> TxCommand:
        words = _decode_line(data).split()
        if len(words) != 2 or words[0] != "tx":
            raise FrameError(f"not a tx command: {bytes(data[:80])!r}")
        return cls(CecFrame.from_hex(words[1]))

    def __bytes__(self) -> bytes:
        return f"tx {self.frame.hex()}".encode()


@dataclass(frozen=True, slots=True)
class Prompt:
    """``waiting for input``: cec-client has opened the adapter / finished a command."""


@dataclass(frozen=True, slots=True)
class ControlledAddresses:
    """The answer to ``self``: the logical addresses libCEC claimed (first is primary)."""

    addresses: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PollResult:
    """The answer to ``poll N``: whether a device acknowledged the polling message."""

    acknowledged: bool


@dataclass(frozen=True, slots=True)
class ConsoleMessage:
    """Any other line cec-client prints (banner, errors, reconnect notices)."""

    text: str


CecClientEvent = TrafficLine | Prompt | ControlledAddresses | PollResult | ConsoleMessage

_PROMPT = "waiting for input"
_CONTROLLED = "Addresses controlled by libCEC:"
_POLL_RESULTS = {"POLL message sent": True, "POLL message not sent": False}


def _decode_line(data: bytes) -> str:
    try:
        return bytes(data).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"non-ASCII bytes in a cec-client line: {bytes(data[:80])!r}") from None


def _parse_controlled(text: str) -> ControlledAddresses:
    listed = text[len(_CONTROLLED) :].replace("*", "").split(",")
    try:
        addresses = tuple(int(item) for item in listed if item.strip())
    except ValueError:
        raise FrameError(f"bad address list: {text!r}") from None
    if any(not 0 <= address <= 15 for address in addresses):
        raise FrameError(f"logical address out of range: {text!r}")
    return ControlledAddresses(addresses)


def parse_output_line(data: bytes) -> CecClientEvent:
    """One line of cec-client's stdout (without newline) as an event; FrameError if malformed."""
    stripped = bytes(data).strip()
    if stripped.startswith(b"TRAFFIC:"):
        return TrafficLine.parse(stripped)
    text = stripped.decode("utf-8", errors="replace")
    if text == _PROMPT:
        return Prompt()
    if text.startswith(_CONTROLLED):
        return _parse_controlled(text)
    if text in _POLL_RESULTS:
        return PollResult(_POLL_RESULTS[text])
    return ConsoleMessage(text)


class CecClientOutputDecoder:
    """Cuts cec-client's stdout into lines and parses them.

    `next_event` raises `FrameError` for a malformed line after consuming it, so the caller
    can log it and go on with the next line; an over-long line is dropped the same way.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflowed = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> CecClientEvent | None:
        """The next complete line as an event, or None until more bytes are fed."""
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                self._check_overflow()
                return None
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if self._overflowed:
                self._overflowed = False
                continue  # the tail of a line already reported as too long
            if line.strip():
                return parse_output_line(line)

    def _check_overflow(self) -> None:
        if len(self._buffer) <= MAX_LINE:
            return
        self._buffer.clear()
        self._overflowed = True
        raise FrameError(f"cec-client line longer than {MAX_LINE} bytes")


# --------------------------------------------------------------------------------------
# The device side: cec-client with an adapter on a bus holding a TV and an audio system.


@dataclass
class SimulatedCecBus:
    """A TV (logical address 0) and an audio system (5) behind a simulated cec-client.

    Each `session` is one cec-client run: it takes console lines on stdin and answers with
    the lines cec-client prints, the bus devices replying as CEC 1.4 prescribes (Feature
    Abort for directed messages they do not handle, nothing from an absent device). The TV
    reports each power transition once (``transition_reports``) before it completes.
    """

    physical_address: int = 0x1000
    logical_address: int = LogicalAddress.PLAYBACK_1
    tv_present: bool = True
    audio_system_present: bool = True
    power: PowerStatus = PowerStatus.STANDBY
    active_path: int | None = None
    volume: int = 20
    muted: bool = False
    tv_osd_name: str = "Room TV"
    tv_vendor_id: int = 0x0000F0
    audio_physical_address: int = 0x2000
    transition_reports: int = 1
    received: list[CecFrame] = field(default_factory=list)
    _pending_reports: int = field(default=0, init=False, repr=False)

    def session(self) -> CecClientSession:
        return CecClientSession(self)

    def deliver(self, frame: CecFrame) -> list[CecFrame]:
        """A frame from the controller reaches the bus; returns the frames devices send back."""
        self.received.append(frame)
        replies: list[CecFrame] = []
        if self.tv_present and frame.destination in (LogicalAddress.TV, LogicalAddress.BROADCAST):
            replies += self._tv_handles(frame)
        if self.audio_system_present and frame.destination in (
            LogicalAddress.AUDIO_SYSTEM,
            LogicalAddress.BROADCAST,
        ):
            replies += self._audio_handles(frame)
        return replies

    def acknowledges(self, address: int) -> bool:
        """Whether a device answers a polling message to ``address``."""
        return (address == LogicalAddress.TV and self.tv_present) or (
            address == LogicalAddress.AUDIO_SYSTEM and self.audio_system_present
        )

    # -- the TV

    def _tv_handles(self, frame: CecFrame) -> list[CecFrame]:
        tv, asker = LogicalAddress.TV, frame.initiator
        op = frame.opcode
        if op in (Opcode.IMAGE_VIEW_ON, Opcode.TEXT_VIEW_ON):
            self._set_power(on=True)
        elif op == Opcode.STANDBY:
            self._set_power(on=False)
        elif op in (Opcode.ACTIVE_SOURCE, Opcode.SET_STREAM_PATH, Opcode.ROUTING_CHANGE):
            self.active_path = frame.physical_address
        elif op == Opcode.GIVE_DEVICE_POWER_STATUS:
            return [CecFrame(tv, asker, Opcode.REPORT_POWER_STATUS, bytes([self._report_power()]))]
        elif op == Opcode.GIVE_PHYSICAL_ADDRESS:
            return [
                CecFrame(tv, LogicalAddress.BROADCAST, Opcode.REPORT_PHYSICAL_ADDRESS, b"\0\0\0")
            ]
        elif op == Opcode.GIVE_OSD_NAME:
            return [CecFrame(tv, asker, Opcode.SET_OSD_NAME, self.tv_osd_name.encode()[:14])]
        elif op == Opcode.GIVE_DEVICE_VENDOR_ID:
            vendor = self.tv_vendor_id.to_bytes(3, "big")
            return [CecFrame(tv, LogicalAddress.BROADCAST, Opcode.DEVICE_VENDOR_ID, vendor)]
        elif op == Opcode.GET_CEC_VERSION:
            return [CecFrame(tv, asker, Opcode.CEC_VERSION, b"\x05")]  # 0x05: version 1.4
        elif op == Opcode.USER_CONTROL_PRESSED:
            return self._tv_key(frame)
        elif op not in (None, Opcode.USER_CONTROL_RELEASED, Opcode.FEATURE_ABORT):
            return _feature_abort(tv, frame)
        return []

    def _tv_key(self, frame: CecFrame) -> list[CecFrame]:
        key = frame.operands[:1]
        if key in (bytes([UserControl.POWER]), bytes([UserControl.POWER_TOGGLE_FUNCTION])):
            self._set_power(on=not self.power.is_on)
        elif key == bytes([UserControl.POWER_ON_FUNCTION]):
            self._set_power(on=True)
        elif key == bytes([UserControl.POWER_OFF_FUNCTION]):
            self._set_power(on=False)
        else:
            return _feature_abort(LogicalAddress.TV, frame, AbortReason.INVALID_OPERAND)
        return []

    def _set_power(self, *, on: bool) -> None:
        if self.power.is_on == on and self.power in (PowerStatus.ON, PowerStatus.STANDBY):
            return
        if self.transition_reports > 0:
            self.power = (
                PowerStatus.TRANSITION_STANDBY_TO_ON if on else PowerStatus.TRANSITION_ON_TO_STANDBY
            )
            self._pending_reports = self.transition_reports
        else:
            self.power = PowerStatus.ON if on else PowerStatus.STANDBY

    def _report_power(self) -> PowerStatus:
        reported = self.power
        if self._pending_reports > 0:
            self._pending_reports -= 1
            if self._pending_reports == 0:
                self.power = PowerStatus.ON if self.power.is_on else PowerStatus.STANDBY
        return reported

    # -- the audio system

    def _audio_handles(self, frame: CecFrame) -> list[CecFrame]:
        audio, op = LogicalAddress.AUDIO_SYSTEM, frame.opcode
        if frame.destination == LogicalAddress.BROADCAST:
            return []  # it only follows directed messages here
        if op == Opcode.GIVE_AUDIO_STATUS:
            status = bytes([self.muted << 7 | self.volume])
            return [CecFrame(audio, frame.initiator, Opcode.REPORT_AUDIO_STATUS, status)]
        if op == Opcode.GIVE_DEVICE_POWER_STATUS:
            return [CecFrame(audio, frame.initiator, Opcode.REPORT_POWER_STATUS, b"\0")]
        if op == Opcode.GIVE_PHYSICAL_ADDRESS:
            report = self.audio_physical_address.to_bytes(2, "big") + bytes([audio])
            return [
                CecFrame(audio, LogicalAddress.BROADCAST, Opcode.REPORT_PHYSICAL_ADDRESS, report)
            ]
        if op == Opcode.USER_CONTROL_PRESSED:
            return self._audio_key(frame)
        if op in (None, Opcode.USER_CONTROL_RELEASED, Opcode.FEATURE_ABORT, Opcode.STANDBY):
            return []
        return _feature_abort(audio, frame)

    def _audio_key(self, frame: CecFrame) -> list[CecFrame]:
        key = frame.operands[:1]
        if key == bytes([UserControl.VOLUME_UP]):
            self.volume, self.muted = min(MAX_VOLUME, self.volume + 1), False
        elif key == bytes([UserControl.VOLUME_DOWN]):
            self.volume, self.muted = max(0, self.volume - 1), False
        elif key == bytes([UserControl.MUTE]):
            self.muted = not self.muted
        elif key == bytes([UserControl.MUTE_FUNCTION]):
            self.muted = True
        elif key == bytes([UserControl.RESTORE_VOLUME_FUNCTION]):
            self.muted = False
        else:
            return _feature_abort(LogicalAddress.AUDIO_SYSTEM, frame, AbortReason.INVALID_OPERAND)
        return []


def _feature_abort(
    sender: int, frame: CecFrame, reason: AbortReason = AbortReason.UNRECOGNIZED_OPCODE
) -> list[CecFrame]:
    # CEC 12.3: never answer a broadcast with Feature Abort; <Abort> is always refused.
    if frame.destination == LogicalAddress.BROADCAST or frame.opcode is None:
        return []
    if frame.opcode == Opcode.ABORT:
        reason = AbortReason.REFUSED
    operands = bytes([frame.opcode, reason])
    return [CecFrame(sender, frame.initiator, Opcode.FEATURE_ABORT, operands)]


class CecClientSession:
    """One cec-client run on `SimulatedCecBus`: console lines in, console lines out."""

    def __init__(self, bus: SimulatedCecBus) -> None:
        self.bus = bus
        self.quit_requested = False
        self._started = time.monotonic()
        self._buffer = bytearray()

    def connected(self) -> bytes:
        """What cec-client prints once it has opened the adapter and claimed its address."""
        me = self.bus.logical_address
        report = self.bus.physical_address.to_bytes(2, "big") + bytes([me])
        lines = [
            f"CEC Parser created - libCEC version {LIBCEC_VERSION}".encode(),
            b"opening a connection to the CEC adapter...",
            self._traffic(TrafficDirection.SENT, CecFrame(me, me)),
            self._traffic(
                TrafficDirection.SENT,
                CecFrame(me, LogicalAddress.BROADCAST, Opcode.REPORT_PHYSICAL_ADDRESS, report),
            ),
            _PROMPT.encode(),
        ]
        return b"".join(line + b"\n" for line in lines)

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while not self.quit_requested and (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[: end + 1]
            out += self._command(line)
        return bytes(out)

    def _command(self, line: bytes) -> bytes:
        if not line:
            return b""
        words = line.split()
        if words[0] in (b"q", b"quit"):
            self.quit_requested = True
            return b""
        handler = {b"tx": self._tx, b"self": self._self, b"poll": self._poll}.get(words[0])
        printed = handler(words[1:]) if handler else []
        return b"".join(item + b"\n" for item in [*printed, _PROMPT.encode()])

    def _tx(self, args: list[bytes]) -> list[bytes]:
        try:
            frame = TxCommand.parse(b"tx " + b" ".join(args)).frame
        except FrameError:
            return []  # libCEC's CommandFromString sends nothing useful; it prints nothing
        printed = [self._traffic(TrafficDirection.SENT, frame)]
        if frame.destination == self.bus.logical_address:
            return printed  # libCEC refuses to send to itself
        for reply in self.bus.deliver(frame):
            # The adapter only receives frames for its own address and broadcasts.
            if reply.destination in (self.bus.logical_address, LogicalAddress.BROADCAST):
                printed.append(self._traffic(TrafficDirection.RECEIVED, reply))
        return printed

    def _self(self, args: list[bytes]) -> list[bytes]:
        return [f"{_CONTROLLED} {self.bus.logical_address}".encode()]

    def _poll(self, args: list[bytes]) -> list[bytes]:
        try:
            address = int(args[0], 16)
        except (IndexError, ValueError):
            return [b"invalid destination"]
        if not 0 <= address <= 15:
            return [b"invalid destination"]
        poll = CecFrame(self.bus.logical_address, address)
        sent = self.bus.acknowledges(address)
        result = b"POLL message sent" if sent else b"POLL message not sent"
        return [self._traffic(TrafficDirection.SENT, poll), result]

    def _traffic(self, direction: TrafficDirection, frame: CecFrame) -> bytes:
        elapsed_ms = int((time.monotonic() - self._started) * 1000)
        return bytes(TrafficLine(direction, frame, elapsed_ms))


# --------------------------------------------------------------------------------------
# The controller side: a cec-client child process.


Matcher = Callable[[CecClientEvent], bool]


class CecDisplay:
    """A display on HDMI-CEC, driven through a ``cec-client`` child process.

    Create it with `open`; ``command`` is the cec-client binary (and any leading arguments),
    ``adapter`` the adapter's port (None: cec-client autodetects). ``inputs`` maps the room's
    input names to HDMI physical addresses; ``volume_target`` is the logical address that
    takes volume keys (the audio system, the TV, or None for no volume control).
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        *,
        inputs: Mapping[str, int],
        volume_target: int | None,
        timeout: float,
        retries: int,
    ) -> None:
        self._process = process
        self._inputs = dict(inputs)
        self._volume_target = volume_target
        self._timeout = timeout
        self._attempts = 1 + retries
        self._decoder = CecClientOutputDecoder()
        self._waiters: list[tuple[Matcher, asyncio.Future[CecClientEvent]]] = []
        self._lock = asyncio.Lock()
        self._recent: collections.deque[str] = collections.deque(maxlen=5)
        self._closed: str | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_output(), name="cec-client output")
        self.logical_address: int | None = None
        self.physical_address: int | None = None
        self.active_path: int | None = None

    @classmethod
    async def open(
        cls,
        adapter: str | None = None,
        *,
        command: Sequence[str] = ("cec-client",),
        osd_name: str = "RoomSystem",
        inputs: Mapping[str, int] = DEFAULT_INPUTS,
        volume_target: int | None = LogicalAddress.AUDIO_SYSTEM,
        timeout: float = 2.0,
        startup_timeout: float = 15.0,
        retries: int = 1,
    ) -> CecDisplay:
        """Start cec-client as a playback device and wait until it has claimed an address."""
        argv = [*command, "-t", "p", "-d", "8", "-o", osd_name, *([adapter] if adapter else [])]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise LinkClosed(
                f"cannot run {argv[0]}: {exc.strerror or exc} (cec-client is in Debian's cec-utils)"
            ) from None
        display = cls(
            process, inputs=inputs, volume_target=volume_target, timeout=timeout, retries=retries
        )
        try:
            await display._start(startup_timeout)
        except BaseException:
            await display.close()
            raise
        return display

    async def _start(self, startup_timeout: float) -> None:
        try:
            async with asyncio.timeout(startup_timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            raise DeviceTimeout(
                f"cec-client not ready within {startup_timeout:g} s{self._last_output()}"
            ) from None
        event = await self._console("self", lambda e: isinstance(e, ControlledAddresses))
        assert isinstance(event, ControlledAddresses)
        if not event.addresses:
            raise DeviceRejected("libCEC claimed no logical address")
        self.logical_address = event.addresses[0]

    # -- DisplayControl

    async def status(self) -> DisplayStatus:
        reply = await self.request(
            CecFrame(self._me, LogicalAddress.TV, Opcode.GIVE_DEVICE_POWER_STATUS),
            Opcode.REPORT_POWER_STATUS,
        )
        power = _power_status(reply)
        volume, muted = await self._audio_status_if_present()
        return DisplayStatus(
            power=power.is_on, input_source=self._input_name(), volume=volume, muted=muted
        )

    async def set_power(self, on: bool) -> None:
        opcode = Opcode.IMAGE_VIEW_ON if on else Opcode.STANDBY
        await self.send(CecFrame(self._me, LogicalAddress.TV, opcode))

    async def set_input_source(self, name: str) -> None:
        if name not in self._inputs:
            raise ValueError(f"no input {name!r}; this display has {sorted(self._inputs)}")
        path = self._inputs[name].to_bytes(2, "big")
        for opcode in (Opcode.ACTIVE_SOURCE, Opcode.SET_STREAM_PATH):
            await self.send(CecFrame(self._me, LogicalAddress.BROADCAST, opcode, path))

    async def set_volume(self, level: int) -> None:
        """Step the volume with key presses until the audio system reports ``level``."""
        if not 0 <= level <= MAX_VOLUME:
            raise ValueError(f"volume {level} is outside 0..{MAX_VOLUME}")
        target = self._require_volume_target()
        volume, _ = await self.audio_status()
        stalled = 0
        for _ in range(2 * MAX_VOLUME):  # enough for any distance, with room for stalls
            if volume == level:
                return
            key = UserControl.VOLUME_UP if volume < level else UserControl.VOLUME_DOWN
            await self.press_key(target, key)
            previous, (volume, _) = volume, await self.audio_status()
            if (volume - level) * (previous - level) < 0:
                return  # the device steps coarser than 1: stop at the nearest step past it
            stalled = stalled + 1 if volume == previous else 0
            if stalled >= 3:
                raise DeviceRejected(f"volume stays at {volume} while stepping towards {level}")
        raise DeviceRejected(f"volume did not reach {level}")

    async def set_mute(self, on: bool) -> None:
        """CEC's Mute key toggles: read the state first and press it only when it differs."""
        target = self._require_volume_target()
        _, muted = await self.audio_status()
        if muted != on:
            await self.press_key(target, UserControl.MUTE)

    async def close(self) -> None:
        """Quit cec-client (``q``), or end it if it does not quit; idempotent."""
        if self._process.returncode is None:
            # Before its prompt cec-client is still opening the adapter and reads no input.
            ready = self._ready.done() and not self._ready.cancelled() and not self._closed
            if ready:
                with contextlib.suppress(OSError, LinkClosed):
                    await self._write(b"q\n")
            await self._wait_exit(asked_to_quit=ready)
        try:
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._reader)
        except TimeoutError:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._process.stdin is not None:
            self._process.stdin.close()

    # -- CEC messages

    async def send(self, frame: CecFrame, *, resend: bool = True) -> None:
        """Send a frame; done when cec-client logs it as sent.

        ``resend=False`` for frames that must not go twice (a key press that toggles).
        """

        def logged(event: CecClientEvent) -> bool:
            return (
                isinstance(event, TrafficLine)
                and event.direction is TrafficDirection.SENT
                and _same_message(event.frame, frame)
            )

        attempts = self._attempts if resend else 1
        await self._exchange(bytes(TxCommand(frame)) + b"\n", logged, frame.hex(), attempts)

    async def request(self, frame: CecFrame, reply_opcode: int) -> CecFrame:
        """Send a frame and return the reply with ``reply_opcode`` from its destination.

        A <Feature Abort> for the request raises `DeviceRejected` with the abort reason.
        """

        def answers(event: CecClientEvent) -> bool:
            if not isinstance(event, TrafficLine) or event.direction is TrafficDirection.SENT:
                return False
            reply = event.frame
            if reply.initiator != frame.destination:
                return False
            aborted = reply.opcode == Opcode.FEATURE_ABORT and reply.operands[:1] == bytes(
                [frame.opcode or 0]
            )
            return reply.opcode == reply_opcode or aborted

        event = await self._exchange(bytes(TxCommand(frame)) + b"\n", answers, frame.hex())
        assert isinstance(event, TrafficLine)
        if event.frame.opcode == Opcode.FEATURE_ABORT:
            code = event.frame.operands[1] if len(event.frame.operands) > 1 else None
            raise DeviceRejected(f"device {frame.destination:x} aborted {frame.hex()}", code)
        return event.frame

    async def press_key(self, destination: int, key: int) -> None:
        """A remote-control key press and release (CEC 13.13: every press is released)."""
        pressed = CecFrame(self._me, destination, Opcode.USER_CONTROL_PRESSED, bytes([key]))
        await self.send(pressed, resend=False)
        await self.send(CecFrame(self._me, destination, Opcode.USER_CONTROL_RELEASED))

    async def poll(self, address: int) -> bool:
        """Whether a device acknowledges a polling message at ``address``."""
        event = await self._console(f"poll {address:x}", lambda e: isinstance(e, PollResult))
        assert isinstance(event, PollResult)
        return event.acknowledged

    async def audio_status(self) -> tuple[int, bool]:
        """(volume 0..100, muted) as the volume target reports it."""
        target = self._require_volume_target()
        reply = await self.request(
            CecFrame(self._me, target, Opcode.GIVE_AUDIO_STATUS), Opcode.REPORT_AUDIO_STATUS
        )
        if not reply.operands:
            raise FrameError(f"audio status without operand: {reply.hex()}")
        volume = reply.operands[0] & 0x7F
        if volume == AUDIO_VOLUME_UNKNOWN or volume > MAX_VOLUME:
            raise DeviceRejected(f"device {target:x} does not report its volume ({volume:#x})")
        return volume, bool(reply.operands[0] & 0x80)

    # -- internals

    @property
    def _me(self) -> int:
        if self.logical_address is None:
            raise LinkClosed("cec-client has not claimed a logical address")
        return self.logical_address

    def _require_volume_target(self) -> int:
        if self._volume_target is None:
            raise DeviceRejected("this display has no CEC volume control configured")
        return self._volume_target

    async def _audio_status_if_present(self) -> tuple[int | None, bool | None]:
        if self._volume_target is None or not await self.poll(self._volume_target):
            return None, None
        try:
            return await self.audio_status()
        except (DeviceRejected, DeviceTimeout) as exc:
            logger.debug("no audio status from %x: %s", self._volume_target, exc)
            return None, None

    def _input_name(self) -> str | None:
        if self.active_path is None:
            return None
        for name, address in self._inputs.items():
            if address == self.active_path:
                return name
        port = self.active_path & 0xF000  # a device behind a switch on that port
        return next((n for n, a in self._inputs.items() if a == port), None)

    async def _console(self, line: str, matcher: Matcher) -> CecClientEvent:
        return await self._exchange(line.encode() + b"\n", matcher, line)

    async def _exchange(
        self, line: bytes, matcher: Matcher, what: str, attempts: int | None = None
    ) -> CecClientEvent:
        async with self._lock:
            for attempt in range(1, (attempts or self._attempts) + 1):
                waiter = self._expect(matcher)
                try:
                    await self._write(line)
                    async with asyncio.timeout(self._timeout):
                        return await waiter
                except TimeoutError:
                    logger.debug("cec: no answer to %s (attempt %d)", what, attempt)
                finally:
                    self._forget(waiter)
        raise DeviceTimeout(f"cec: no answer to {what} within {self._timeout:g} s")

    def _expect(self, matcher: Matcher) -> asyncio.Future[CecClientEvent]:
        if self._closed is not None:
            raise LinkClosed(self._closed)
        waiter: asyncio.Future[CecClientEvent] = asyncio.get_running_loop().create_future()
        self._waiters.append((matcher, waiter))
        return waiter

    def _forget(self, waiter: asyncio.Future[CecClientEvent]) -> None:
        self._waiters = [(m, w) for m, w in self._waiters if w is not waiter]

    async def _write(self, data: bytes) -> None:
        stdin = self._process.stdin
        if self._closed is not None:
            raise LinkClosed(self._closed)
        if stdin is None or stdin.is_closing():
            raise LinkClosed("cec-client's stdin is closed")
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise LinkClosed(f"cec-client is gone: {exc}") from None

    async def _read_output(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        while data := await stdout.read(4096):
            self._decoder.feed(data)
            self._drain_events()
        code = await self._process.wait()
        self._fail_all(f"cec-client exited with code {code}{self._last_output()}")

    def _drain_events(self) -> None:
        while True:
            try:
                event = self._decoder.next_event()
            except FrameError as exc:
                logger.warning("cec-client printed a line that does not parse: %s", exc)
                continue
            if event is None:
                return
            self._dispatch(event)

    def _dispatch(self, event: CecClientEvent) -> None:
        if isinstance(event, Prompt) and not self._ready.done():
            self._ready.set_result(None)
        elif isinstance(event, ConsoleMessage):
            self._recent.append(event.text)
            logger.debug("cec-client: %s", event.text)
        elif isinstance(event, TrafficLine):
            self._observe(event)
        for matcher, waiter in self._waiters:
            if not waiter.done() and matcher(event):
                waiter.set_result(event)
                break

    def _observe(self, line: TrafficLine) -> None:
        frame = line.frame
        if frame.opcode in (
            Opcode.ACTIVE_SOURCE,
            Opcode.SET_STREAM_PATH,
            Opcode.ROUTING_CHANGE,
            Opcode.ROUTING_INFORMATION,
        ):
            self.active_path = frame.physical_address
        elif frame.opcode == Opcode.REPORT_PHYSICAL_ADDRESS and (
            line.direction is TrafficDirection.SENT
        ):
            self.physical_address = frame.physical_address

    def _fail_all(self, reason: str) -> None:
        self._closed = reason
        if not self._ready.done():
            self._ready.set_exception(LinkClosed(reason))
            self._ready.exception()  # retrieved: `_start` may already have given up on it
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(LinkClosed(reason))

    async def _wait_exit(self, *, asked_to_quit: bool) -> None:
        stops = (None, self._process.terminate, self._process.kill)
        for stop in stops if asked_to_quit else stops[1:]:
            if stop is not None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            try:
                async with asyncio.timeout(2.0):
                    await self._process.wait()
                return
            except TimeoutError:
                continue

    def _last_output(self) -> str:
        return f"; last output: {' | '.join(self._recent)}" if self._recent else ""


def _same_message(logged: CecFrame, sent: CecFrame) -> bool:
    # libCEC may log a substitute initiator (CECProcessor::Transmit), so compare the rest.
    return (logged.destination, logged.opcode, logged.operands) == (
        sent.destination,
        sent.opcode,
        sent.operands,
    )


def _power_status(frame: CecFrame) -> PowerStatus:
    if not frame.operands:
        raise FrameError(f"{frame.hex()}: power status missing")
    try:
        return PowerStatus(frame.operands[0])
    except ValueError:
        raise FrameError(f"{frame.hex()}: {frame.operands[0]:#x} is no power status") from None
