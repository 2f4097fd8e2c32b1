"""A simulated Sony VISCA PTZ camera, on a serial line (pty) and over IP (UDP).

The camera side of `roomsystem.drivers.visca`, built on the same codec and following the
same Sony manuals (EVI-D70 / BRC-300 "VISCA Camera-Issued Messages"; SRG-300H / BRC-X400
"VISCA over IP"):

- a command is answered with ACK ``y0 41 FF`` then completion ``y0 51 FF``; it runs in one
  of two sockets. The camera moves instantly, so both replies come at once and the sockets
  are free again before the next command (a cancel therefore gets "no socket").
- unknown commands and illegal parameters get a syntax error ``y0 60 02 FF``; commands
  other than power while in standby, and manual focus in auto-focus mode, get
  "not executable" ``y0 61 41 FF``. Positions beyond the mechanical range are clamped, as
  the camera stops at its end stops.
- on a serial line, packets for other addresses pass by unanswered (they are for the next
  camera of the chain); ``88 30 0p FF`` sets the address and passes on ``88 30 0p+1 FF``;
  ``88 01 00 01 FF`` comes back unchanged. The camera announces itself with ``y0 38 FF``.
- over IP every reply carries the sequence number of the message it answers; a message
  with the sequence number the camera last executed (a retransmission) is answered with
  the control ERROR ``0F 01`` instead of being executed twice; an unknown payload type gets
  ``0F 02``; RESET is acknowledged with the control reply ``01``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from roomsystem.drivers.errors import FrameError
from roomsystem.drivers.simulator import Session, SimulatedDevice, answer_each, serve_udp
from roomsystem.drivers.visca import (
    BROADCAST,
    CONTROL_ACK,
    CONTROL_RESET,
    Ack,
    AddressSet,
    Cancel,
    Completion,
    ControlError,
    ErrorReply,
    FocusDirect,
    FocusMode,
    FocusModeInquiry,
    FocusPositionInquiry,
    IfClear,
    NetworkChange,
    PanDirection,
    PanTiltAbsolute,
    PanTiltDrive,
    PanTiltHome,
    PanTiltPositionInquiry,
    PanTiltRelative,
    PanTiltReset,
    PayloadType,
    Power,
    PowerInquiry,
    Preset,
    PresetAction,
    TiltDirection,
    ViscaErrorCode,
    ViscaInquiry,
    ViscaIpMessage,
    ViscaMessage,
    ViscaPacket,
    ViscaRequest,
    ViscaStreamDecoder,
    ZoomDirect,
    ZoomDirection,
    ZoomDrive,
    ZoomPositionInquiry,
    decode_request,
)

logger = logging.getLogger(__name__)

PAN_SPEED_MAX = 0x18
TILT_SPEED_MAX = 0x17
COMMAND_SOCKET = 1  # both sockets are always free again when the next command comes
FOCUS_MAX = 0xF000
REQUEST_LOG = 100


@dataclass(frozen=True, slots=True)
class CameraPosition:
    """What a preset stores."""

    pan: int = 0
    tilt: int = 0
    zoom: int = 0
    focus: int = 0x1000


class ViscaSimulator:
    """A VISCA PTZ camera; its state is public so tests can assert on it.

    ``session()`` serves it on a serial line (`PtyServer`, `serve_tcp`); ``over_ip()`` is the
    same camera as a VISCA-over-IP device (`serve_udp`, or `serve_visca_ip` that sends every
    reply in its own datagram as the real camera does).
    """

    def __init__(
        self,
        address: int = 1,
        pan_range: tuple[int, int] = (-2448, 2448),
        tilt_range: tuple[int, int] = (-432, 1296),
        zoom_max: int = 0x4000,
        presets: int = 16,
    ) -> None:
        self.address = address
        self.pan_range = pan_range
        self.tilt_range = tilt_range
        self.zoom_max = zoom_max
        self.preset_count = presets
        self.power = True
        self.pan = 0
        self.tilt = 0
        self.zoom = 0
        self.focus = CameraPosition().focus
        self.focus_auto = True
        self.pan_direction = PanDirection.STOP
        self.tilt_direction = TiltDirection.STOP
        self.zoom_direction = ZoomDirection.STOP
        self.presets: dict[int, CameraPosition] = {}
        # The latest requests it understood, oldest first (bounded: a demo runs for days).
        self.requests: deque[ViscaRequest] = deque(maxlen=REQUEST_LOG)

    def session(self) -> ViscaSession:
        return ViscaSession(self)

    def over_ip(self) -> SimulatedDevice:
        return _ViscaIpDevice(self)

    @property
    def position(self) -> CameraPosition:
        return CameraPosition(self.pan, self.tilt, self.zoom, self.focus)

    def handle(self, packet: ViscaPacket, address: int) -> list[ViscaMessage]:
        """The replies, from camera ``address``, to a packet addressed to this camera."""
        request = decode_request(packet)
        if request is None:
            return [ErrorReply(ViscaErrorCode.SYNTAX, 0, address)]
        self.requests.append(request)
        if isinstance(request, ViscaInquiry):
            return [self._answer(request, address)]
        if isinstance(request, Cancel):
            return [ErrorReply(ViscaErrorCode.NO_SOCKET, request.socket, address)]
        if isinstance(request, IfClear):
            return [Completion(0, b"", address)]
        error = self._refusal(request) or self._apply(request)
        if error is not None:
            socket = 0 if error == ViscaErrorCode.SYNTAX else COMMAND_SOCKET
            return [ErrorReply(error, socket, address)]
        return [Ack(COMMAND_SOCKET, address), Completion(COMMAND_SOCKET, b"", address)]

    def _refusal(self, request: ViscaRequest) -> ViscaErrorCode | None:
        if not self.power and not isinstance(request, Power):
            return ViscaErrorCode.NOT_EXECUTABLE
        if isinstance(request, FocusDirect) and self.focus_auto:
            return ViscaErrorCode.NOT_EXECUTABLE
        return None

    def _answer(self, inquiry: ViscaInquiry, address: int) -> ViscaMessage:
        if isinstance(inquiry, PowerInquiry):
            data = PowerInquiry.answer(self.power)
        elif isinstance(inquiry, ZoomPositionInquiry):
            data = ZoomPositionInquiry.answer(self.zoom)
        elif isinstance(inquiry, FocusPositionInquiry):
            data = FocusPositionInquiry.answer(self.focus)
        elif isinstance(inquiry, FocusModeInquiry):
            data = FocusModeInquiry.answer(self.focus_auto)
        elif isinstance(inquiry, PanTiltPositionInquiry):
            data = PanTiltPositionInquiry.answer(self.pan, self.tilt)
        else:
            return ErrorReply(ViscaErrorCode.SYNTAX, 0, address)
        return Completion(0, data, address)

    def _apply(self, request: ViscaRequest) -> ViscaErrorCode | None:
        """Carry out a command; the error to answer with, if it is refused."""
        if isinstance(request, Power):
            self.power = request.on
            self.pan_direction, self.tilt_direction = PanDirection.STOP, TiltDirection.STOP
            self.zoom_direction = ZoomDirection.STOP
        elif isinstance(request, PanTiltDrive):
            return self._drive(request)
        elif isinstance(request, PanTiltAbsolute | PanTiltRelative):
            return self._move(request)
        elif isinstance(request, PanTiltHome | PanTiltReset):
            self._go_to(CameraPosition(0, 0, self.zoom, self.focus))
        elif isinstance(request, ZoomDrive):
            self.zoom_direction = request.direction
        elif isinstance(request, ZoomDirect):
            self.zoom = min(request.position, self.zoom_max)
        elif isinstance(request, FocusMode):
            self.focus_auto = request.auto
        elif isinstance(request, FocusDirect):
            self.focus = min(request.position, FOCUS_MAX)
        elif isinstance(request, Preset):
            return self._preset(request)
        else:
            return ViscaErrorCode.SYNTAX
        return None

    def _drive(self, drive: PanTiltDrive) -> ViscaErrorCode | None:
        pan_ok = drive.pan is PanDirection.STOP or 1 <= drive.pan_speed <= PAN_SPEED_MAX
        tilt_ok = drive.tilt is TiltDirection.STOP or 1 <= drive.tilt_speed <= TILT_SPEED_MAX
        if not (pan_ok and tilt_ok):
            return ViscaErrorCode.SYNTAX
        self.pan_direction = drive.pan
        self.tilt_direction = drive.tilt
        return None

    def _move(self, move: PanTiltAbsolute | PanTiltRelative) -> ViscaErrorCode | None:
        if not (1 <= move.pan_speed <= PAN_SPEED_MAX and 1 <= move.tilt_speed <= TILT_SPEED_MAX):
            return ViscaErrorCode.SYNTAX
        pan, tilt = move.pan, move.tilt
        if isinstance(move, PanTiltRelative):
            pan, tilt = self.pan + pan, self.tilt + tilt
        self._go_to(CameraPosition(pan, tilt, self.zoom, self.focus))
        return None

    def _preset(self, preset: Preset) -> ViscaErrorCode | None:
        if preset.number >= self.preset_count:
            return ViscaErrorCode.SYNTAX
        if preset.action is PresetAction.SET:
            self.presets[preset.number] = self.position
        elif preset.action is PresetAction.RESET:
            self.presets.pop(preset.number, None)
        else:
            # An unset preset holds the factory position: home, wide.
            self._go_to(self.presets.get(preset.number, CameraPosition()))
        return None

    def _go_to(self, target: CameraPosition) -> None:
        self.pan = _clamp(target.pan, self.pan_range)
        self.tilt = _clamp(target.tilt, self.tilt_range)
        self.zoom = _clamp(target.zoom, (0, self.zoom_max))
        self.focus = target.focus
        self.pan_direction = PanDirection.STOP
        self.tilt_direction = TiltDirection.STOP


def _clamp(value: int, limits: tuple[int, int]) -> int:
    low, high = limits
    return max(low, min(high, value))


class ViscaSession:
    """The camera's serial port: VISCA packets in, replies out."""

    def __init__(self, camera: ViscaSimulator) -> None:
        self._camera = camera
        self._decoder = ViscaStreamDecoder()

    def connected(self) -> bytes:
        return bytes(NetworkChange(self._camera.address))

    def receive(self, data: bytes) -> bytes:
        self._decoder.feed(data)
        return answer_each(
            self._decoder.next_packet,
            lambda packet: b"".join(bytes(reply) for reply in self._replies(packet)),
            lambda exc: logger.debug("VISCA camera %d: %s", self._camera.address, exc),
        )

    def _replies(self, packet: ViscaPacket) -> list[ViscaMessage]:
        camera = self._camera
        if packet.sender != 0:
            return []  # a reply from another camera of the chain
        if packet.receiver == BROADCAST:
            return self._broadcast(packet)
        if packet.receiver != camera.address:
            return []  # for the next camera of the chain
        return camera.handle(packet, camera.address)

    def _broadcast(self, packet: ViscaPacket) -> list[ViscaMessage]:
        address_set = AddressSet.from_packet(packet)
        if address_set is not None:
            if address_set.address >= BROADCAST:
                return []  # a chain has at most seven cameras
            self._camera.address = address_set.address
            return [AddressSet(address_set.address + 1)]
        if_clear = IfClear.from_packet(packet)
        if if_clear is not None:
            return [if_clear]
        return []


