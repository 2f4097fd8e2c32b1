"""A simulated LG display, speaking the serial protocol of `roomsystem.drivers.lg`.

It answers as LG's "External control device setup" appendix describes: ``ka`` power,
``xb`` input select, ``kf`` volume and ``ke`` volume mute, set or read (data ``ff``),
acknowledged with its own set ID and lower-case hex; NG 01 (illegal code) for data out of
range, NG 02 (function not supported) for a command it does not know. Commands for
another set ID are ignored, set ID 00 is obeyed and acknowledged. In standby it answers
only ``ka`` ("the set will not send the status during the standby mode"). Serve it with
`PtyServer` (RS-232C) or `serve_tcp`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from roomsystem.drivers.lg import (
    ALL_SETS,
    INPUT_CODES,
    INPUT_SELECT,
    MUTE_OFF,
    MUTE_ON,
    NG_ILLEGAL_CODE,
    NG_NOT_SUPPORTED,
    POWER,
    READ,
    VOLUME,
    VOLUME_MAX,
    VOLUME_MUTE,
    LgCommand,
    LgCommandDecoder,
    LgReply,
)
from roomsystem.drivers.simulator import Session, answer_each

logger = logging.getLogger(__name__)

# Every input code the commercial sets document, "DTV" and "PC" variants of each port.
DEFAULT_INPUTS = frozenset(INPUT_CODES.values()) | {0x70, 0xA0, 0xA1, 0xA2, 0xD0}


class LgSimulator:
    """State of one LG set; every connection shares it.

    ``input_source`` is the ``xb`` code (e.g. 0x90 HDMI1), ``volume`` 0..100, ``muted``
    True when sound is off (LG's ``ke 00``).
    """

    def __init__(self, set_id: int = 1, inputs: frozenset[int] = DEFAULT_INPUTS) -> None:
        self.set_id = set_id
        self.inputs = inputs
        self.power = False
        self.input_source = INPUT_CODES["hdmi1"]
        self.volume = 30
        self.muted = False
        self._settings: dict[str, tuple[Callable[[], int], Callable[[int], bool]]] = {
            INPUT_SELECT: (lambda: self.input_source, self._select_input),
            VOLUME: (lambda: self.volume, self._set_volume),
            VOLUME_MUTE: (lambda: MUTE_ON if self.muted else MUTE_OFF, self._set_mute),
        }

    def session(self) -> Session:
        return _LgSession(self)

    def handle(self, command: LgCommand) -> LgReply | None:
        """The acknowledgement of one command, or None when the set stays silent."""
        if command.set_id not in (self.set_id, ALL_SETS):
            return None
        if command.command == POWER:
            return self._power(command)
        if not self.power:
            return None
        setting = self._settings.get(command.command)
        if setting is None:
            return self._ng(command, NG_NOT_SUPPORTED)
        read, write = setting
        if len(command.data) != 1:
            return self._ng(command, NG_ILLEGAL_CODE)
        value = command.data[0]
        if value == READ:
            return self._ok(command, read())
        if not write(value):
            return self._ng(command, NG_ILLEGAL_CODE)
        return self._ok(command, value)

    def _power(self, command: LgCommand) -> LgReply:
        if command.data == bytes([READ]):
            return self._ok(command, int(self.power))
        if command.data not in (b"\x00", b"\x01"):
            return self._ng(command, NG_ILLEGAL_CODE)
        self.power = command.data == b"\x01"
        return self._ok(command, command.data[0])

    def _select_input(self, code: int) -> bool:
        if code not in self.inputs:
            return False
        self.input_source = code
        return True

    def _set_volume(self, level: int) -> bool:
        if level > VOLUME_MAX:
            return False
        self.volume = level
        return True

    def _set_mute(self, value: int) -> bool:
        if value not in (MUTE_ON, MUTE_OFF):
            return False
        self.muted = value == MUTE_ON
        return True

    def _ok(self, command: LgCommand, value: int) -> LgReply:
        return LgReply(command.command[1], self.set_id, True, bytes([value]))

    def _ng(self, command: LgCommand, code: int) -> LgReply:
        return LgReply(command.command[1], self.set_id, False, bytes([code]))


class _LgSession:
    """One controller's connection: its own receive buffer, the set's shared state."""

    def __init__(self, device: LgSimulator) -> None:
        self._device = device
        self._decoder = LgCommandDecoder()

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        self._decoder.feed(data)
        # Ignored: line noise, or the LF of a controller that ends lines with CR LF.
        return answer_each(
            lambda: next(iter(self._decoder), None),
            lambda command: bytes(self._device.handle(command) or b""),
            lambda exc: logger.debug("LG simulator ignored bytes: %s", exc),
        )
