"""Samsung MDC: codec golden bytes and fuzzing, the simulator, the client over TCP and a pty,
error paths, and the simulator driven by python-samsung-mdc (a client written by others)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from samsung_mdc import MDC
from samsung_mdc.connection import pack_payload, pack_response
from samsung_mdc.exceptions import MDCTimeoutError, NAKError

from roomsystem.drivers.display import DisplayControl, DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.mdc import (
    INPUT_SOURCES,
    Command,
    MdcDisplay,
    MdcFrame,
    MdcReply,
    MdcStatus,
    MdcStreamDecoder,
)
from roomsystem.drivers.mdc_sim import ERR_BAD_VALUE, ERR_NOT_SUPPORTED, MdcSimulator
from roomsystem.drivers.simulator import PtyServer, Session, SimulatedDevice, serve_tcp

# Requests, from the MDC document (Ver. 13.7c §1.2 examples and §2.1 layouts).
POWER_ON_BROADCAST = bytes.fromhex("aa 11 fe 01 01 11")  # §1.2 example, checksum 0x111 -> 0x11
POWER_OFF_BROADCAST = bytes.fromhex("aa 11 fe 01 00 10")  # §1.2 example
GET_STATUS_ID0 = bytes.fromhex("aa 00 00 00 00")
SET_INPUT_HDMI1_ID1 = bytes.fromhex("aa 14 01 01 21 37")
SET_VOLUME_50_ID1 = bytes.fromhex("aa 12 01 01 32 46")
# Replies: AA FF id len 'A'/'N' r-cmd values... checksum.
ACK_INPUT_HDMI1_ID1 = bytes.fromhex("aa ff 01 03 41 14 21 79")
NAK_VOLUME_ID0 = bytes.fromhex("aa ff 00 03 4e 12 02 64")
# Status ACK: power on, volume 20, unmuted, HDMI1, PC 16:9, timers 0.
ACK_STATUS_ID1 = bytes.fromhex("aa ff 01 09 41 00 01 14 00 21 10 00 00 90")

GOLDEN_REQUESTS = [
    POWER_ON_BROADCAST,
    POWER_OFF_BROADCAST,
    GET_STATUS_ID0,
    SET_INPUT_HDMI1_ID1,
    SET_VOLUME_50_ID1,
]
GOLDEN_REPLIES = [ACK_INPUT_HDMI1_ID1, NAK_VOLUME_ID0, ACK_STATUS_ID1]


# --- codec -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", GOLDEN_REQUESTS + GOLDEN_REPLIES)
def test_golden_frames_round_trip(data: bytes) -> None:
    assert bytes(MdcFrame.parse(data)) == data


@pytest.mark.parametrize("data", GOLDEN_REPLIES)
def test_golden_replies_round_trip(data: bytes) -> None:
    assert bytes(MdcReply.parse(data)) == data


def test_golden_frames_decode_to_the_documented_fields() -> None:
    assert MdcFrame.parse(POWER_ON_BROADCAST) == MdcFrame(Command.POWER, 0xFE, b"\x01")
    assert MdcReply.parse(ACK_INPUT_HDMI1_ID1) == MdcReply(1, Command.INPUT_SOURCE, True, b"\x21")
    nak = MdcReply.parse(NAK_VOLUME_ID0)
    assert (nak.ack, nak.command, nak.error_code) == (False, Command.VOLUME, 2)
    status = MdcStatus.parse(MdcReply.parse(ACK_STATUS_ID1).values)
    assert status == MdcStatus(power=1, volume=20, mute=0, input_source=0x21, picture_aspect=0x10)
    assert status.to_display_status() == DisplayStatus(
        power=True, input_source="hdmi1", volume=20, muted=False
    )


def test_same_bytes_as_the_python_samsung_mdc_encoder() -> None:
    assert bytes(MdcFrame(0x11, 0xFE, b"\x01")) == pack_payload(0x11, 0xFE, [1])
    assert bytes(MdcFrame(0x14, 1, b"\x21")) == pack_payload(0x14, 1, [0x21])
    assert pack_response(0x14, 1, True, [0x21]) == ACK_INPUT_HDMI1_ID1
    assert pack_response(0x12, 0, False, [2]) == NAK_VOLUME_ID0


def test_status_without_audio_reports_volume_and_mute_unknown() -> None:
    status = MdcStatus(power=0, volume=0xFF, mute=0xFF, input_source=0x22, picture_aspect=0)
    assert status.to_display_status() == DisplayStatus(
        power=False, input_source="hdmi1", volume=None, muted=None
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("aa 11 fe 01"),  # truncated
        bytes.fromhex("ab 11 fe 01 01 11"),  # no header
        bytes.fromhex("aa 11 fe 01 01 12"),  # wrong checksum
        bytes.fromhex("aa 11 fe 01 01 11 00"),  # trailing byte
    ],
)
def test_parse_rejects_bad_frames(data: bytes) -> None:
    with pytest.raises(FrameError):
        MdcFrame.parse(data)


@pytest.mark.parametrize(
    "data",
    [
        SET_VOLUME_50_ID1,  # a request, not a reply
        bytes(MdcFrame(0xFF, 1, b"\x41")),  # no r-cmd
        bytes(MdcFrame(0xFF, 1, b"\x58\x11\x01")),  # neither 'A' nor 'N'
        bytes(MdcFrame(0xFF, 1, b"\x4e\x11")),  # NAK without an error code
    ],
)
def test_reply_parse_rejects_non_replies(data: bytes) -> None:
    with pytest.raises(FrameError):
        MdcReply.parse(data)


def test_decoder_resyncs_after_garbage_and_rejects_bad_checksum() -> None:
    decoder = MdcStreamDecoder()
    bad = bytearray(SET_VOLUME_50_ID1)
    bad[-1] ^= 0xFF
    decoder.feed(b"\x00\x13garbage" + bytes(bad) + POWER_ON_BROADCAST[:3])
    with pytest.raises(FrameError, match="checksum"):
        decoder.next_frame()
    assert decoder.next_frame() is None  # the rest of the power frame has not come yet
    decoder.feed(POWER_ON_BROADCAST[3:])
    assert decoder.next_frame() == MdcFrame.parse(POWER_ON_BROADCAST)
    assert decoder.next_frame() is None
    assert decoder.skipped >= len(b"\x00\x13garbage")


def test_reply_decoder_does_not_wait_on_a_stray_header() -> None:
    # 0xAA 0x50 would announce 0x50 more bytes; a reply always has 0xFF after the header.
    decoder = MdcStreamDecoder(replies_only=True)
    decoder.feed(b"\xaa\x01\x01\x50" + ACK_INPUT_HDMI1_ID1)
    assert list(decoder.frames()) == [MdcFrame.parse(ACK_INPUT_HDMI1_ID1)]


def test_frame_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="byte"):
        MdcFrame(0x100, 1)
    with pytest.raises(ValueError, match="at most"):
        MdcFrame(0x11, 1, bytes(256))
    with pytest.raises(ValueError, match="error code"):
        MdcReply(1, 0x11, False, b"")


def _drain(decoder: MdcStreamDecoder, limit: int) -> list[MdcFrame]:
    """Every frame the decoder gives; each FrameError drops a byte, so ``limit`` bounds it."""
    frames: list[MdcFrame] = []
    for _ in range(limit):
        try:
            frame = decoder.next_frame()
        except FrameError:
            continue
        if frame is None:
            return frames
        frames.append(frame)
    raise AssertionError("decoder made no progress")


@given(st.lists(st.binary(max_size=80), max_size=12), st.booleans())
def test_fuzz_decoder_gives_only_frames_or_frame_errors(
    chunks: list[bytes], replies_only: bool
) -> None:
    decoder = MdcStreamDecoder(replies_only=replies_only)
    total = 0
    for chunk in chunks:
        decoder.feed(chunk)
        total += len(chunk)
        for frame in _drain(decoder, total + 2):
            assert MdcFrame.parse(bytes(frame)) == frame


frames_strategy = st.builds(
    MdcFrame,
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.binary(max_size=255),
)


@given(
    st.binary(max_size=40).map(lambda b: b.replace(b"\xaa", b"")),
    st.lists(frames_strategy, min_size=1, max_size=5),
    st.integers(1, 17),
)
def test_fuzz_frames_after_garbage_come_out_whole_however_split(
    garbage: bytes, frames: list[MdcFrame], chunk: int
) -> None:
    stream = garbage + b"".join(bytes(f) for f in frames)
    decoder = MdcStreamDecoder()
    out: list[MdcFrame] = []
    for start in range(0, len(stream), chunk):
        decoder.feed(stream[start : start + chunk])
        out += _drain(decoder, len(stream) + 2)
    assert out == frames


@given(st.binary(max_size=300))
def test_fuzz_reply_and_status_parse(data: bytes) -> None:
    try:
        reply = MdcReply.parse(data)
    except FrameError:
        pass
    else:
        assert bytes(reply) == data
    try:
        status = MdcStatus.parse(data)
    except FrameError:
        pass
    else:
        assert bytes(status) == data


@given(st.lists(st.binary(max_size=60), max_size=10))
def test_fuzz_simulator_answers_only_well_formed_replies(chunks: list[bytes]) -> None:
    sim = MdcSimulator(display_id=1)
    session = sim.session()
    answer = b"".join(session.receive(chunk) for chunk in chunks)
    decoder = MdcStreamDecoder()
    decoder.feed(answer)
    for frame in decoder.frames():  # a FrameError here would fail the test
        assert MdcReply.from_frame(frame).display_id == 1
    assert decoder.skipped == 0


# --- simulator ---------------------------------------------------------------------------


def _ask(sim: MdcSimulator, *frames: bytes) -> list[MdcReply]:
    decoder = MdcStreamDecoder()
    decoder.feed(sim.session().receive(b"".join(frames)))
    return [MdcReply.from_frame(frame) for frame in decoder.frames()]


def test_simulator_obeys_broadcast_without_answering() -> None:
    sim = MdcSimulator(display_id=3)
    assert _ask(sim, POWER_ON_BROADCAST) == []
    assert sim.power is True
    assert _ask(sim, POWER_OFF_BROADCAST) == []
    assert sim.power is False


def test_simulator_ignores_other_ids_and_other_displays_replies() -> None:
    sim = MdcSimulator(display_id=1)
    other = bytes(MdcFrame(Command.POWER, 2, b"\x01"))
    heard_reply = bytes(MdcReply(2, Command.POWER, True, b"\x01"))
    assert _ask(sim, other, heard_reply) == []
    assert sim.power is False
    assert len(sim.received) == 2


def test_simulator_acks_sets_with_the_new_value_and_reports_status() -> None:
    sim = MdcSimulator(display_id=1)
    replies = _ask(
        sim,
        bytes(MdcFrame(Command.POWER, 1, b"\x01")),
        SET_VOLUME_50_ID1,
        SET_INPUT_HDMI1_ID1,
        bytes(MdcFrame(Command.MUTE, 1, b"\x01")),
        bytes(MdcFrame(Command.STATUS, 1)),
    )
    assert [(r.ack, r.command, r.values) for r in replies[:4]] == [
        (True, Command.POWER, b"\x01"),
        (True, Command.VOLUME, b"\x32"),
        (True, Command.INPUT_SOURCE, b"\x21"),
        (True, Command.MUTE, b"\x01"),
    ]
    assert MdcStatus.parse(replies[4].values) == MdcStatus(1, 50, 1, 0x21, 0x10)
    assert (sim.power, sim.volume, sim.muted, sim.input_source) == (True, 50, True, 0x21)


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (bytes(MdcFrame(0x77, 1)), ERR_NOT_SUPPORTED),
        (bytes(MdcFrame(Command.VOLUME, 1, b"\x65")), ERR_BAD_VALUE),  # 101
        (bytes(MdcFrame(Command.POWER, 1, b"\x03")), ERR_BAD_VALUE),
        (bytes(MdcFrame(Command.MUTE, 1, b"\x01\x00")), ERR_BAD_VALUE),
        (bytes(MdcFrame(Command.INPUT_SOURCE, 1, b"\x31")), ERR_BAD_VALUE),  # no HDMI3 here
        (bytes(MdcFrame(Command.INPUT_SOURCE, 1, b"\x22")), ERR_BAD_VALUE),  # report-only
    ],
)
def test_simulator_naks_unknown_commands_and_bad_values(request_bytes: bytes, code: int) -> None:
    sim = MdcSimulator(display_id=1)
    before = (sim.power, sim.volume, sim.muted, sim.input_source)
    [reply] = _ask(sim, request_bytes)
    assert (reply.ack, reply.error_code, reply.command) == (False, code, request_bytes[1])
    assert (sim.power, sim.volume, sim.muted, sim.input_source) == before


def test_simulator_drops_corrupt_frames_and_reads_on() -> None:
    sim = MdcSimulator(display_id=1)
    bad = bytearray(SET_VOLUME_50_ID1)
    bad[-1] ^= 0x01
    session = sim.session()
    answer = b"".join(session.receive(bytes([b])) for b in bytes(bad) + SET_INPUT_HDMI1_ID1)
    assert answer == ACK_INPUT_HDMI1_ID1
    assert sim.volume != 50


# --- client against the simulator, over TCP and a pty ------------------------------------


@contextlib.asynccontextmanager
async def connected(device: SimulatedDevice, transport: str) -> AsyncIterator[StreamLink]:
    """A link to ``device`` served on loopback TCP or on a pseudo-terminal."""
    if transport == "tcp":
        server = await serve_tcp(device, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = await StreamLink.open_tcp("127.0.0.1", port)
        try:
            yield link
        finally:
            await link.close()
            server.close()
            await server.wait_closed()
    else:
        pty_server = PtyServer(device)
        pty_server.start()
        link = await StreamLink.open_serial(pty_server.path, 9600)
        try:
            yield link
        finally:
            await link.close()
            pty_server.close()


@pytest.fixture
def sim() -> MdcSimulator:
    return MdcSimulator(display_id=1)


@pytest.fixture(params=["tcp", "pty"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def display(sim: MdcSimulator, transport: str) -> AsyncIterator[MdcDisplay]:
    async with connected(sim, transport) as link:
        yield MdcDisplay(link, display_id=1, timeout=0.5)


async def test_client_drives_the_simulator(display: MdcDisplay, sim: MdcSimulator) -> None:
    control: DisplayControl = display  # mypy checks that MdcDisplay fits the interface
    assert (await control.status()).power is False
    await display.set_power(True)
    await display.set_input_source("displayport1")
    await display.set_volume(42)
    await display.set_mute(True)
    assert (sim.power, sim.input_source, sim.volume, sim.muted) == (True, 0x25, 42, True)
    assert await display.status() == DisplayStatus(
        power=True, input_source="displayport1", volume=42, muted=True
    )
    await display.set_power(False)
    assert sim.power is False


async def test_client_reads_identity(display: MdcDisplay, sim: MdcSimulator) -> None:
    assert await display.model_name() == sim.model_name
    assert await display.serial_number() == sim.serial_number
    assert await display.software_version() == sim.software_version


async def test_client_concurrent_requests_do_not_mix(display: MdcDisplay) -> None:
    await asyncio.gather(*(display.set_volume(level) for level in range(0, 100, 10)))
    statuses = await asyncio.gather(*(display.status() for _ in range(5)))
    assert {s.volume for s in statuses} == {90}


async def test_nak_raises_device_rejected_with_the_error_code(
    display: MdcDisplay, sim: MdcSimulator
) -> None:
    with pytest.raises(DeviceRejected) as excinfo:
        await display.set_input_source("hdmi3")  # this model has no HDMI3
    assert excinfo.value.code == ERR_BAD_VALUE
    with pytest.raises(DeviceRejected) as excinfo:
        await display.request(0x77)
    assert excinfo.value.code == ERR_NOT_SUPPORTED
    assert sim.input_source == INPUT_SOURCES["hdmi1"]


async def test_client_checks_arguments_before_sending(
    display: MdcDisplay, sim: MdcSimulator
) -> None:
    with pytest.raises(ValueError, match="no input 'scart'"):
        await display.set_input_source("scart")
    with pytest.raises(ValueError, match="0-100"):
        await display.set_volume(101)
    assert sim.received == []


def test_client_refuses_the_broadcast_id() -> None:
    with pytest.raises(ValueError, match="0-253"):
        MdcDisplay(None, display_id=0xFE)  # type: ignore[arg-type]


@dataclass
class Tampered:
    """The simulator behind a line that alters its answers: ``alter(n, answer)`` for the n-th."""

    sim: MdcSimulator
    alter: Callable[[int, bytes], bytes]
    answers: int = field(default=0)

    def session(self) -> Session:
        return _TamperedSession(self, self.sim.session())


class _TamperedSession:
    def __init__(self, device: Tampered, inner: Session) -> None:
        self._device = device
        self._inner = inner

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        answer = self._inner.receive(data)
        if not answer:
            return answer
        self._device.answers += 1
        return self._device.alter(self._device.answers, answer)


def _corrupt(answer: bytes) -> bytes:
    return answer[:-1] + bytes((answer[-1] ^ 0x5A,))


async def test_silent_device_times_out_after_bounded_resends(
    sim: MdcSimulator, transport: str
) -> None:
    async with connected(Tampered(sim, lambda n, answer: b""), transport) as link:
        display = MdcDisplay(link, display_id=1, timeout=0.1, retries=2)
        with pytest.raises(DeviceTimeout, match="3 tries"):
            await display.set_power(True)
    assert len(sim.received) == 3


async def test_wrong_display_id_and_garbage_before_the_answer_are_skipped(
    sim: MdcSimulator,
) -> None:
    neighbour = bytes(MdcReply(2, Command.POWER, True, b"\x00"))
    noisy = Tampered(sim, lambda n, answer: neighbour + b"\x00\xaa\x01\x50junk" + answer)
    async with connected(noisy, "tcp") as link:
        display = MdcDisplay(link, display_id=1, timeout=0.5)
        await display.set_power(True)
        assert (await display.status()).power is True
    assert len(sim.received) == 2  # no resends were needed


async def test_only_corrupt_answers_raise_frame_error(sim: MdcSimulator) -> None:
    async with connected(Tampered(sim, lambda n, answer: _corrupt(answer)), "tcp") as link:
        display = MdcDisplay(link, display_id=1, timeout=0.1, retries=1)
        with pytest.raises(FrameError, match="corrupt"):
            await display.status()
    assert len(sim.received) == 2


@pytest.mark.parametrize(
    "spoil", [_corrupt, lambda answer: answer[:3]], ids=["bad-checksum", "truncated"]
)
async def test_a_spoilt_answer_is_recovered_by_resending(
    sim: MdcSimulator, spoil: Callable[[bytes], bytes]
) -> None:
    first_spoilt = Tampered(sim, lambda n, answer: spoil(answer) if n == 1 else answer)
    async with connected(first_spoilt, "tcp") as link:
        display = MdcDisplay(link, display_id=1, timeout=0.1, retries=2)
        await display.set_volume(77)
        assert (await display.status()).volume == 77
    assert len(sim.received) == 3  # volume twice, status once


async def test_hang_up_raises_link_closed() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    display = MdcDisplay(await StreamLink.open_tcp("127.0.0.1", port), timeout=1.0)
    try:
        with pytest.raises(LinkClosed):
            await display.status()
    finally:
        await display.close()
        server.close()
        await server.wait_closed()


# --- the simulator driven by python-samsung-mdc ------------------------------------------


@pytest.fixture
async def sim_port(sim: MdcSimulator) -> AsyncIterator[int]:
    server = await serve_tcp(sim, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_samsung_mdc_power_volume_input_status(sim: MdcSimulator, sim_port: int) -> None:
    async with MDC(f"127.0.0.1:{sim_port}", timeout=2) as mdc:
        assert await mdc.power(1, [MDC.power.POWER_STATE.ON]) == (MDC.power.POWER_STATE.ON,)
        assert sim.power is True
        assert await mdc.volume(1, [33]) == (33,)
        assert sim.volume == 33
        hdmi2 = MDC.input_source.INPUT_SOURCE_STATE.HDMI2
        assert await mdc.input_source(1, [hdmi2]) == (hdmi2,)
        assert sim.input_source == INPUT_SOURCES["hdmi2"]
        assert await mdc.mute(1, [MDC.mute.MUTE_STATE.ON]) == (MDC.mute.MUTE_STATE.ON,)
        assert sim.muted is True
        power, volume, mute, source, aspect, *_ = await mdc.status(1)
        assert (power, volume, mute, source) == (
            MDC.power.POWER_STATE.ON,
            33,
            MDC.mute.MUTE_STATE.ON,
            hdmi2,
        )
        assert aspect == MDC.picture_aspect.PICTURE_ASPECT_STATE.PC_16_9
        assert await mdc.power(1, [MDC.power.POWER_STATE.OFF]) == (MDC.power.POWER_STATE.OFF,)
        assert sim.power is False
        assert await mdc.model_name(1) == (sim.model_name,)
        assert await mdc.serial_number(1) == (sim.serial_number,)


async def test_samsung_mdc_gets_naks(sim: MdcSimulator, sim_port: int) -> None:
    async with MDC(f"127.0.0.1:{sim_port}", timeout=2) as mdc:
        with pytest.raises(NAKError) as excinfo:
            await mdc.input_source(1, [MDC.input_source.INPUT_SOURCE_STATE.HDMI3])
        assert excinfo.value.error_code == ERR_BAD_VALUE
        assert await mdc.send(0x77, 1) == (False, (0x77,), bytes((ERR_NOT_SUPPORTED,)))
        assert await mdc.send(Command.VOLUME, 1, [150]) == (
            False,
            (Command.VOLUME,),
            bytes((ERR_BAD_VALUE,)),
        )
    assert sim.volume != 150


async def test_samsung_mdc_broadcast_is_obeyed_but_not_answered(
    sim: MdcSimulator, sim_port: int
) -> None:
    async with MDC(f"127.0.0.1:{sim_port}", timeout=0.2) as mdc:
        with pytest.raises(MDCTimeoutError):
            await mdc.power(0xFE, [MDC.power.POWER_STATE.ON])
    assert sim.power is True
