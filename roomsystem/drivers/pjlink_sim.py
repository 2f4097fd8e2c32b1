"""A simulated PJLink class 1 or 2 projector: the device side of `roomsystem.drivers.pjlink`.

Follows JBMIA "PJLink Specifications" Class 1 1.04 / Class 2 2.00 (see `pjlink` for the
sections): the greeting with a fresh random number per connection when a password is set,
``PJLINK ERRA`` for a wrong or missing digest, ``ERR1`` for commands the device's class
lacks, ``ERR2`` for parameters out of range, ``ERR3`` for commands the power state does not
allow (input, mute, freeze and volume need the projector on; no power-on while cooling, no
power-off while warming up) and ``ERR4`` for power-on with a fan, lamp or temperature
error. Warm-up and cooling last ``warm_up_s`` / ``cool_down_s`` on an injectable clock, so
tests advance time instead of sleeping.

Serve it with ``serve_tcp(simulator, host, port)``. That harness cannot close a connection
from the device side, so two device behaviours are approximated: after ``PJLINK ERRA`` a
real projector hangs up, this one answers every further line with ``PJLINK ERRA``; and
the 30 s idle disconnection is not simulated.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping

from roomsystem.drivers.errors import FrameError
from roomsystem.drivers.pjlink import (
    CLASS1_INPUT,
    CLASS2_INPUT,
    COMMAND_MIN_CLASS,
    DIGEST_LENGTH,
    MAX_LINE,
    AuthFailure,
    AvMute,
    Command,
    ErrorLevel,
    ErrorStatus,
    Greeting,
    LineDecoder,
    PowerState,
    Response,
)
from roomsystem.drivers.simulator import answer_each

logger = logging.getLogger(__name__)

TERMINAL_KINDS = {
    "1": "RGB",
    "2": "VIDEO",
    "3": "DIGITAL",
    "4": "STORAGE",
    "5": "NETWORK",
    "6": "INTERNAL",
}
VOLUME_RANGE = range(0, 101)


class _Refused(Exception):
    """A command the device answers with ``ERR<code>``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class PjlinkSimulator:
    """A projector's PJLink state and command handling; one `PjlinkSession` per connection.

    State is public for tests: `power` (a `PowerState`, advancing through warm-up and cooling
    as the clock passes), `input`, `video_muted`, `audio_muted`, `frozen`, `errors`,
    `lamp_hours` (None: no lamp, LAMP answers ERR1), `speaker_volume`,
    `microphone_volume`; `commands` logs every authenticated command and `challenges` the
    random number of every connection.
    """

    def __init__(
        self,
        password: str | None = None,
        name: str = "Room projector",
        pjlink_class: int = 2,
        inputs: Iterable[str] = ("11", "31", "32"),
        *,
        clock: Callable[[], float] = time.monotonic,
        warm_up_s: float = 1.0,
        cool_down_s: float = 1.0,
        manufacturer: str = "Roomsystem",
        product_name: str = "PJLink simulator",
        other_info: str = "",
        serial_number: str = "SIM0001",
        software_version: str = "1.0",
        lamp_hours: int | None = 0,
        input_names: Mapping[str, str] | None = None,
    ) -> None:
        if pjlink_class not in (1, 2):
            raise ValueError(f"PJLink class must be 1 or 2, not {pjlink_class!r}")
        self.inputs = tuple(inputs)
        pattern = CLASS1_INPUT if pjlink_class == 1 else CLASS2_INPUT
        bad = [code for code in self.inputs if not pattern.fullmatch(code)]
        if bad or not self.inputs:
            raise ValueError(f"not class {pjlink_class} PJLink input codes: {bad or self.inputs}")
        self.password = password
        self.name = name
        self.pjlink_class = pjlink_class
        self.warm_up_s = warm_up_s
        self.cool_down_s = cool_down_s
        self.manufacturer = manufacturer
        self.product_name = product_name
        self.other_info = other_info
        self.serial_number = serial_number
        self.software_version = software_version
        self.lamp_hours = lamp_hours
        self.input_names = dict(input_names or {})
        self.lamp_model = "LMP-SIM1"
        self.filter_model = "FLT-SIM1"
        self.filter_hours = 0
        self.resolution = "1920x1080"
        self.input = self.inputs[0]
        self.video_muted = False
        self.audio_muted = False
        self.frozen = False
        self.errors = ErrorStatus()
        self.speaker_volume = 50
        self.microphone_volume = 50
        self.commands: list[Command] = []
        self.challenges: list[str] = []
        self._clock = clock
        self._power = PowerState.OFF
        self._transition_ends = 0.0

    @property
    def power(self) -> PowerState:
        moving = self._power in (PowerState.WARMING_UP, PowerState.COOLING)
        if moving and self._clock() >= self._transition_ends:
            warm = self._power is PowerState.WARMING_UP
            self._power = PowerState.ON if warm else PowerState.OFF
        return self._power

    @power.setter
    def power(self, state: PowerState) -> None:
        """Set the state outright (a test's starting point); no transition timer runs."""
        self._power = state
        self._transition_ends = self._clock()

    def session(self) -> PjlinkSession:
        challenge = None
        if self.password is not None:
            challenge = secrets.token_hex(4)
            self.challenges.append(challenge)
        return PjlinkSession(self, challenge)

    def handle(self, command: Command) -> Response:
        """The device's response line to one (authenticated) command."""
        self.commands.append(command)
        body = command.body.upper()
        min_class = COMMAND_MIN_CLASS.get(body)
        if min_class is None or not min_class <= command.pjlink_class <= self.pjlink_class:
            return Response.error(command, 1)
        try:
            result = getattr(self, f"_do_{body.lower()}")(command)
        except _Refused as refusal:
            return Response.error(command, refusal.code)
        return Response(body, result, command.pjlink_class)

    # Commands: each returns the result or raises _Refused.

    def _do_powr(self, command: Command) -> str:
        state = self.power
        if command.param == "?":
            return str(int(state))
        if command.param == "1":
            self._power_on(state)
        elif command.param == "0":
            self._power_off(state)
        else:
            raise _Refused(2)
        return "OK"

    def _power_on(self, state: PowerState) -> None:
        if state is PowerState.COOLING:
            raise _Refused(3)
        fatal = (self.errors.fan, self.errors.lamp, self.errors.temperature)
        if ErrorLevel.ERROR in fatal:
            raise _Refused(4)
        if state is PowerState.OFF:
            self._start(PowerState.WARMING_UP, self.warm_up_s)

    def _power_off(self, state: PowerState) -> None:
        if state is PowerState.WARMING_UP:
            raise _Refused(3)
        if state is PowerState.ON:
            self.frozen = False
            self._start(PowerState.COOLING, self.cool_down_s)

    def _start(self, state: PowerState, duration: float) -> None:
        self._power = state
        self._transition_ends = self._clock() + duration

    def _do_inpt(self, command: Command) -> str:
        if command.param == "?":
            self._require_on()
            return self.input
        pattern = CLASS1_INPUT if command.pjlink_class == 1 else CLASS2_INPUT
        if not pattern.fullmatch(command.param) or command.param not in self.inputs:
            raise _Refused(2)
        self._require_on()
        self.input = command.param
        return "OK"

    def _do_avmt(self, command: Command) -> str:
        if command.param == "?":
            self._require_on()
            return str(AvMute(video=self.video_muted, audio=self.audio_muted))
        if len(command.param) != 2 or command.param[0] not in "123" or command.param[1] not in "01":
            raise _Refused(2)
        self._require_on()
        what, on = command.param[0], command.param[1] == "1"
        if what in "13":
            self.video_muted = on
        if what in "23":
            self.audio_muted = on
        return "OK"

    def _do_erst(self, command: Command) -> str:
        self._require_query(command)
        return str(self.errors)

    def _do_lamp(self, command: Command) -> str:
        self._require_query(command)
        if self.lamp_hours is None:
            raise _Refused(1)  # a display or laser projector: no lamp to report
        lit = self.power in (PowerState.ON, PowerState.WARMING_UP)
        return f"{self.lamp_hours} {int(lit)}"

    def _do_inst(self, command: Command) -> str:
        self._require_query(command)
        if command.pjlink_class == 1:
            return " ".join(code for code in self.inputs if CLASS1_INPUT.fullmatch(code))
        return " ".join(self.inputs)

    def _do_name(self, command: Command) -> str:
        return self._text(command, self.name)

    def _do_inf1(self, command: Command) -> str:
        return self._text(command, self.manufacturer)

    def _do_inf2(self, command: Command) -> str:
        return self._text(command, self.product_name)

    def _do_info(self, command: Command) -> str:
        return self._text(command, self.other_info)

    def _do_clss(self, command: Command) -> str:
        return self._text(command, str(self.pjlink_class))

    def _do_snum(self, command: Command) -> str:
        return self._text(command, self.serial_number)

    def _do_sver(self, command: Command) -> str:
        return self._text(command, self.software_version)

    def _do_rlmp(self, command: Command) -> str:
        return self._text(command, self.lamp_model)

    def _do_rfil(self, command: Command) -> str:
        return self._text(command, self.filter_model)

    def _do_rres(self, command: Command) -> str:
        return self._text(command, self.resolution)

    def _do_filt(self, command: Command) -> str:
        return self._text(command, str(self.filter_hours))

    def _do_ires(self, command: Command) -> str:
        self._require_query(command)
        self._require_on()
        return self.resolution

    def _do_innm(self, command: Command) -> str:
        code = command.param[1:]
        if not command.param.startswith("?") or code not in self.inputs:
            raise _Refused(2)
        default = f"{TERMINAL_KINDS[code[0]]} {code[1]}"
        return self.input_names.get(code, default)

    def _do_svol(self, command: Command) -> str:
        self.speaker_volume = self._step(command, self.speaker_volume)
        return "OK"

    def _do_mvol(self, command: Command) -> str:
        self.microphone_volume = self._step(command, self.microphone_volume)
        return "OK"

    def _do_frez(self, command: Command) -> str:
        if command.param not in ("?", "0", "1"):
            raise _Refused(2)
        self._require_on()
        if command.param == "?":
            return str(int(self.frozen))
        self.frozen = command.param == "1"
        return "OK"

    # Checks shared by the commands

    def _require_on(self) -> None:
        if self.power is not PowerState.ON:
            raise _Refused(3)

    @staticmethod
    def _require_query(command: Command) -> None:
        if command.param != "?":
            raise _Refused(2)

    def _text(self, command: Command, value: str) -> str:
        self._require_query(command)
        return value

    def _step(self, command: Command, level: int) -> int:
        if command.param not in ("0", "1"):
            raise _Refused(2)
        self._require_on()
        stepped = level + (1 if command.param == "1" else -1)
        return stepped if stepped in VOLUME_RANGE else level


