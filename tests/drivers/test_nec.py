"""NEC external control: codec golden bytes, fuzzing, client against the simulator, and the
simulator driven by NEC's own SDK (nec-pd-sdk)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import reduce
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomsystem.drivers.display import DisplayControl, DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.nec import (
    CONTROLLER,
    NULL_MESSAGE,
    OPCODE_INPUT,
    OPCODE_MUTE,
    OPCODE_VOLUME,
    GetParameter,
    MessageType,
    NecDecoder,
    NecDisplay,
    NecPacket,
    ParameterReply,
    PowerControl,
    PowerControlReply,
    PowerMode,
    PowerStatusReply,
    SetParameter,
    monitor_address,
)
from roomsystem.drivers.nec_sim import NecSimulator
from roomsystem.drivers.simulator import PtyServer, SimulatedDevice, serve_tcp

T = TypeVar("T")


def frame(text: str) -> bytes:
    return bytes.fromhex(text)


def with_bcc(head: bytes) -> bytes:
    """SOH .. ETX completed with the manual's check code (XOR from byte 1 to ETX) and CR."""
    return head + bytes([reduce(lambda a, b: a ^ b, head[1:]), 0x0D])


# Monitor ID 1 command table of the NEC P702 user's manual, "Control command diagram".
POWER_ON = frame("01 30 41 30 41 30 43 02 43 32 30 33 44 36 30 30 30 31 03 73 0d")
POWER_OFF = frame("01 30 41 30 41 30 43 02 43 32 30 33 44 36 30 30 30 34 03 76 0d")
INPUT_DISPLAYPORT = frame("01 30 41 30 45 30 41 02 30 30 36 30 30 30 30 46 03 04 0d")
INPUT_HDMI = frame("01 30 41 30 45 30 41 02 30 30 36 30 30 30 31 31 03 72 0d")
MUTE_ON = frame("01 30 41 30 45 30 41 02 30 30 38 44 30 30 30 31 03 09 0d")
MUTE_OFF = frame("01 30 41 30 45 30 41 02 30 30 38 44 30 30 30 32 03 0a 0d")
# Section 4.3 "Check code" example: set brightness (0010h) to 0064h, BCC 77h.
SET_BRIGHTNESS = frame("01 30 41 30 45 30 41 02 30 30 31 30 30 30 36 34 03 77 0d")
# Section 7.1 power status read and its reply (power on), section 7.2 power control reply,
# section 5.5.3 NULL message; the manual leaves the BCC to be computed.
POWER_STATUS_READ = with_bcc(b"\x01" + b"0A0A06" + b"\x02" + b"01D6" + b"\x03")
POWER_STATUS_ON = with_bcc(b"\x01" + b"00AB12" + b"\x02" + b"0200D60000040001" + b"\x03")
POWER_CONTROL_REPLY = with_bcc(b"\x01" + b"00AB0E" + b"\x02" + b"00C203D60001" + b"\x03")
NULL_REPLY = with_bcc(b"\x01" + b"00AB04" + b"\x02" + b"BE" + b"\x03")

GOLDEN = [
    POWER_ON,
    POWER_OFF,
    INPUT_DISPLAYPORT,
    INPUT_HDMI,
    MUTE_ON,
    MUTE_OFF,
    SET_BRIGHTNESS,
    POWER_STATUS_READ,
    POWER_STATUS_ON,
    POWER_CONTROL_REPLY,
    NULL_REPLY,
]


# --- codec -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", GOLDEN)
def test_golden_packets_round_trip(data: bytes) -> None:
    assert bytes(NecPacket.parse(data)) == data


def test_golden_power_control() -> None:
    packet = NecPacket.parse(POWER_ON)
    assert packet.destination == monitor_address(1) == ord("A")
    assert packet.source == CONTROLLER
    assert packet.message_type == MessageType.COMMAND
    assert PowerControl.parse(packet.message) == PowerControl(PowerMode.ON)
    assert PowerControl.parse(NecPacket.parse(POWER_OFF).message).mode == PowerMode.OFF
    reply = NecPacket.parse(POWER_CONTROL_REPLY)
    assert (reply.destination, reply.source) == (CONTROLLER, ord("A"))
    assert PowerControlReply.parse(reply.message) == PowerControlReply(0, PowerMode.ON)


