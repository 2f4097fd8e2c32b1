"""A simulated NEC large-format display, speaking the protocol of `roomsystem.drivers.nec`.

It answers as the "External Control" manual describes: power status read and power
control (section 7), get/set parameter for input (0060h), volume (0062h) and mute
(008Dh) with result 01 for opcodes it lacks or values out of range, result 01 for input
and audio while in standby ("unsupported operation under current condition"), the NULL
message for commands it does not know, and silence for packets with a bad check code or
addressed to another monitor. Serve it with `serve_tcp` (port 7142 on a real monitor)
or `PtyServer` (RS-232C).
"""

from __future__ import annotations

import logging

from roomsystem.drivers.errors import FrameError
from roomsystem.drivers.nec import (
    ALL_MONITORS,
    CONTROLLER,
    INPUT_CODES,
    MUTE_OFF,
    MUTE_ON,
    NULL_MESSAGE,
    OPCODE_INPUT,
    OPCODE_MUTE,
    OPCODE_VOLUME,
    PARAMETER_TYPE_SET,
    POWER_STATUS_READ,
    RESULT_OK,
    RESULT_UNSUPPORTED,
    GetParameter,
    MessageType,
    NecDecoder,
    NecPacket,
    ParameterReply,
    PowerControl,
    PowerControlReply,
    PowerMode,
    PowerStatusReply,
    SetParameter,
    monitor_address,
)
from roomsystem.drivers.simulator import Session, answer_each

logger = logging.getLogger(__name__)

VOLUME_MAX = 100
MUTE_MAX = 2
_SETTABLE_POWER_MODES = (PowerMode.ON, PowerMode.OFF)  # the manual says "do not set" 2, 3


class NecSimulator:
    """State of one NEC monitor; every connection (TCP or pty) shares it.

    ``input_source`` is the opcode 0060h code (e.g. 0x11 HDMI1), ``volume`` 0..100.
    """

    def __init__(self, monitor_id: int = 1, inputs: frozenset[int] | None = None) -> None:
        self.monitor_id = monitor_id
        self.address = monitor_address(monitor_id)
        self.inputs = frozenset(INPUT_CODES.values()) if inputs is None else inputs
        self.power = False
        self.input_source = INPUT_CODES["hdmi1"]
        self.volume = 30
        self.muted = False

    def session(self) -> Session:
        return _NecSession(self)

    def handle(self, packet: NecPacket) -> NecPacket | None:
        """The reply to one packet from the controller, or None when the monitor is silent."""
        if packet.destination not in (self.address, ALL_MONITORS):
            return None
        if packet.message_type == MessageType.COMMAND:
            return self._reply(MessageType.COMMAND_REPLY, self._command(packet.message))
        if packet.message_type == MessageType.GET_PARAMETER:
            return self._reply(MessageType.GET_REPLY, self._get(packet.message))
        if packet.message_type == MessageType.SET_PARAMETER:
            return self._reply(MessageType.SET_REPLY, self._set(packet.message))
        return None  # a reply type sent to a monitor: nothing to answer

    def _reply(self, message_type: MessageType, message: bytes) -> NecPacket:
        return NecPacket(CONTROLLER, self.address, message_type, message)

    def _command(self, message: bytes) -> bytes:
        if message == POWER_STATUS_READ:
            mode = PowerMode.ON if self.power else PowerMode.OFF
            return bytes(PowerStatusReply(result=RESULT_OK, mode=mode))
        try:
            control = PowerControl.parse(message)
        except FrameError:
            return NULL_MESSAGE
        if control.mode not in _SETTABLE_POWER_MODES:
            return bytes(PowerControlReply(RESULT_UNSUPPORTED, control.mode))
        self.power = control.mode == PowerMode.ON
        return bytes(PowerControlReply(RESULT_OK, control.mode))

    def _get(self, message: bytes) -> bytes:
        try:
            opcode = GetParameter.parse(message).opcode
        except FrameError:
            return NULL_MESSAGE
        current = self._read(opcode)
        if current is None:
            return bytes(_unsupported(opcode))
        maximum, value = current
        return bytes(ParameterReply(RESULT_OK, opcode, PARAMETER_TYPE_SET, maximum, value))

    def _set(self, message: bytes) -> bytes:
        try:
            request = SetParameter.parse(message)
        except FrameError:
            return NULL_MESSAGE
        current = self._read(request.opcode)
        if current is None or not self._write(request.opcode, request.value):
            return bytes(_unsupported(request.opcode))
        maximum, _ = current
        return bytes(
            ParameterReply(RESULT_OK, request.opcode, PARAMETER_TYPE_SET, maximum, request.value)
        )

    def _read(self, opcode: int) -> tuple[int, int] | None:
        """(max, current) of an opcode the monitor supports now, else None."""
        if not self.power:
            return None
        if opcode == OPCODE_INPUT:
            return max(self.inputs), self.input_source
        if opcode == OPCODE_VOLUME:
            return VOLUME_MAX, self.volume
        if opcode == OPCODE_MUTE:
            return MUTE_MAX, MUTE_ON if self.muted else MUTE_OFF
        return None

    def _write(self, opcode: int, value: int) -> bool:
        if opcode == OPCODE_INPUT and value in self.inputs:
            self.input_source = value
        elif opcode == OPCODE_VOLUME and value <= VOLUME_MAX:
            self.volume = value
        elif opcode == OPCODE_MUTE and value <= MUTE_MAX:
            self.muted = value == MUTE_ON
        else:
            return False
        return True


def _unsupported(opcode: int) -> ParameterReply:
    return ParameterReply(RESULT_UNSUPPORTED, opcode, PARAMETER_TYPE_SET, 0, 0)


class _NecSession:
    """One controller's connection: its own receive buffer, the monitor's shared state."""

    def __init__(self, device: NecSimulator) -> None:
        self._device = device
        self._decoder = NecDecoder()

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        self._decoder.feed(data)
        return answer_each(
            lambda: next(iter(self._decoder), None),
            lambda packet: bytes(self._device.handle(packet) or b""),
            lambda exc: logger.debug("NEC simulator ignored bytes: %s", exc),
        )