class PjlinkSession:
    """One controller's TCP connection: greeting, authentication, then command lines."""

    def __init__(self, device: PjlinkSimulator, challenge: str | None) -> None:
        self._device = device
        self._greeting = Greeting(challenge)
        self._authenticated = challenge is None
        self._rejected = False
        # The first line of an authenticated connection carries the 32-digit digest too.
        self._decoder = LineDecoder(MAX_LINE + (0 if self._authenticated else DIGEST_LENGTH))

    def connected(self) -> bytes:
        return bytes(self._greeting)

    def receive(self, data: bytes) -> bytes:
        self._decoder.feed(data)
        return answer_each(
            self._decoder.next_line,
            self._answer,
            lambda exc: logger.debug("PJLink simulator: ignoring %s", exc),
        )

    def _answer(self, line: bytes) -> bytes:
        if self._rejected:
            return bytes(AuthFailure())
        if not self._authenticated:
            if not self._digest_matches(line[:DIGEST_LENGTH]):
                self._rejected = True
                return bytes(AuthFailure())
            self._authenticated = True
            self._decoder.max_length = MAX_LINE
        try:
            command = Command.parse(line)
        except FrameError:
            return self._answer_malformed(line)
        return bytes(self._device.handle(command))

    def _digest_matches(self, digest: bytes) -> bool:
        password = self._device.password or ""
        expected = self._greeting.digest(password).encode("ascii")
        return hmac.compare_digest(digest.lower(), expected)

    @staticmethod
    def _answer_malformed(line: bytes) -> bytes:
        """ERR1 for a line with a readable header but no proper parameter; else silence."""
        command_part = line if line.startswith(b"%") else line[DIGEST_LENGTH:]
        header = command_part[:6]
        if not header.startswith(b"%"):
            logger.debug("PJLink simulator: ignoring %r", line)
            return b""
        try:
            command = Command(header[2:6].decode("ascii"), "?", int(header[1:2]))
        except (UnicodeDecodeError, ValueError):
            logger.debug("PJLink simulator: ignoring %r", line)
            return b""
        return bytes(Response.error(command, 1))