def test_golden_set_parameters() -> None:
    def body(data: bytes) -> SetParameter:
        packet = NecPacket.parse(data)
        assert packet.message_type == MessageType.SET_PARAMETER
        return SetParameter.parse(packet.message)

    assert body(INPUT_DISPLAYPORT) == SetParameter(OPCODE_INPUT, 0x0F)
    assert body(INPUT_HDMI) == SetParameter(OPCODE_INPUT, 0x11)
    assert body(MUTE_ON) == SetParameter(OPCODE_MUTE, 1)
    assert body(MUTE_OFF) == SetParameter(OPCODE_MUTE, 2)
    assert body(SET_BRIGHTNESS) == SetParameter(0x0010, 0x0064)


def test_golden_power_status() -> None:
    assert NecPacket.parse(POWER_STATUS_READ).message == b"01D6"
    reply = PowerStatusReply.parse(NecPacket.parse(POWER_STATUS_ON).message)
    assert reply == PowerStatusReply(result=0, mode=PowerMode.ON, max_mode=4)
    assert bytes(reply) == b"0200D60000040001"


def test_golden_null_message() -> None:
    packet = NecPacket.parse(NULL_REPLY)
    assert packet.message_type == MessageType.COMMAND_REPLY
    assert packet.message == NULL_MESSAGE


def test_parameter_reply_layout() -> None:
    # Section 5.2: result, OP code page, OP code, type, max value, current value.
    reply = ParameterReply.parse(b"0000620000640032")
    assert reply == ParameterReply(0, OPCODE_VOLUME, 0, 100, 50)
    assert bytes(reply) == b"0000620000640032"
    assert bytes(GetParameter(OPCODE_VOLUME)) == b"0062"


@pytest.mark.parametrize(
    "data",
    [
        POWER_ON[:-1],  # no CR
        POWER_ON[:-2] + b"\x00\x0d",  # wrong check code
        POWER_ON.replace(b"\x30\x43\x02", b"\x30\x44\x02"),  # length field too long
        POWER_ON.replace(b"\x30\x43\x02", b"\x3f\x43\x02"),  # length field not hex
        with_bcc(b"\x01" + b"0A0Z06" + b"\x02" + b"01D6" + b"\x03"),  # message type Z
        with_bcc(b"\x01" + b"1A0A06" + b"\x02" + b"01D6" + b"\x03"),  # reserved byte not '0'
        b"",
    ],
)
def test_malformed_packets_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        NecPacket.parse(data)


def decode_all(decoder: NecDecoder, chunks: list[bytes]) -> Iterator[NecPacket | FrameError]:
    """Feed ``chunks`` one by one and give every packet and framing error, in order."""
    for chunk in chunks:
        decoder.feed(chunk)
        for _ in range(len(chunk) + 1):  # each error consumes a byte: bounded
            try:
                yield from decoder
            except FrameError as exc:
                yield exc
                continue
            break


def test_decoder_reassembles_byte_by_byte() -> None:
    stream = POWER_ON + POWER_STATUS_ON
    items = list(decode_all(NecDecoder(), [bytes([b]) for b in stream]))
    assert items == [NecPacket.parse(POWER_ON), NecPacket.parse(POWER_STATUS_ON)]


def test_decoder_resynchronises_after_garbage_and_bad_packets() -> None:
    corrupt = POWER_OFF[:-2] + b"\x00\x0d"
    items = list(decode_all(NecDecoder(), [b"noise" + corrupt + POWER_ON]))
    assert isinstance(items[0], FrameError)
    assert items[-1] == NecPacket.parse(POWER_ON)
    assert all(isinstance(item, FrameError) for item in items[:-1])


packets = st.builds(
    NecPacket,
    destination=st.integers(0, 255),
    source=st.integers(0, 255),
    message_type=st.sampled_from(MessageType),
    message=st.binary(max_size=40),
)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_decoder_gives_only_packets_or_frame_errors(chunks: list[bytes]) -> None:
    decoder = NecDecoder()
    for item in decode_all(decoder, chunks):
        assert isinstance(item, NecPacket | FrameError)
    assert decoder.pending <= sum(map(len, chunks))


@given(packets, st.binary(max_size=40).map(lambda b: b.replace(b"\x01", b"")))
def test_fuzz_decoder_finds_a_packet_after_garbage(packet: NecPacket, garbage: bytes) -> None:
    items = list(decode_all(NecDecoder(), [garbage + bytes(packet)]))
    assert items[-1] == packet


@given(packets)
def test_fuzz_packets_round_trip(packet: NecPacket) -> None:
    assert NecPacket.parse(bytes(packet)) == packet


