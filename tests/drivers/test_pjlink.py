"""PJLink: codec golden bytes and fuzzing, client against the simulator over TCP, and the
simulator driven by the third-party ``pypjlink2`` client.

Golden bytes come from the JBMIA PJLink specification's command descriptions (class 1
1.04, class 2 2.00); the authentication digests are the published examples (the
specification's ``498e4a67`` + ``JBMIAProjectorLink``, and Hitachi's PJLink manual's
``a572f60c`` + ``password``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pypjlink import MUTE_AUDIO, Projector
from pypjlink.projector import ProjectorError

from roomsystem.drivers.display import DisplayControl, DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.pjlink import (
    MAX_LINE,
    AuthFailure,
    AvMute,
    Command,
    ErrorLevel,
    ErrorStatus,
    Greeting,
    Lamp,
    LineDecoder,
    PjlinkDisplay,
    PowerState,
    Response,
    parse_device_line,
    parse_lamps,
)
from roomsystem.drivers.pjlink_sim import PjlinkSimulator
from roomsystem.drivers.simulator import Session, SimulatedDevice, serve_tcp

WARM_UP_S = 20.0
COOL_DOWN_S = 10.0


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Codec: golden bytes


GOLDEN_COMMANDS = [
    b"%1POWR 1\r",
    b"%1POWR 0\r",
    b"%1POWR ?\r",
    b"%1INPT 31\r",
    b"%2INPT 3A\r",
    b"%1AVMT 31\r",
    b"%1ERST ?\r",
    b"%1LAMP ?\r",
    b"%1INST ?\r",
    b"%1CLSS ?\r",
    b"%2INNM ?31\r",
    b"%2SVOL 1\r",
    b"%2FREZ 0\r",
    b"5d8409bc1c3fa39749434aa3a5c38682%1POWR ?\r",
]

GOLDEN_RESPONSES = [
    b"%1POWR=OK\r",
    b"%1POWR=3\r",
    b"%1POWR=ERR3\r",
    b"%1INPT=ERR2\r",
    b"%1XXXX=ERR1\r",
    b"%1POWR=ERR4\r",
    b"%1AVMT=31\r",
    b"%1ERST=000100\r",
    b"%1LAMP=12345 1 300 0\r",
    b"%1INST=11 12 31 32\r",
    b"%1NAME=Room 4 projector\r",
    b"%1INF1=EPSON\r",
    b"%1CLSS=2\r",
    b"%2INST=11 31 3A 61\r",
    b"%2SNUM=SIM0001\r",
    b"%2INNM=HDMI 1\r",
    b"%2RRES=1920x1080\r",
]


@pytest.mark.parametrize("data", GOLDEN_COMMANDS)
def test_command_golden_round_trip(data: bytes) -> None:
    assert bytes(Command.parse(data)) == data


@pytest.mark.parametrize("data", GOLDEN_RESPONSES)
def test_response_golden_round_trip(data: bytes) -> None:
    assert bytes(Response.parse(data)) == data
    assert bytes(parse_device_line(data)) == data


def test_command_fields() -> None:
    command = Command.parse(b"5d8409bc1c3fa39749434aa3a5c38682%2INNM ?3A\r")
    assert command == Command("INNM", "?3A", 2, "5d8409bc1c3fa39749434aa3a5c38682")
    assert bytes(Command("POWR", "1")) == b"%1POWR 1\r"


def test_response_error_codes() -> None:
    assert [Response.parse(f"%1POWR=ERR{n}\r".encode()).error_code for n in "1234"] == [1, 2, 3, 4]
    assert Response.parse(b"%1POWR=OK\r").error_code is None
    assert Response.parse(b"%1NAME=ERRATIC\r").error_code is None


def test_greetings_and_auth_failure() -> None:
    assert Greeting.parse(b"PJLINK 0\r") == Greeting()
    assert Greeting.parse(b"PJLINK 1 498e4a67\r") == Greeting("498e4a67")
    assert bytes(Greeting("498e4a67")) == b"PJLINK 1 498e4a67\r"
    assert bytes(AuthFailure()) == b"PJLINK ERRA\r"
    assert parse_device_line(b"PJLINK ERRA\r") == AuthFailure()
    assert parse_device_line(b"PJLINK 0\r") == Greeting()


def test_authentication_digest_examples() -> None:
    spec = Greeting("498e4a67").digest("JBMIAProjectorLink")
    assert spec == "5d8409bc1c3fa39749434aa3a5c38682"
    assert Greeting("a572f60c").digest("password") == "e3d97429adffa11bce1f7275813d4bde"


@pytest.mark.parametrize(
    "data",
    [
        b"%1POWR 1",  # no CR
        b"%1POWR\r",  # no separator
        b"%1POW 1\r",  # 3-character body
        b"%0POWR 1\r",  # class 0
        b"%xPOWR 1\r",
        b"POWR 1\r",
        b"%1POWR=1\r",  # a response, not a command
        b"%1NAME " + b"x" * 129 + b"\r",  # parameter over 128 bytes
        b"%1NAME \xff\xfe\r",  # not UTF-8
        b"%1NAME a\x01b\r",  # control character
        b"nothex0000000000000000000000000%1POWR ?\r",
    ],
)
def test_bad_commands_are_frame_errors(data: bytes) -> None:
    with pytest.raises(FrameError):
        Command.parse(data)


@pytest.mark.parametrize(
    "data",
    [b"PJLINK 2\r", b"PJLINK 1 short\r", b"PJLINK 1 498e4a67", b"PJLINK ERRB\r", b"%1POWR OK\r"],
)
def test_bad_device_lines_are_frame_errors(data: bytes) -> None:
    with pytest.raises(FrameError):
        parse_device_line(data)


def test_parameter_codecs() -> None:
    assert str(ErrorStatus.parse("000120")) == "000120"
    assert ErrorStatus.parse("020000").lamp is ErrorLevel.ERROR
    assert ErrorStatus().ok
    assert parse_lamps("12345 1 300 0") == (Lamp(12345, True), Lamp(300, False))
    assert AvMute.parse("21") == AvMute(audio=True)
    assert [
        str(AvMute(v, a)) for v, a in ((False, False), (True, False), (False, True), (True, True))
    ] == [
        "30",
        "11",
        "21",
        "31",
    ]
    for bad_status in ("00000", "000003", "abcdef"):
        with pytest.raises(FrameError):
            ErrorStatus.parse(bad_status)
    for bad_lamps in ("", "12", "123456 1", "12 2", "1 1 " * 8 + "1 1"):
        with pytest.raises(FrameError):
            parse_lamps(bad_lamps)


# Codec: line decoder


def drain(decoder: LineDecoder, bound: int = 10_000) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for _ in range(bound):
        try:
            line = decoder.next_line()
        except FrameError as exc:
            out.append(exc)
            continue
        if line is None:
            return out
        out.append(line)
    raise AssertionError("decoder did not settle")


def test_decoder_splits_and_joins_lines() -> None:
    decoder = LineDecoder()
    decoder.feed(b"%1POWR=OK\r%1IN")
    assert drain(decoder) == [b"%1POWR=OK\r"]
    decoder.feed(b"PT=31\r\n%1AVMT=30\r\r")
    assert drain(decoder) == [b"%1INPT=31\r", b"%1AVMT=30\r"]


def test_decoder_resyncs_after_an_overlong_line() -> None:
    decoder = LineDecoder()
    decoder.feed(b"x" * 200)
    first = drain(decoder)
    assert len(first) == 1
    assert isinstance(first[0], FrameError)
    decoder.feed(b"more garbage\r%1POWR=1\r")
    assert drain(decoder) == [b"%1POWR=1\r"]


def test_decoder_accepts_the_longest_line() -> None:
    longest = b"%1NAME=" + b"n" * 128 + b"\r"
    assert len(longest) == MAX_LINE
    decoder = LineDecoder()
    decoder.feed(longest + b"%1NAME=" + b"n" * 129 + b"\r%1CLSS=1\r")
    lines = drain(decoder)
    assert lines[0] == longest
    assert isinstance(lines[1], FrameError)
    assert lines[2] == b"%1CLSS=1\r"


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=2, max_value=200))
def test_decoder_fuzz(chunks: list[bytes], max_length: int) -> None:
    decoder = LineDecoder(max_length)
    for chunk in chunks:
        decoder.feed(chunk)
        for item in drain(decoder):
            if isinstance(item, bytes):
                assert item.endswith(b"\r")
                assert b"\r" not in item[:-1]
                assert 1 < len(item) <= max_length


PARSERS: list[Callable[[bytes], object]] = [
    Command.parse,
    Response.parse,
    Greeting.parse,
    AuthFailure.parse,
    parse_device_line,
]

pjlink_like_lines = st.builds(
    lambda digest, klass, body, sep, param: digest + b"%" + klass + body + sep + param + b"\r",
    st.sampled_from([b"", b"5d8409bc1c3fa39749434aa3a5c38682", b"x" * 32]),
    st.sampled_from([b"1", b"2", b"0", b"a"]),
    st.sampled_from([b"POWR", b"INPT", b"powr", b"PO R", b"\xffOWR"]),
    st.sampled_from([b" ", b"="]),
    st.binary(max_size=140),
)


@given(st.one_of(st.binary(max_size=200), pjlink_like_lines))
def test_parsers_fuzz(data: bytes) -> None:
    for parse in PARSERS:
        try:
            frame = parse(data)
        except FrameError:
            continue
        assert bytes(frame) == data  # type: ignore[call-overload]


@given(st.text(max_size=40))
def test_parameter_codecs_fuzz(param: str) -> None:
    for parse in (ErrorStatus.parse, AvMute.parse, parse_lamps):
        with contextlib.suppress(FrameError):
            parse(param)


@given(st.lists(st.one_of(st.binary(max_size=200), pjlink_like_lines), max_size=8))
@pytest.mark.parametrize("password", [None, "secret"])
def test_simulator_session_fuzz(password: str | None, chunks: list[bytes]) -> None:
    simulator = PjlinkSimulator(password=password, clock=FakeClock())
    session = simulator.session()
    parse_device_line(session.connected())
    for chunk in chunks:
        replies = LineDecoder()
        replies.feed(session.receive(chunk))
        for line in drain(replies):
            assert isinstance(line, bytes)
            parse_device_line(line)


# Client against the simulator over TCP


@contextlib.asynccontextmanager
async def served(device: SimulatedDevice) -> AsyncIterator[int]:
    server = await serve_tcp(device, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def simulator(clock: FakeClock) -> PjlinkSimulator:
    return PjlinkSimulator(clock=clock, warm_up_s=WARM_UP_S, cool_down_s=COOL_DOWN_S)


@pytest.fixture
async def port(simulator: PjlinkSimulator) -> AsyncIterator[int]:
    async with served(simulator) as port:
        yield port


@pytest.fixture
async def display(port: int, clock: FakeClock) -> AsyncIterator[PjlinkDisplay]:
    client = PjlinkDisplay.tcp("127.0.0.1", port, timeout=1.0, clock=clock)
    yield client
    await client.close()


async def power_on(display: PjlinkDisplay, clock: FakeClock) -> None:
    await display.set_power(True)
    clock.advance(WARM_UP_S)


async def test_is_a_display_control(display: PjlinkDisplay) -> None:
    control: DisplayControl = display
    assert await control.status() == DisplayStatus(power=False)


async def test_power_cycle_through_warm_up_and_cooling(
    display: PjlinkDisplay, simulator: PjlinkSimulator, clock: FakeClock
) -> None:
    await display.set_power(True)
    assert simulator.power is PowerState.WARMING_UP
    assert await display.status() == DisplayStatus(power=True)
    with pytest.raises(DeviceRejected) as rejected:
        await display.set_power(False)
    assert rejected.value.code == 3
    clock.advance(WARM_UP_S)
    assert await display.power_state() is PowerState.ON
    await display.set_power(False)
    assert simulator.power is PowerState.COOLING
    assert (await display.status()).power is False
    with pytest.raises(DeviceRejected) as rejected:
        await display.set_power(True)
    assert rejected.value.code == 3
    clock.advance(COOL_DOWN_S)
    assert await display.power_state() is PowerState.OFF


async def test_inputs_and_mute_when_on(
    display: PjlinkDisplay, simulator: PjlinkSimulator, clock: FakeClock
) -> None:
    await power_on(display, clock)
    await display.set_input_source("hdmi2")
    assert simulator.input == "32"
    await display.set_mute(True)
    assert simulator.audio_muted
    assert not simulator.video_muted
    assert await display.status() == DisplayStatus(power=True, input_source="hdmi2", muted=True)
    await display.set_video_mute(True)
    await display.set_mute(False)
    assert await display.av_mute() == AvMute(video=True)
    await display.set_input_source("11")
    assert (await display.status()).input_source == "vga1"


async def test_input_errors(display: PjlinkDisplay, clock: FakeClock) -> None:
    with pytest.raises(DeviceRejected) as rejected:
        await display.set_input_source("hdmi1")  # standby: unavailable time
    assert rejected.value.code == 3
    await power_on(display, clock)
    with pytest.raises(DeviceRejected) as rejected:
        await display.set_input_source("hdmi3")  # 33: not on this projector
    assert rejected.value.code == 2
    with pytest.raises(ValueError, match="no PJLink input"):
        await display.set_input_source("displayport1")


async def test_volume_is_stepped_not_set(
    display: PjlinkDisplay, simulator: PjlinkSimulator, clock: FakeClock
) -> None:
    with pytest.raises(DeviceRejected, match="no absolute volume"):
        await display.set_volume(30)
    await power_on(display, clock)
    await display.volume_step(up=True)
    await display.volume_step(up=False, microphone=True)
    assert (simulator.speaker_volume, simulator.microphone_volume) == (51, 49)


async def test_freeze(display: PjlinkDisplay, simulator: PjlinkSimulator, clock: FakeClock) -> None:
    await power_on(display, clock)
    await display.set_freeze(True)
    assert simulator.frozen
    assert await display.frozen()


async def test_information_queries(
    display: PjlinkDisplay, simulator: PjlinkSimulator, clock: FakeClock
) -> None:
    simulator.lamp_hours = 1234
    simulator.errors = ErrorStatus(lamp=ErrorLevel.WARNING)
    assert await display.name() == "Room projector"
    assert await display.manufacturer() == "Roomsystem"
    assert await display.product_name() == "PJLink simulator"
    assert await display.other_info() == ""
    assert await display.pjlink_class() == 2
    assert await display.inputs() == ("11", "31", "32")
    assert await display.input_name("31") == "DIGITAL 1"
    assert await display.serial_number() == "SIM0001"
    assert await display.software_version() == "1.0"
    assert await display.recommended_resolution() == "1920x1080"
    assert await display.filter_hours() == 0
    assert await display.lamp_model() == "LMP-SIM1"
    assert await display.filter_model() == "FLT-SIM1"
    assert await display.lamp_hours() == (1234,)
    assert (await display.errors()).lamp is ErrorLevel.WARNING
    await power_on(display, clock)
    assert await display.lamps() == (Lamp(1234, True),)
    assert await display.input_resolution() == "1920x1080"


async def test_class_2_inputs(clock: FakeClock) -> None:
    simulator = PjlinkSimulator(inputs=("31", "3A", "61"), clock=clock, warm_up_s=0)
    simulator.power = PowerState.ON
    async with served(simulator) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, clock=clock)
        try:
            assert await display.inputs() == ("31", "3A", "61")
            await display.set_input_source("3a")
            assert simulator.input == "3A"
            await display.set_input_source("internal1")
            assert simulator.input == "61"
            assert simulator.commands[-1] == Command("INPT", "61", 2)
        finally:
            await display.close()


async def test_class_1_device(clock: FakeClock) -> None:
    simulator = PjlinkSimulator(pjlink_class=1, inputs=("11", "31"), lamp_hours=None, clock=clock)
    async with served(simulator) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, clock=clock)
        try:
            assert await display.pjlink_class() == 1
            assert await display.inputs() == ("11", "31")
            for class_2_or_missing in (display.serial_number(), display.lamp_hours()):
                with pytest.raises(DeviceRejected) as rejected:
                    await class_2_or_missing
                assert rejected.value.code == 1
        finally:
            await display.close()


async def test_device_failure_is_err4(display: PjlinkDisplay, simulator: PjlinkSimulator) -> None:
    simulator.errors = ErrorStatus(lamp=ErrorLevel.ERROR)
    with pytest.raises(DeviceRejected, match="ERR4") as rejected:
        await display.set_power(True)
    assert rejected.value.code == 4
    assert simulator.power is PowerState.OFF


# Authentication


async def test_password_authenticates_every_connection(clock: FakeClock) -> None:
    simulator = PjlinkSimulator(password="JBMIAProjectorLink", clock=clock)
    async with served(simulator) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, "JBMIAProjectorLink", clock=clock)
        try:
            await display.set_power(True)
            assert await display.power_state() is PowerState.WARMING_UP
            clock.advance(26)  # past the client's idle limit: the next request reconnects
            assert await display.name() == "Room projector"
        finally:
            await display.close()
    assert len(simulator.challenges) == 2
    assert simulator.challenges[0] != simulator.challenges[1]
    assert [c.digest is not None for c in simulator.commands] == [True, False, True]


@pytest.mark.parametrize(
    ("password", "message"),
    [("wrong", "wrong password"), (None, "requires a password")],
)
async def test_bad_password_is_rejected(
    clock: FakeClock, password: str | None, message: str
) -> None:
    simulator = PjlinkSimulator(password="secret", clock=clock)
    async with served(simulator) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, password, clock=clock)
        try:
            with pytest.raises(DeviceRejected, match=message):
                await display.set_power(True)
        finally:
            await display.close()
    assert simulator.power is PowerState.OFF
    assert simulator.commands == []


# Wire-level error replies of the simulator


async def wire_exchange(port: int, data: bytes, replies: int) -> list[bytes]:
    """Greeting plus ``replies`` lines the device sends back for ``data``."""
    async with asyncio.timeout(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            lines = [await reader.readuntil(b"\r")]
            writer.write(data)
            lines += [await reader.readuntil(b"\r") for _ in range(replies)]
            return lines
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"%1XXXX ?\r", b"%1XXXX=ERR1\r"),  # undefined command
        (b"%1SNUM ?\r", b"%1SNUM=ERR1\r"),  # class 2 command under a class 1 header
        (b"%3POWR ?\r", b"%3POWR=ERR1\r"),  # a class the device does not have
        (b"%1POWR\r", b"%1POWR=ERR1\r"),  # no parameter
        (b"%1POWR 7\r", b"%1POWR=ERR2\r"),
        (b"%1INPT 99\r", b"%1INPT=ERR2\r"),
        (b"%1INPT ?\r", b"%1INPT=ERR3\r"),  # standby
        (b"%1AVMT 21\r", b"%1AVMT=ERR3\r"),
        (b"%2FREZ ?\r", b"%2FREZ=ERR3\r"),
        (b"%1powr ?\r", b"%1POWR=0\r"),  # bodies are case-insensitive
        (b"hello\r%1POWR ?\r", b"%1POWR=0\r"),  # garbage line ignored
        (b"%1NAME " + b"n" * 200 + b"\r%1CLSS ?\r", b"%1CLSS=2\r"),  # overlong ignored
        (b"%1POWR ?\r\n", b"%1POWR=0\r"),  # CR LF tolerated
    ],
)
async def test_simulator_error_replies(port: int, sent: bytes, expected: bytes) -> None:
    assert await wire_exchange(port, sent, 1) == [b"PJLINK 0\r", expected]


async def test_simulator_rejects_a_missing_digest(clock: FakeClock) -> None:
    simulator = PjlinkSimulator(password="secret", clock=clock)
    async with served(simulator) as port:
        greeting, *replies = await wire_exchange(port, b"%1POWR 1\r%1POWR ?\r", 2)
    assert Greeting.parse(greeting).random == simulator.challenges[0]
    assert replies == [b"PJLINK ERRA\r", b"PJLINK ERRA\r"]
    assert simulator.power is PowerState.OFF


async def test_simulator_accepts_the_digest(clock: FakeClock) -> None:
    simulator = PjlinkSimulator(password="secret", clock=clock)
    async with served(simulator) as port, asyncio.timeout(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        greeting = Greeting.parse(await reader.readuntil(b"\r"))
        writer.write(greeting.digest("secret").encode() + b"%1POWR 1\r%1POWR ?\r")
        assert [await reader.readuntil(b"\r") for _ in range(2)] == [
            b"%1POWR=OK\r",
            b"%1POWR=3\r",
        ]
        writer.close()
        await writer.wait_closed()


class ScriptedSession:
    """A device connection that greets and answers every line with fixed bytes."""

    def __init__(self, greeting: bytes, answer: bytes) -> None:
        self._greeting = greeting
        self._answer = answer

    def connected(self) -> bytes:
        return self._greeting

    def receive(self, data: bytes) -> bytes:
        return self._answer * data.count(b"\r")


class ScriptedDevice:
    """Scripted sessions for the first connections, then the simulator's own."""

    def __init__(self, first: list[ScriptedSession], then: PjlinkSimulator | None = None) -> None:
        self._first: Iterator[ScriptedSession] = iter(first)
        self._then = then
        self.connections = 0

    def session(self) -> Session:
        self.connections += 1
        scripted = next(self._first, None)
        if scripted is not None:
            return scripted
        return self._then.session() if self._then else ScriptedSession(b"", b"")


