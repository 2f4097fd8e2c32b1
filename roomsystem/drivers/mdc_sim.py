"""A Samsung display on the device side of MDC, for tests and the demo room.

It answers as the *Multiple Display Control Protocol* (SEC-VD-DSW, Ver. 13.7c) describes:

- frames for its own ID are answered; frames for the broadcast ID 0xFE are obeyed and
  never answered (§1.2); frames for other IDs, and other displays' replies heard on a
  shared serial chain, are ignored;
- a GET (no data) is answered with an ACK carrying the current value, a SET with an ACK
  repeating the new value; Status (0x00) answers power, volume, mute, input source,
  picture aspect and the two old-style timer flags (§2.1);
- a command it does not support, a value outside the command's range or an input this
  model lacks gets a NAK with an error code. The document does not list the codes; this
  simulator uses `ERR_NOT_SUPPORTED` and `ERR_BAD_VALUE`;
- a frame with a wrong checksum is dropped without an answer.

Serve it with `roomsystem.drivers.simulator.serve_tcp` (port 1515 on a real display) or
`roomsystem.drivers.simulator.PtyServer` (RS-232).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container

from roomsystem.drivers.mdc import (
    BROADCAST_ID,
    INPUT_SOURCES,
    REPLY_COMMAND,
    Command,
    MdcFrame,
    MdcReply,
    MdcStatus,
    MdcStreamDecoder,
    Power,
)
from roomsystem.drivers.simulator import answer_each

logger = logging.getLogger(__name__)

ERR_NOT_SUPPORTED = 0x01
ERR_BAD_VALUE = 0x02

DEFAULT_INPUTS = frozenset(
    INPUT_SOURCES[name] for name in ("hdmi1", "hdmi2", "displayport1", "magicinfo")
)
PICTURE_ASPECT_PC_16_9 = 0x10


class _Rejected(Exception):
    """The display answers this request with a NAK carrying ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class MdcSimulator:
    """A Samsung signage display with one MDC ID; its state is in public attributes.

    ``inputs`` are the Input source codes this model has; setting another one is refused.
    It starts switched off, on ``input_source``.
    ``received`` lists every well-formed frame heard, whatever its ID, for tests.
    """

    def __init__(
        self,
        display_id: int = 1,
        *,
        inputs: frozenset[int] = DEFAULT_INPUTS,
        input_source: int = INPUT_SOURCES["hdmi1"],
        model_name: str = "QM55R",
        serial_number: str = "0K3H3CNM900123A",
        software_version: str = "S-R8WWS-1010.4",
    ) -> None:
        if not 0 <= display_id < BROADCAST_ID:
            raise ValueError(f"MDC display ID must be 0-253, not {display_id}")
        if input_source not in inputs:
            raise ValueError(f"input 0x{input_source:02X} is not one of this display's inputs")
        self.display_id = display_id
        self.inputs = inputs
        self.model_name = model_name
        self.serial_number = serial_number
        self.software_version = software_version
        self.power = False
        self.volume = 15
        self.muted = False
        self.input_source = input_source
        self.picture_aspect = PICTURE_ASPECT_PC_16_9
        self.received: list[MdcFrame] = []
        self._handlers: dict[int, Callable[[bytes], bytes]] = {
            Command.STATUS: self._status,
            Command.POWER: self._power,
            Command.VOLUME: self._volume,
            Command.MUTE: self._mute,
            Command.INPUT_SOURCE: self._input_source,
            Command.MODEL_NAME: lambda data: self._text(data, self.model_name),
            Command.SERIAL_NUMBER: lambda data: self._text(data, self.serial_number),
            Command.SOFTWARE_VERSION: lambda data: self._text(data, self.software_version),
        }

    def session(self) -> MdcSession:
        return MdcSession(self)

    def handle(self, frame: MdcFrame) -> MdcReply | None:
        """Act on one request; the reply to send, or None when the display stays silent."""
        self.received.append(frame)
        if frame.command == REPLY_COMMAND:
            return None
        if frame.display_id not in (self.display_id, BROADCAST_ID):
            return None
        reply = self._execute(frame)
        return None if frame.display_id == BROADCAST_ID else reply

    def _execute(self, frame: MdcFrame) -> MdcReply:
        handler = self._handlers.get(frame.command)
        try:
            if handler is None:
                raise _Rejected(ERR_NOT_SUPPORTED)
            values = handler(frame.data)
        except _Rejected as rejected:
            return MdcReply(self.display_id, frame.command, False, bytes((rejected.code,)))
        return MdcReply(self.display_id, frame.command, True, values)

    def _status(self, data: bytes) -> bytes:
        if data:
            raise _Rejected(ERR_BAD_VALUE)
        status = MdcStatus(
            power=Power.ON if self.power else Power.OFF,
            volume=self.volume,
            mute=int(self.muted),
            input_source=self.input_source,
            picture_aspect=self.picture_aspect,
        )
        return bytes(status)

    def _power(self, data: bytes) -> bytes:
        value = _set_value(data, tuple(Power))
        if value is not None:
            # A reboot comes back on; the ACK reports the state it ends in.
            self.power = value != Power.OFF
        return bytes((Power.ON if self.power else Power.OFF,))

    def _volume(self, data: bytes) -> bytes:
        value = _set_value(data, range(101))
        if value is not None:
            self.volume = value
        return bytes((self.volume,))

    def _mute(self, data: bytes) -> bytes:
        value = _set_value(data, (0, 1))
        if value is not None:
            self.muted = bool(value)
        return bytes((int(self.muted),))

    def _input_source(self, data: bytes) -> bytes:
        value = _set_value(data, self.inputs)
        if value is not None:
            self.input_source = value
        return bytes((self.input_source,))

    @staticmethod
    def _text(data: bytes, value: str) -> bytes:
        if data:
            raise _Rejected(ERR_BAD_VALUE)
        return value.encode()


def _set_value(data: bytes, allowed: Container[int]) -> int | None:
    """None for a GET, the value of a valid one-byte SET; a NAK for anything else."""
    if not data:
        return None
    if len(data) != 1 or data[0] not in allowed:
        raise _Rejected(ERR_BAD_VALUE)
    return data[0]


class MdcSession:
    """One controller's line to the display: its own decoder, the display's shared state."""

    def __init__(self, display: MdcSimulator) -> None:
        self._display = display
        self._decoder = MdcStreamDecoder()

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        self._decoder.feed(data)
        return answer_each(
            self._decoder.next_frame,
            lambda frame: bytes(self._display.handle(frame) or b""),
            lambda exc: logger.debug(
                "display %d dropped a frame: %s", self._display.display_id, exc
            ),
        )