@pytest.mark.parametrize(
    "parse",
    [
        NecPacket.parse,
        GetParameter.parse,
        SetParameter.parse,
        ParameterReply.parse,
        PowerStatusReply.parse,
        PowerControl.parse,
        PowerControlReply.parse,
    ],
)
@given(data=st.binary(max_size=48))
def test_fuzz_parsers_raise_only_frame_error(parse: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse(data)


# --- client against the simulator ------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(device: SimulatedDevice) -> AsyncIterator[int]:
    server = await serve_tcp(device, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def nec_client(
    device: SimulatedDevice, timeout: float = 1.0, retries: int = 2
) -> AsyncIterator[NecDisplay]:
    async with served(device) as port:
        link = await StreamLink.open_tcp("127.0.0.1", port)
        display = NecDisplay(link, timeout=timeout, retries=retries)
        try:
            yield display
        finally:
            await display.close()


async def test_client_controls_the_simulator_over_tcp() -> None:
    sim = NecSimulator()
    async with nec_client(sim) as display:
        control: DisplayControl = display
        assert await control.status() == DisplayStatus(power=False)
        await control.set_power(True)
        assert sim.power
        await control.set_input_source("displayport1")
        await control.set_volume(42)
        await control.set_mute(True)
        assert (sim.input_source, sim.volume, sim.muted) == (0x0F, 42, True)
        assert await control.status() == DisplayStatus(
            power=True, input_source="displayport1", volume=42, muted=True
        )
        await control.set_mute(False)
        await control.set_input_source("hdmi2")
        assert (sim.input_source, sim.muted) == (0x12, False)
        await control.set_power(False)
        assert not sim.power
        assert await display.power_mode() == PowerMode.OFF


async def test_client_over_a_pty_with_another_monitor_id() -> None:
    sim = NecSimulator(monitor_id=7)
    pty = PtyServer(sim)
    pty.start()
    try:
        link = await StreamLink.open_serial(pty.path, 9600)
        display = NecDisplay(link, monitor_id=7)
        try:
            await display.set_power(True)
            await display.set_input_source("hdmi1")
            assert await display.status() == DisplayStatus(
                power=True, input_source="hdmi1", volume=30, muted=False
            )
        finally:
            await display.close()
    finally:
        pty.close()


async def test_unsupported_opcode_and_standby_give_result_01() -> None:
    sim = NecSimulator()
    async with nec_client(sim, timeout=0.2, retries=0) as display:
        with pytest.raises(DeviceRejected) as standby:
            await display.set_input_source("hdmi2")
        assert standby.value.code == 1
        await display.set_power(True)
        with pytest.raises(DeviceRejected) as unsupported:
            await display.get_parameter(0x1234)
        assert unsupported.value.code == 1
        with pytest.raises(DeviceRejected):
            await display.set_parameter(OPCODE_VOLUME, 101)
        assert sim.volume == 30


async def test_unknown_names_and_levels_raise_value_error() -> None:
    async with nec_client(NecSimulator()) as display:
        with pytest.raises(ValueError, match="sdi"):
            await display.set_input_source("sdi")
        with pytest.raises(ValueError, match="101"):
            await display.set_volume(101)
    with pytest.raises(ValueError, match="monitor ID"):
        monitor_address(101)


class Scripted:
    """A device that frames NEC requests and answers each with ``answer(packet)``."""

    def __init__(self, answer: Callable[[NecPacket, int], bytes]) -> None:
        self.answer = answer
        self.requests: list[NecPacket] = []

    def session(self) -> Scripted:
        self.decoder = NecDecoder()
        return self

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        self.decoder.feed(data)
        out = b""
        for packet in self.decoder:
            self.requests.append(packet)
            out += self.answer(packet, len(self.requests))
        return out


def real(packet: NecPacket, _: int) -> bytes:
    reply = NecSimulator().handle(packet)
    return bytes(reply) if reply else b""


async def test_silent_monitor_times_out_after_retries() -> None:
    device = Scripted(lambda packet, n: b"")
    async with nec_client(device, timeout=0.05, retries=2) as display:
        with pytest.raises(DeviceTimeout):
            await display.status()
    assert len(device.requests) == 3


async def test_monitor_with_another_id_is_silent() -> None:
    async with nec_client(NecSimulator(monitor_id=2), timeout=0.05, retries=0) as display:
        with pytest.raises(DeviceTimeout):
            await display.set_power(True)


async def test_lost_reply_is_resent() -> None:
    device = Scripted(lambda packet, n: b"" if n == 1 else real(packet, n))
    async with nec_client(device, timeout=0.05, retries=1) as display:
        assert await display.power_mode() == PowerMode.OFF
    assert len(device.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda packet, n: b"\xff\xfegarbage", id="garbage"),
        pytest.param(lambda packet, n: real(packet, n)[:-3], id="truncated"),
        pytest.param(lambda packet, n: real(packet, n)[:-2] + b"\x00\x0d", id="bad-bcc"),
    ],
)
async def test_unreadable_replies_raise_frame_error(
    answer: Callable[[NecPacket, int], bytes],
) -> None:
    device = Scripted(answer)
    async with nec_client(device, timeout=0.05, retries=1) as display:
        with pytest.raises(FrameError):
            await display.power_mode()
    assert len(device.requests) == 2