class _ViscaIpDevice:
    """The camera's network port; each controller address gets its own session."""

    def __init__(self, camera: ViscaSimulator) -> None:
        self._camera = camera

    def session(self) -> Session:
        return ViscaIpSession(self._camera)


class ViscaIpSession:
    """One controller's VISCA-over-IP conversation: datagrams in, reply messages out.

    `receive` returns every reply message back to back; `serve_visca_ip` sends each in a
    datagram of its own.
    """

    ADDRESS = 1  # VISCA over IP always speaks to camera 1

    def __init__(self, camera: ViscaSimulator) -> None:
        self._camera = camera
        self.last_sequence: int | None = None

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        try:
            messages = ViscaIpMessage.split(data)
        except FrameError as exc:
            logger.debug("VISCA over IP: %s", exc)
            sequence = ViscaIpMessage.peek_sequence(data)
            return b"" if sequence is None else self._control_error(ControlError.MESSAGE, sequence)
        return b"".join(self._answer(message) for message in messages)

    def _answer(self, message: ViscaIpMessage) -> bytes:
        kind = message.payload_type
        if kind == PayloadType.CONTROL_COMMAND and message.payload == CONTROL_RESET:
            self.last_sequence = None
            return bytes(ViscaIpMessage(PayloadType.CONTROL_REPLY, message.sequence, CONTROL_ACK))
        if kind not in (PayloadType.VISCA_COMMAND, PayloadType.VISCA_INQUIRY):
            return self._control_error(ControlError.MESSAGE, message.sequence)
        if message.sequence == self.last_sequence:
            return self._control_error(ControlError.SEQUENCE_NUMBER, message.sequence)
        replies = self._visca(message.payload)
        if not any(isinstance(reply, ErrorReply) for reply in replies):
            # Executed: a retransmission of it must not run it twice.
            self.last_sequence = message.sequence
        return b"".join(
            bytes(ViscaIpMessage(PayloadType.VISCA_REPLY, message.sequence, bytes(reply)))
            for reply in replies
        )

    def _visca(self, payload: bytes) -> list[ViscaMessage]:
        try:
            packet = ViscaPacket.parse(payload)
        except FrameError:
            return [ErrorReply(ViscaErrorCode.SYNTAX, 0, self.ADDRESS)]
        if packet.header == 0x88:
            if_clear = IfClear.from_packet(packet)
            return [if_clear] if if_clear else [ErrorReply(ViscaErrorCode.SYNTAX, 0, self.ADDRESS)]
        if packet.sender != 0 or packet.receiver != self.ADDRESS:
            return [ErrorReply(ViscaErrorCode.SYNTAX, 0, self.ADDRESS)]
        return self._camera.handle(packet, self.ADDRESS)

    @staticmethod
    def _control_error(error: ControlError, sequence: int) -> bytes:
        # Sony lists ERROR among the control command payloads (type 0x0200).
        payload = error.to_bytes(2, "big")
        return bytes(ViscaIpMessage(PayloadType.CONTROL_COMMAND, sequence, payload))


async def serve_visca_ip(camera: ViscaSimulator, host: str, port: int) -> asyncio.DatagramTransport:
    """Serve ``camera`` over VISCA over IP on ``host:port`` (0 picks a port), every reply
    message in a datagram of its own, as Sony cameras send ACK and completion."""
    return await serve_udp(
        camera.over_ip(),
        host,
        port,
        split=lambda reply: [bytes(message) for message in ViscaIpMessage.split(reply)],
    )
