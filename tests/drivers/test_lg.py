"""LG serial control: codec golden bytes, fuzzing, client against the simulator, and the
simulator driven by raw pyserial and by a third-party client (lgtv-rs232-zcline91)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from roomsystem.drivers.display import DisplayControl, DisplayStatus
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError
from roomsystem.drivers.lg import (
    NG_ILLEGAL_CODE,
    NG_NOT_SUPPORTED,
    LgCommand,
    LgCommandDecoder,
    LgDisplay,
    LgReply,
    LgReplyDecoder,
)
from roomsystem.drivers.lg_sim import LgSimulator
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.simulator import PtyServer, SimulatedDevice, serve_tcp

T = TypeVar("T")

# Examples of LG's "Controlling the multiple product" appendix (power, input select,
# volume, volume mute, scheduling input select "fu 01 f1 ff") and its acknowledgements.
GOLDEN_COMMANDS = {
    b"ka 01 01\r": LgCommand("ka", 1, b"\x01"),
    b"ka 01 ff\r": LgCommand("ka", 1, b"\xff"),
    b"ka 00 00\r": LgCommand("ka", 0, b"\x00"),
    b"xb 01 90\r": LgCommand("xb", 1, b"\x90"),
    b"xb 0a c0\r": LgCommand("xb", 10, b"\xc0"),
    b"kf 01 64\r": LgCommand("kf", 1, b"\x64"),
    b"ke 01 00\r": LgCommand("ke", 1, b"\x00"),
    b"fu 01 f1 ff\r": LgCommand("fu", 1, b"\xf1\xff"),
}
GOLDEN_REPLIES = {
    b"a 01 OK01x": LgReply("a", 1, True, b"\x01"),
    b"a 01 OK00x": LgReply("a", 1, True, b"\x00"),
    b"b 01 OK91x": LgReply("b", 1, True, b"\x91"),
    b"f 0a OK64x": LgReply("f", 10, True, b"\x64"),
    b"e 01 OK00x": LgReply("e", 1, True, b"\x00"),
    b"f 01 NG01x": LgReply("f", 1, False, b"\x01"),
    b"u 01 OKf1ffx": LgReply("u", 1, True, b"\xf1\xff"),
    b"x 01 OK01x": LgReply("x", 1, True, b"\x01"),  # "dx" picture mode: reply letter is x
}


# --- codec -------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "command"), GOLDEN_COMMANDS.items())
def test_golden_commands(data: bytes, command: LgCommand) -> None:
    assert LgCommand.parse(data) == command
    assert bytes(command) == data


@pytest.mark.parametrize(("data", "reply"), GOLDEN_REPLIES.items())
def test_golden_replies(data: bytes, reply: LgReply) -> None:
    assert LgReply.parse(data) == reply
    assert bytes(reply) == data


def test_upper_case_hex_is_read() -> None:
    assert LgCommand.parse(b"xb 01 C0\r") == LgCommand("xb", 1, b"\xc0")
    assert LgReply.parse(b"b 0A OKC0x") == LgReply("b", 10, True, b"\xc0")


@pytest.mark.parametrize(
    "data", [b"ka 01 01", b"ka 1 01\r", b"ka 01\r", b"KA 01 01\r", b"ka 01 1\r", b"k 01 01\r"]
)
def test_malformed_commands_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        LgCommand.parse(data)


@pytest.mark.parametrize("data", [b"a 01 OK01", b"a 01 OK1x", b"a 01 01x", b"a 1 OK01x", b"ab"])
def test_malformed_replies_raise_frame_error(data: bytes) -> None:
    with pytest.raises(FrameError):
        LgReply.parse(data)


Decoder = LgReplyDecoder | LgCommandDecoder


def decode_all(decoder: Decoder, chunks: list[bytes]) -> Iterator[object]:
    """Feed ``chunks`` one by one and give every frame and framing error, in order."""
    for chunk in chunks:
        decoder.feed(chunk)
        for _ in range(len(chunk) + 1):  # each error consumes a byte: bounded
            try:
                yield from decoder
            except FrameError as exc:
                yield exc
                continue
            break


def test_reply_decoder_reassembles_byte_by_byte() -> None:
    stream = b"x 01 OK01xa 01 NG01x"
    items = list(decode_all(LgReplyDecoder(), [bytes([b]) for b in stream]))
    assert items == [LgReply("x", 1, True, b"\x01"), LgReply("a", 1, False, b"\x01")]


def test_decoders_resynchronise_after_garbage() -> None:
    replies = list(decode_all(LgReplyDecoder(), [b"\x00\xffNGzz?OK!x b 01 OK90x"]))
    assert all(isinstance(item, FrameError) for item in replies[:-1])
    assert replies[-1] == LgReply("b", 1, True, b"\x90")
    commands = list(decode_all(LgCommandDecoder(), [b"ka 01 01\r\nxb 01 91\r"]))
    assert commands == [LgCommand("ka", 1, b"\x01"), commands[1], LgCommand("xb", 1, b"\x91")]
    assert isinstance(commands[1], FrameError)  # the LF of a CR LF controller


def test_decoder_drops_endless_garbage() -> None:
    decoder = LgReplyDecoder()
    items = list(decode_all(decoder, [b"z" * 500]))
    assert items
    assert all(isinstance(item, FrameError) for item in items)
    assert decoder.pending <= 64


commands = st.builds(
    LgCommand,
    command=st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=2),
    set_id=st.integers(0, 255),
    data=st.binary(min_size=1, max_size=4),
)
replies = st.builds(
    LgReply,
    command=st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=1),
    set_id=st.integers(0, 255),
    ok=st.booleans(),
    data=st.binary(max_size=4),
)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_reply_decoder(chunks: list[bytes]) -> None:
    for item in decode_all(LgReplyDecoder(), chunks):
        assert isinstance(item, LgReply | FrameError)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_command_decoder(chunks: list[bytes]) -> None:
    for item in decode_all(LgCommandDecoder(), chunks):
        assert isinstance(item, LgCommand | FrameError)


@given(st.binary(max_size=48))
def test_fuzz_parsers_raise_only_frame_error(data: bytes) -> None:
    for parse in (LgCommand.parse, LgReply.parse):
        with contextlib.suppress(FrameError):
            parse(data)


@given(commands)
def test_fuzz_commands_round_trip(command: LgCommand) -> None:
    assert LgCommand.parse(bytes(command)) == command


@given(replies, st.binary(max_size=30))
def test_fuzz_reply_found_after_garbage(reply: LgReply, garbage: bytes) -> None:
    items = list(decode_all(LgReplyDecoder(), [garbage + bytes(reply)]))
    assert items[-1] == reply


# --- client against the simulator ------------------------------------------------------------


@contextlib.asynccontextmanager
async def on_pty(device: SimulatedDevice) -> AsyncIterator[str]:
    pty = PtyServer(device)
    pty.start()
    try:
        yield pty.path
    finally:
        pty.close()


@contextlib.asynccontextmanager
async def lg_client(
    device: SimulatedDevice, set_id: int = 1, timeout: float = 1.0, retries: int = 2
) -> AsyncIterator[LgDisplay]:
    async with on_pty(device) as path:
        link = await StreamLink.open_serial(path, 9600)
        display = LgDisplay(link, set_id=set_id, timeout=timeout, retries=retries)
        try:
            yield display
        finally:
            await display.close()


async def test_client_controls_the_simulator_over_a_pty() -> None:
    sim = LgSimulator()
    async with lg_client(sim) as display:
        control: DisplayControl = display
        assert await control.status() == DisplayStatus(power=False)
        await control.set_power(True)
        assert sim.power
        await control.set_input_source("displayport1")
        await control.set_volume(100)
        await control.set_mute(True)
        assert (sim.input_source, sim.volume, sim.muted) == (0xC0, 100, True)
        assert await control.status() == DisplayStatus(
            power=True, input_source="displayport1", volume=100, muted=True
        )
        await control.set_mute(False)
        await control.set_input_source("hdmi2")
        assert (sim.input_source, sim.muted) == (0x91, False)
        await control.set_power(False)
        assert not sim.power


async def test_client_over_tcp_and_pc_input_codes() -> None:
    sim = LgSimulator(set_id=0x12)
    sim.power, sim.input_source = True, 0xA0  # "HDMI1 (PC)"
    server = await serve_tcp(sim, "127.0.0.1", 0)
    try:
        link = await StreamLink.open_tcp("127.0.0.1", server.sockets[0].getsockname()[1])
        display = LgDisplay(link, set_id=0x12)
        try:
            assert (await display.status()).input_source == "hdmi1"
        finally:
            await display.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_set_id_zero_addresses_every_set() -> None:
    sim = LgSimulator(set_id=5)
    async with lg_client(sim, set_id=0) as display:
        await display.set_power(True)
        await display.set_volume(9)
        assert (await display.status()).volume == 9
    assert sim.power


async def test_ng_replies_raise_device_rejected() -> None:
    sim = LgSimulator(inputs=frozenset({0x90}))
    sim.power = True
    async with lg_client(sim, timeout=0.2, retries=0) as display:
        with pytest.raises(DeviceRejected) as illegal:
            await display.set_input_source("hdmi2")
        assert illegal.value.code == NG_ILLEGAL_CODE
        with pytest.raises(DeviceRejected) as unsupported:
            await display.write("kz", 0x01)
        assert unsupported.value.code == NG_NOT_SUPPORTED
        with pytest.raises(DeviceRejected):
            await display.write("kf", 0x65)
    assert (sim.input_source, sim.volume) == (0x90, 30)


async def test_unknown_names_and_levels_raise_value_error() -> None:
    async with lg_client(LgSimulator()) as display:
        with pytest.raises(ValueError, match="sdi"):
            await display.set_input_source("sdi")
        with pytest.raises(ValueError, match="101"):
            await display.set_volume(101)


async def test_set_in_standby_is_silent_except_for_power() -> None:
    sim = LgSimulator()
    async with lg_client(sim, timeout=0.05, retries=0) as display:
        with pytest.raises(DeviceTimeout):
            await display.set_input_source("hdmi2")
        await display.set_power(True)
        await display.set_input_source("hdmi2")
    assert sim.input_source == 0x91


async def test_set_with_another_id_is_silent() -> None:
    sim = LgSimulator(set_id=2)
    async with lg_client(sim, timeout=0.05, retries=1) as display:
        with pytest.raises(DeviceTimeout):
            await display.set_power(True)
    assert not sim.power


class Scripted:
    """A device that frames LG commands and answers each with ``answer(command, n)``."""

    def __init__(self, answer: Callable[[LgCommand, int], bytes]) -> None:
        self.answer = answer
        self.requests: list[LgCommand] = []

    def session(self) -> Scripted:
        self.decoder = LgCommandDecoder()
        return self

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        self.decoder.feed(data)
        out = b""
        for command in self.decoder:
            self.requests.append(command)
            out += self.answer(command, len(self.requests))
        return out


def real(command: LgCommand, _: int) -> bytes:
    sim = LgSimulator()
    reply = sim.handle(command)
    return bytes(reply) if reply else b""


async def test_lost_reply_is_resent() -> None:
    device = Scripted(lambda command, n: b"" if n == 1 else real(command, n))
    async with lg_client(device, timeout=0.05, retries=1) as display:
        assert await display.status() == DisplayStatus(power=False)
    assert len(device.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda command, n: b"\xff\x00 garbage x", id="garbage"),
        pytest.param(lambda command, n: real(command, n)[:-1], id="truncated"),
        pytest.param(lambda command, n: b"a 01 OK1x", id="odd-hex"),
    ],
)
async def test_unreadable_replies_raise_frame_error(
    answer: Callable[[LgCommand, int], bytes],
) -> None:
    device = Scripted(answer)
    async with lg_client(device, timeout=0.05, retries=1) as display:
        with pytest.raises(FrameError):
            await display.status()
    assert len(device.requests) == 2


async def test_client_resynchronises_and_skips_foreign_replies() -> None:
    device = Scripted(lambda command, n: b"\r\n\x00a 07 OK01xb 01 OK90x" + real(command, n))
    async with lg_client(device, timeout=0.2, retries=0) as display:
        assert await display.status() == DisplayStatus(power=False)


# --- the simulator driven by others' code ------------------------------------------------


async def in_thread(blocking: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, blocking)


def exchange(port: serial.Serial, request: bytes) -> bytes:
    port.write(request)
    return port.read_until(b"x")


async def test_raw_pyserial_gets_the_documented_replies() -> None:
    sim = LgSimulator()
    script = [
        (b"ka 01 ff\r", b"a 01 OK00x"),
        (b"ka 01 01\r", b"a 01 OK01x"),
        (b"ka 01 ff\r", b"a 01 OK01x"),
        (b"xb 01 91\r", b"b 01 OK91x"),
        (b"xb 01 ff\r", b"b 01 OK91x"),
        (b"kf 01 20\r", b"f 01 OK20x"),
        (b"ke 01 00\r", b"e 01 OK00x"),
        (b"kf 01 65\r", b"f 01 NG01x"),
        (b"ka 00 ff\r", b"a 01 OK01x"),
    ]

    def run(path: str) -> tuple[list[bytes], bytes]:
        with serial.Serial(path, 9600, timeout=1.0) as port:
            answers = [exchange(port, request) for request, _ in script]
            port.timeout = 0.05
            other_set = exchange(port, b"ka 02 00\r")
        return answers, other_set

    async with on_pty(sim) as path:
        answers, other_set = await in_thread(lambda: run(path))
    assert answers == [reply for _, reply in script]
    assert other_set == b""
    assert (sim.power, sim.input_source, sim.volume, sim.muted) == (True, 0x91, 0x20, True)


async def test_lgtv_rs232_drives_the_simulator() -> None:
    from lgtv_rs232 import LgTV

    sim = LgSimulator()

    def drive(path: str) -> tuple[object, ...]:
        tv = LgTV(path, tv_id=1)
        try:
            was_on = tv.is_on
            results = (
                tv.request("power", "on"),
                tv.request("input", "hdmi2"),
                tv.request("volume", "40"),
                tv.request("sound", "off"),
            )
            tv.update_status()
            return was_on, results, tv.input, tv.volume, tv.muted
        finally:
            tv._ser.close()

    async with on_pty(sim) as path:
        was_on, results, source, volume, muted = await in_thread(lambda: drive(path))
    assert was_on is False
    assert results == (True, True, True, True)
    assert (source, volume, muted) == ("hdmi2", 40, True)
    assert (sim.power, sim.input_source, sim.volume, sim.muted) == (True, 0x91, 40, True)