async def test_client_resynchronises_on_garbage_before_the_reply() -> None:
    device = Scripted(lambda packet, n: b"\x00\x7f noise" + real(packet, n))
    async with nec_client(device, timeout=0.2, retries=0) as display:
        assert await display.power_mode() == PowerMode.OFF


async def test_stale_and_foreign_replies_are_skipped() -> None:
    other = NecPacket(CONTROLLER, monitor_address(5), MessageType.COMMAND_REPLY, b"BE")

    def answer(packet: NecPacket, n: int) -> bytes:
        stale = NecPacket(
            CONTROLLER,
            monitor_address(1),
            MessageType.GET_REPLY,
            bytes(ParameterReply(0, OPCODE_MUTE, 0, 2, 2)),
        )
        return bytes(other) + bytes(stale) + real(packet, n)

    async with nec_client(Scripted(answer), timeout=0.2, retries=0) as display:
        await display.set_power(True)


async def test_null_message_is_retried_then_rejected() -> None:
    null = NecPacket(CONTROLLER, monitor_address(1), MessageType.COMMAND_REPLY, NULL_MESSAGE)
    device = Scripted(lambda packet, n: bytes(null))
    async with nec_client(device, timeout=0.2, retries=1) as display:
        with pytest.raises(DeviceRejected, match="NULL"):
            await display.set_power(True)
    assert len(device.requests) == 2


def test_simulator_answers_unknown_commands_with_the_null_message() -> None:
    sim = NecSimulator()
    reply = sim.handle(NecPacket(monitor_address(1), CONTROLLER, MessageType.COMMAND, b"C216"))
    assert reply == NecPacket(
        CONTROLLER, monitor_address(1), MessageType.COMMAND_REPLY, NULL_MESSAGE
    )
    assert sim.session().receive(NULL_REPLY[:-2] + b"\x00\x0d") == b""  # bad BCC: silence


# --- the simulator driven by NEC's own SDK ---------------------------------------------------


async def in_thread(blocking: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, blocking)


async def test_nec_pd_sdk_drives_the_simulator() -> None:
    from nec_pd_sdk.nec_pd_sdk import NECPD

    sim = NecSimulator()

    def drive(port: int) -> tuple[int, int, object, object]:
        pd = NECPD.from_ip_address("127.0.0.1", port)
        try:
            off = pd.command_power_status_read()
            pd.command_power_status_set(PowerMode.ON)
            on = pd.command_power_status_read()
            pd.command_set_parameter(OPCODE_INPUT, 0x12)
            volume = pd.helper_set_parameter_as_percentage(OPCODE_VOLUME, 65)
            pd.command_set_parameter(OPCODE_MUTE, 1)
            unsupported = pd.command_get_parameter(0x1234)
            return off, on, volume, unsupported
        finally:
            pd.close()

    async with served(sim) as port:
        off, on, volume, unsupported = await in_thread(lambda: drive(port))

    assert (off, on) == (PowerMode.OFF, PowerMode.ON)
    assert (sim.power, sim.input_source, sim.volume, sim.muted) == (True, 0x12, 65, True)
    assert (volume.result, volume.max_value, volume.current_value) == (0, 100, 65)  # type: ignore[attr-defined]
    assert (unsupported.result, unsupported.opcode) == (1, 0x1234)  # type: ignore[attr-defined]


async def test_nec_pd_sdk_reads_what_our_client_set() -> None:
    from nec_pd_sdk.nec_pd_sdk import NECPD

    sim = NecSimulator(monitor_id=3)
    async with served(sim) as port:
        link = await StreamLink.open_tcp("127.0.0.1", port)
        display = NecDisplay(link, monitor_id=3)
        await display.set_power(True)
        await display.set_volume(17)
        await display.close()

        def read() -> tuple[int, int]:
            pd = NECPD.from_ip_address("127.0.0.1", port)
            try:
                pd.helper_set_destination_monitor_id(3)
                return pd.command_power_status_read(), pd.command_get_parameter(
                    OPCODE_VOLUME
                ).current_value
            finally:
                pd.close()

        assert await in_thread(read) == (PowerMode.ON, 17)