@pytest.mark.parametrize(
    "session",
    [ScriptedSession(b"", b""), ScriptedSession(b"PJLINK 0\r", b"")],
    ids=["no greeting", "greeting only"],
)
async def test_silent_device_times_out(session: ScriptedSession) -> None:
    device = ScriptedDevice([session, session])
    async with served(device) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, timeout=0.2)
        try:
            with pytest.raises(DeviceTimeout):
                await display.status()
        finally:
            await display.close()
    assert device.connections == 2  # one resend on a new connection, then give up


async def test_a_volume_step_is_not_resent() -> None:
    device = ScriptedDevice([ScriptedSession(b"PJLINK 0\r", b"")] * 2)
    async with served(device) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, timeout=0.2)
        try:
            with pytest.raises(DeviceTimeout):
                await display.volume_step(up=True)
        finally:
            await display.close()
    assert device.connections == 1


@pytest.mark.parametrize(
    "session",
    [
        ScriptedSession(b"PJLINK 0\r", b"%1POWR=\x01\x02\r"),
        ScriptedSession(b"PJLINK 0\r", b"\x00" * 300),
        ScriptedSession(b"HELLO\r", b""),
        ScriptedSession(b"PJLINK 0\r", b"PJLINK 0\r"),
    ],
    ids=["control bytes", "no CR", "bad greeting", "greeting as reply"],
)
async def test_garbage_is_a_frame_error_then_recovers(
    session: ScriptedSession, clock: FakeClock
) -> None:
    simulator = PjlinkSimulator(clock=clock)
    device = ScriptedDevice([session], then=simulator)
    async with served(device) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, timeout=0.5, clock=clock)
        try:
            with pytest.raises(FrameError):
                await display.power_state()
            assert await display.power_state() is PowerState.OFF
        finally:
            await display.close()


async def test_a_value_out_of_the_protocol_is_a_frame_error(clock: FakeClock) -> None:
    session = ScriptedSession(b"PJLINK 0\r", b"%1POWR=7\r")
    async with served(ScriptedDevice([session])) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, clock=clock)
        try:
            with pytest.raises(FrameError, match="power state"):
                await display.power_state()
        finally:
            await display.close()


async def test_stale_replies_are_skipped(clock: FakeClock) -> None:
    session = ScriptedSession(b"PJLINK 0\r", b"%1INPT=31\r%1POWR=1\r")
    async with served(ScriptedDevice([session])) as port:
        display = PjlinkDisplay.tcp("127.0.0.1", port, clock=clock)
        try:
            assert await display.power_state() is PowerState.ON
        finally:
            await display.close()


# Reconnection: PJLink devices hang up after 30 s idle


class HangingUpServer:
    """Serves a simulator like `serve_tcp`, and can hang up on every client as a device does."""

    def __init__(self, device: PjlinkSimulator) -> None:
        self._device = device
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.append(writer)
        session = self._device.session()
        writer.write(session.connected())
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                writer.write(session.receive(data))
        writer.close()

    async def hang_up(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        await self.hang_up()
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def hanging_up(simulator: PjlinkSimulator) -> AsyncIterator[HangingUpServer]:
    server = HangingUpServer(simulator)
    await server.start()
    yield server
    await server.stop()


async def test_reconnects_after_the_device_hangs_up(
    hanging_up: HangingUpServer, simulator: PjlinkSimulator, clock: FakeClock
) -> None:
    port = hanging_up.port
    display = PjlinkDisplay.tcp("127.0.0.1", port, clock=clock)
    try:
        assert await display.name() == "Room projector"
        await hanging_up.hang_up()
        await display.set_power(True)
        assert simulator.power is PowerState.WARMING_UP
    finally:
        await display.close()
    assert hanging_up.connections == 2


async def test_reconnects_before_the_idle_limit(
    hanging_up: HangingUpServer, clock: FakeClock
) -> None:
    port = hanging_up.port
    display = PjlinkDisplay.tcp("127.0.0.1", port, clock=clock)
    try:
        await display.name()
        clock.advance(10)
        await display.name()
        assert hanging_up.connections == 1
        clock.advance(26)
        await display.name()
        assert hanging_up.connections == 2
    finally:
        await display.close()


async def test_a_single_link_cannot_reconnect(hanging_up: HangingUpServer) -> None:
    port = hanging_up.port
    display = PjlinkDisplay(await StreamLink.open_tcp("127.0.0.1", port))
    try:
        assert await display.name() == "Room projector"
        await hanging_up.hang_up()
        with pytest.raises(LinkClosed):
            await display.name()
        with pytest.raises(LinkClosed):
            await display.name()
    finally:
        await display.close()
    with pytest.raises(LinkClosed):
        await display.name()


# The simulator driven by pypjlink2, a client written by others


def pypjlink_session(port: int, password: str | None, clock: FakeClock) -> dict[str, object]:
    """A projector-control session in pypjlink's blocking API (run in a thread)."""
    seen: dict[str, object] = {}
    with Projector.from_address("127.0.0.1", port, timeout=2) as projector:
        seen["auth"] = projector.authenticate(password)
        projector.set_power("on")
        seen["warming"] = projector.get_power()
        clock.advance(WARM_UP_S)
        seen["on"] = projector.get_power()
        projector.set_input("DIGITAL", 2)
        seen["input"] = projector.get_input()
        projector.set_mute(MUTE_AUDIO, True)
        seen["mute"] = projector.get_mute()
        seen["name"] = projector.get_name()
        seen["maker"] = projector.get_manufacturer()
        seen["product"] = projector.get_product_name()
        seen["info"] = projector.get_other_info()
        seen["errors"] = projector.get_errors()
        seen["lamps"] = projector.get_lamps()
        seen["inputs"] = projector.get_inputs()
    return seen


@pytest.mark.parametrize("password", [None, "secret"])
async def test_pypjlink_drives_the_simulator(clock: FakeClock, password: str | None) -> None:
    simulator = PjlinkSimulator(password=password, clock=clock, warm_up_s=WARM_UP_S, lamp_hours=321)
    async with served(simulator) as port:
        seen = await asyncio.to_thread(pypjlink_session, port, password, clock)
    assert seen == {
        "auth": None if password is None else True,
        "warming": "warm-up",
        "on": "on",
        "input": ("DIGITAL", 2),
        "mute": (False, True),
        "name": "Room projector",
        "maker": "Roomsystem",
        "product": "PJLink simulator",
        "info": "",
        "errors": dict.fromkeys(("fan", "lamp", "temperature", "cover", "filter", "other"), "ok"),
        "lamps": [(321, True)],
        "inputs": [("RGB", 1), ("DIGITAL", 1), ("DIGITAL", 2)],
    }
    assert simulator.power is PowerState.ON
    assert simulator.input == "32"
    assert simulator.audio_muted


def pypjlink_errors(port: int) -> tuple[str, str]:
    with Projector.from_address("127.0.0.1", port, timeout=2) as projector:
        projector.authenticate()
        with pytest.raises(ProjectorError) as standby:
            projector.get_input()
        with pytest.raises(ProjectorError) as out_of_range:
            projector.set_input("DIGITAL", 9)
    return str(standby.value), str(out_of_range.value)


async def test_pypjlink_sees_error_replies(port: int) -> None:
    assert await asyncio.to_thread(pypjlink_errors, port) == (
        "unavailable time",
        "out of parameter",
    )


def pypjlink_wrong_password(port: int) -> object:
    with Projector.from_address("127.0.0.1", port, timeout=2) as projector:
        return projector.authenticate("not the password")


async def test_pypjlink_wrong_password(clock: FakeClock) -> None:
    simulator = PjlinkSimulator(password="secret", clock=clock)
    async with served(simulator) as port:
        assert await asyncio.to_thread(pypjlink_wrong_password, port) is False
    assert simulator.commands == []
