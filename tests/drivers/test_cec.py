"""HDMI-CEC: frame and cec-client line codecs, the simulated bus, the cec-client driver.

Golden frames are the examples of the CEC 1.4 specification and libCEC's documentation
(``tx 10:04`` Image View On from Recording 1 to the TV, ``tx 1F:82:10:00`` Active Source
1.0.0.0, ``01:90:00`` the TV reporting power on); TRAFFIC lines are formatted as
cec-client.cpp's ``"%s[%16lld]\\t%s"`` prints them.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycec.commands import CecCommand
from pycec.network import AbstractCecAdapter, HDMIDevice, HDMINetwork, PhysicalAddress

from roomsystem.drivers.cec import (
    CecClientOutputDecoder,
    CecClientSession,
    CecDisplay,
    CecFrame,
    ConsoleMessage,
    ControlledAddresses,
    LogicalAddress,
    Opcode,
    PollResult,
    PowerStatus,
    Prompt,
    SimulatedCecBus,
    TrafficDirection,
    TrafficLine,
    TxCommand,
    UserControl,
    format_physical_address,
    parse_output_line,
)
from roomsystem.drivers.display import DisplayControl
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed

FAKE_CEC_CLIENT = Path(__file__).parent / "fixtures" / "fake_cec_client.py"

GOLDEN_FRAMES = [
    ("10:04", CecFrame(1, 0, Opcode.IMAGE_VIEW_ON)),
    ("10:36", CecFrame(1, 0, Opcode.STANDBY)),
    ("1f:82:10:00", CecFrame(1, 15, Opcode.ACTIVE_SOURCE, b"\x10\x00")),
    ("10:8f", CecFrame(1, 0, Opcode.GIVE_DEVICE_POWER_STATUS)),
    ("01:90:00", CecFrame(0, 1, Opcode.REPORT_POWER_STATUS, b"\x00")),
    ("4f:86:20:00", CecFrame(4, 15, Opcode.SET_STREAM_PATH, b"\x20\x00")),
    ("45:44:41", CecFrame(4, 5, Opcode.USER_CONTROL_PRESSED, bytes([UserControl.VOLUME_UP]))),
    ("45:45", CecFrame(4, 5, Opcode.USER_CONTROL_RELEASED)),
    ("54:7a:94", CecFrame(5, 4, Opcode.REPORT_AUDIO_STATUS, b"\x94")),
    ("0f:87:00:00:f0", CecFrame(0, 15, Opcode.DEVICE_VENDOR_ID, b"\x00\x00\xf0")),
    ("04:00:9a:00", CecFrame(0, 4, Opcode.FEATURE_ABORT, b"\x9a\x00")),
    ("0f:80:10:00:20:00", CecFrame(0, 15, Opcode.ROUTING_CHANGE, b"\x10\x00\x20\x00")),
    ("44", CecFrame(4, 4)),
]


# -- frames


@pytest.mark.parametrize(("text", "frame"), GOLDEN_FRAMES)
def test_golden_frames_round_trip(text: str, frame: CecFrame) -> None:
    data = bytes.fromhex(text.replace(":", ""))
    assert CecFrame.parse(data) == frame
    assert bytes(CecFrame.parse(data)) == data
    assert CecFrame.from_hex(text) == frame
    assert frame.hex() == text


def test_cec_client_accepts_uppercase_hex() -> None:
    assert CecFrame.from_hex("1F:82:10:00") == CecFrame(1, 15, Opcode.ACTIVE_SOURCE, b"\x10\x00")


def test_physical_addresses() -> None:
    assert CecFrame.from_hex("1f:82:10:00").physical_address == 0x1000
    assert CecFrame.from_hex("0f:80:10:00:20:00").physical_address == 0x2000  # new address
    assert CecFrame.from_hex("10:04").physical_address is None
    assert CecFrame.from_hex("1f:82:10").physical_address is None  # truncated operand
    assert format_physical_address(0x1200) == "1.2.0.0"


@pytest.mark.parametrize(
    "data", [b"", bytes(17), b"\x10\x44" + bytes(15)], ids=["empty", "17 blocks", "too long"]
)
def test_bad_frames_are_frame_errors(data: bytes) -> None:
    with pytest.raises(FrameError):
        CecFrame.parse(data)


@pytest.mark.parametrize("text", ["", "1g:04", "100:04", "10::04", "10 04", "10:-4"])
def test_bad_hex_is_frame_error(text: str) -> None:
    with pytest.raises(FrameError):
        CecFrame.from_hex(text)


def test_frame_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="logical"):
        CecFrame(16, 0)
    with pytest.raises(ValueError, match="operands"):
        CecFrame(1, 0, None, b"\x00")
    with pytest.raises(ValueError, match="at most"):
        CecFrame(1, 0, 0x47, bytes(15))


@given(st.binary(max_size=20))
def test_frame_parser_fuzz(data: bytes) -> None:
    try:
        frame = CecFrame.parse(data)
    except FrameError:
        assert not 1 <= len(data) <= 16
    else:
        assert bytes(frame) == data


# -- cec-client lines


def test_traffic_line_golden() -> None:
    line = b"TRAFFIC: [          255786]\t>> 01:90:00"
    parsed = TrafficLine.parse(line)
    assert parsed == TrafficLine(
        TrafficDirection.RECEIVED, CecFrame.from_hex("01:90:00"), time_ms=255786
    )
    assert bytes(parsed) == line


def test_traffic_line_sent_and_loose_spacing() -> None:
    sent = TrafficLine.parse(b"TRAFFIC: [ 1234] << 10:04")
    assert sent.direction is TrafficDirection.SENT
    assert sent.frame == CecFrame(1, 0, Opcode.IMAGE_VIEW_ON)
    assert bytes(sent) == b"TRAFFIC: [            1234]\t<< 10:04"


@pytest.mark.parametrize(
    "line",
    [b"TRAFFIC: [ 1]\t>> zz", b"TRAFFIC: [x]\t>> 01:90", b"TRAFFIC: [ 1]\t<> 01", b"TRAFFIC: \xff"],
)
def test_bad_traffic_lines_are_frame_errors(line: bytes) -> None:
    with pytest.raises(FrameError):
        parse_output_line(line)


def test_tx_command_golden() -> None:
    assert bytes(TxCommand(CecFrame(1, 0, Opcode.IMAGE_VIEW_ON))) == b"tx 10:04"
    assert TxCommand.parse(b"tx 1F:82:10:00").frame == CecFrame.from_hex("1f:82:10:00")
    for bad in (b"tx", b"rx 10:04", b"tx 10:04 extra", b"tx \xff"):
        with pytest.raises(FrameError):
            TxCommand.parse(bad)


def test_console_lines() -> None:
    assert parse_output_line(b"waiting for input") == Prompt()
    assert parse_output_line(b"Addresses controlled by libCEC: 4*, 8") == ControlledAddresses(
        (4, 8)
    )
    assert parse_output_line(b"POLL message sent") == PollResult(acknowledged=True)
    assert parse_output_line(b"POLL message not sent") == PollResult(acknowledged=False)
    assert parse_output_line(b"Failed to reconnect") == ConsoleMessage("Failed to reconnect")
    with pytest.raises(FrameError):
        parse_output_line(b"Addresses controlled by libCEC: 99")


def test_decoder_joins_chunks_and_resynchronises() -> None:
    decoder = CecClientOutputDecoder()
    stream = (
        b"log level set to 8\nwaiting for input\r\nTRAFFIC: [ 1]\t>> zz\n"
        b"TRAFFIC: [ 2]\t>> 01:90:00\n\n"
    )
    events: list[object] = []
    errors = 0
    for byte in stream:
        decoder.feed(bytes([byte]))
        while True:
            try:
                event = decoder.next_event()
            except FrameError:
                errors += 1
                continue
            if event is None:
                break
            events.append(event)
    assert errors == 1
    assert events == [
        ConsoleMessage("log level set to 8"),
        Prompt(),
        TrafficLine(TrafficDirection.RECEIVED, CecFrame.from_hex("01:90:00"), 2),
    ]


def test_decoder_drops_an_endless_line() -> None:
    decoder = CecClientOutputDecoder()
    decoder.feed(b"x" * 5000)
    with pytest.raises(FrameError, match="longer"):
        decoder.next_event()
    decoder.feed(b"tail of that line\nwaiting for input\n")
    assert decoder.next_event() == Prompt()


@given(st.binary(max_size=300))
def test_output_line_parser_fuzz(data: bytes) -> None:
    try:
        event = parse_output_line(data)
    except FrameError:
        return
    assert isinstance(
        event, TrafficLine | Prompt | ControlledAddresses | PollResult | ConsoleMessage
    )


@given(st.lists(st.binary(max_size=600), max_size=20))
def test_decoder_fuzz(chunks: list[bytes]) -> None:
    decoder = CecClientOutputDecoder()
    for chunk in chunks:
        decoder.feed(chunk)
        for _ in range(len(chunk) + 2):
            try:
                if decoder.next_event() is None:
                    break
            except FrameError:
                continue
        assert len(decoder._buffer) <= 4096 + 600


@given(
    st.sampled_from(TrafficDirection),
    st.integers(0, 15),
    st.integers(0, 15),
    st.integers(0, 255),
    st.binary(max_size=14),
    st.integers(0, 2**40),
)
def test_traffic_line_round_trip(
    direction: TrafficDirection, src: int, dst: int, opcode: int, operands: bytes, time_ms: int
) -> None:
    line = TrafficLine(direction, CecFrame(src, dst, opcode, operands), time_ms)
    assert TrafficLine.parse(bytes(line)) == line


# -- the simulated bus, in process


def run(session: CecClientSession, line: str) -> list[bytes]:
    return session.receive(line.encode() + b"\n").splitlines()


def received(lines: list[bytes]) -> list[str]:
    events = [parse_output_line(line) for line in lines]
    return [
        e.frame.hex()
        for e in events
        if isinstance(e, TrafficLine) and e.direction is TrafficDirection.RECEIVED
    ]


def test_session_greets_like_cec_client() -> None:
    session = SimulatedCecBus().session()
    lines = session.connected().splitlines()
    assert lines[0] == b"CEC Parser created - libCEC version 6.0.2"
    assert lines[-1] == b"waiting for input"
    assert TrafficLine.parse(lines[3]).frame.hex() == "4f:84:10:00:04"


def test_tv_power_state_machine() -> None:
    bus = SimulatedCecBus()
    session = bus.session()
    assert received(run(session, "tx 40:8f")) == ["04:90:01"]
    lines = run(session, "tx 40:04")
    assert TrafficLine.parse(lines[0]).frame.hex() == "40:04"
    assert lines[-1] == b"waiting for input"
    assert bus.power is PowerStatus.TRANSITION_STANDBY_TO_ON
    assert received(run(session, "tx 40:8f")) == ["04:90:02"]
    assert received(run(session, "tx 40:8f")) == ["04:90:00"]
    run(session, "tx 40:36")
    assert received(run(session, "tx 40:8f")) == ["04:90:03"]
    assert received(run(session, "tx 40:8f")) == ["04:90:01"]


def test_tv_answers_like_a_cec_follower() -> None:
    bus = SimulatedCecBus()
    session = bus.session()
    assert received(run(session, "tx 40:9a:01")) == ["04:00:9a:00"]  # unrecognised opcode
    assert received(run(session, "tx 40:ff")) == ["04:00:ff:04"]  # <Abort> is refused
    assert received(run(session, "tx 4f:9a:01")) == []  # no Feature Abort to a broadcast
    assert received(run(session, "tx 40:46")) == ["04:47:" + b"Room TV".hex(":")]
    assert received(run(session, "tx 40:83")) == ["0f:84:00:00:00"]
    run(session, "tx 4f:82:30:00")
    assert bus.active_path == 0x3000
    # A reply to another initiator is not for this adapter: it does not print it.
    assert received(run(session, "tx 10:8f")) == []


def test_audio_system_keys() -> None:
    bus = SimulatedCecBus(volume=10)
    session = bus.session()
    run(session, "tx 45:44:41")
    run(session, "tx 45:45")
    assert bus.volume == 11
    run(session, "tx 45:44:43")
    assert received(run(session, "tx 45:71")) == ["54:7a:8b"]
    run(session, "tx 45:44:66")
    assert not bus.muted


def test_console_commands() -> None:
    session = SimulatedCecBus(audio_system_present=False).session()
    assert run(session, "self")[0] == b"Addresses controlled by libCEC: 4"
    assert run(session, "poll 0")[1] == b"POLL message sent"
    assert run(session, "poll 5")[1] == b"POLL message not sent"
    assert run(session, "poll zz")[0] == b"invalid destination"
    assert run(session, "tx zz") == [b"waiting for input"]
    assert run(session, "") == []
    assert run(session, "q") == []
    assert session.quit_requested


# -- pycec, a CEC library written by others, drives the simulated bus


class SessionAdapter(AbstractCecAdapter):
    """pycec's adapter interface on a simulated cec-client, as pycec's CecAdapter is on libCEC.

    libCEC hands its command callback the traffic text (``>> 01:90:00``); so does this.
    """

    def __init__(self, session: CecClientSession) -> None:
        super().__init__()
        self._session = session
        self._callback: Callable[[str], None] | None = None
        self.sent: asyncio.Queue[str] = asyncio.Queue()

    def set_command_callback(self, callback: Callable[[str], None]) -> None:
        self._callback = callback

    def init(self, callback: Callable[[], None] | None = None) -> asyncio.Future[None]:
        self._initialized = True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def get_logical_address(self) -> int:
        return LogicalAddress.PLAYBACK_1

    def transmit(self, command: CecCommand) -> None:
        self._console(f"tx {command.raw}")
        self.sent.put_nowait(command.raw)

    def poll_device(self, device: int) -> asyncio.Future[bool]:
        acked = b"POLL message sent" in self._console(f"poll {device:x}")
        result: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        result.set_result(acked)
        return result

    def standby_devices(self) -> None:
        self.transmit(CecCommand(Opcode.STANDBY, dst=LogicalAddress.BROADCAST))

    def power_on_devices(self) -> None:
        self.transmit(CecCommand(Opcode.IMAGE_VIEW_ON, dst=LogicalAddress.TV))

    def shutdown(self) -> None:
        self._initialized = False

    async def transmitted(self, raw: str) -> None:
        """Wait until pycec has sent ``raw`` (its periodic status requests come in between)."""
        async with asyncio.timeout(2):
            while await self.sent.get() != raw:
                pass

    def _console(self, line: str) -> list[bytes]:
        printed = self._session.receive(line.encode() + b"\n").splitlines()
        for item in printed:
            if item.startswith(b"TRAFFIC:") and self._callback is not None:
                message = item.split(b"\t", 1)[1].decode()
                if message.startswith(">>"):
                    self._callback(message)
        return printed


async def test_pycec_reads_and_controls_the_simulated_tv() -> None:
    bus = SimulatedCecBus(power=PowerStatus.STANDBY, transition_reports=0)
    adapter = SessionAdapter(bus.session())
    network = HDMINetwork(adapter, loop=asyncio.get_running_loop())
    adapter.set_command_callback(network.command_callback)
    await adapter.init()
    tv_known = asyncio.Event()

    def updated(device: HDMIDevice) -> None:
        if device.logical_address == 0 and device.osd_name and device.physical_address:
            tv_known.set()

    network.set_new_device_callback(lambda device: device.set_update_callback(updated))
    try:
        await network.async_scan()
        async with asyncio.timeout(5):
            await tv_known.wait()
        tv = network.get_device(0)
        assert sorted(d.logical_address for d in network.devices) == [0, 5]
        assert tv.osd_name == "Room TV"
        assert tv.vendor == "Samsung"
        assert str(tv.physical_address) == "0.0.0.0"
        assert tv.is_off

        await tv.async_turn_on()  # <User Control Pressed> [Power On Function]
        await adapter.transmitted("40:44:6d")
        assert bus.power is PowerStatus.ON
        await network.async_active_source(PhysicalAddress("2.0.0.0"))
        await adapter.transmitted("4f:86:20:00")  # after <Active Source> 4f:82:20:00
        assert bus.received[-2:] == [
            CecFrame.from_hex("4f:82:20:00"),
            CecFrame.from_hex("4f:86:20:00"),
        ]
        assert bus.active_path == 0x2000
        await tv.async_turn_off()
        await adapter.transmitted("40:44:6c")
        assert bus.power is PowerStatus.STANDBY
    finally:
        network.stop()
        tasks = [device.task for device in network.devices if device.task is not None]
        async with asyncio.timeout(3):
            await asyncio.gather(*tasks)


# -- the driver against the stand-in cec-client executable

OpenFake = Callable[..., Awaitable[CecDisplay]]


@pytest.fixture
async def open_fake() -> AsyncIterator[OpenFake]:
    """Opens CecDisplays on the fake cec-client; closes them after the test."""
    opened: list[CecDisplay] = []

    async def open_display(*options: str, **kwargs: object) -> CecDisplay:
        kwargs.setdefault("timeout", 1.0)
        kwargs.setdefault("startup_timeout", 10.0)
        display = await CecDisplay.open(
            command=(sys.executable, str(FAKE_CEC_CLIENT), *options),
            **kwargs,  # type: ignore[arg-type]
        )
        opened.append(display)
        return display

    yield open_display
    for display in opened:
        await display.close()


async def test_driver_learns_its_addresses(open_fake: OpenFake) -> None:
    display = await open_fake()
    control: DisplayControl = display  # the interface the room uses
    assert control is display
    assert display.logical_address == LogicalAddress.PLAYBACK_1
    assert display.physical_address == 0x1000


async def test_power_on_and_off(open_fake: OpenFake) -> None:
    display = await open_fake()
    assert (await display.status()).power is False
    await display.set_power(True)
    assert (await display.status()).power is True  # reported "in transition to on"
    assert (await display.status()).power is True
    await display.set_power(False)
    assert (await display.status()).power is False


async def test_input_switching(open_fake: OpenFake) -> None:
    display = await open_fake("--power", "on")
    assert (await display.status()).input_source is None
    await display.set_input_source("hdmi2")
    assert (await display.status()).input_source == "hdmi2"
    await display.set_input_source("hdmi1")
    assert (await display.status()).input_source == "hdmi1"
    with pytest.raises(ValueError, match="no input 'vga'"):
        await display.set_input_source("vga")


async def test_volume_and_mute(open_fake: OpenFake) -> None:
    display = await open_fake()
    status = await display.status()
    assert (status.volume, status.muted) == (20, False)
    await display.set_volume(24)
    assert (await display.status()).volume == 24
    await display.set_volume(21)
    assert (await display.status()).volume == 21
    await display.set_mute(True)
    assert (await display.status()).muted is True
    await display.set_mute(True)  # no second toggle
    assert (await display.status()).muted is True
    await display.set_mute(False)
    assert (await display.status()).muted is False
    with pytest.raises(ValueError, match="outside"):
        await display.set_volume(101)


async def test_no_audio_system(open_fake: OpenFake) -> None:
    display = await open_fake("--no-audio-system", timeout=0.2)
    status = await display.status()
    assert (status.volume, status.muted) == (None, None)
    with pytest.raises(DeviceTimeout, match="71"):
        await display.set_volume(10)


async def test_volume_through_a_tv_that_aborts(open_fake: OpenFake) -> None:
    display = await open_fake(volume_target=LogicalAddress.TV)
    with pytest.raises(DeviceRejected, match="aborted") as caught:
        await display.set_volume(10)
    assert caught.value.code == 0  # unrecognised opcode


async def test_no_volume_target(open_fake: OpenFake) -> None:
    display = await open_fake(volume_target=None)
    assert (await display.status()).volume is None
    with pytest.raises(DeviceRejected, match="no CEC volume"):
        await display.set_mute(True)


async def test_silent_tv_times_out(open_fake: OpenFake) -> None:
    display = await open_fake("--no-tv", timeout=0.2, retries=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeviceTimeout, match="8f"):
        await display.status()
    assert loop.time() - started < 2


async def test_garbage_lines_are_skipped(open_fake: OpenFake) -> None:
    display = await open_fake("--garbage")
    await display.set_power(True)
    assert (await display.status()).power is True


async def test_no_adapter(open_fake: OpenFake) -> None:
    with pytest.raises(LinkClosed, match=r"code 1.*FAILED"):
        await open_fake("--no-adapter")
    with pytest.raises(LinkClosed, match="unable to open the device on port /dev/cec9"):
        await open_fake("--no-adapter", adapter="/dev/cec9")


async def test_missing_binary() -> None:
    with pytest.raises(LinkClosed, match="cannot run /nonexistent/cec-client"):
        await CecDisplay.open(command=("/nonexistent/cec-client",))


async def test_adapter_that_never_opens(open_fake: OpenFake) -> None:
    with pytest.raises(DeviceTimeout, match=r"not ready within 0\.3 s"):
        await open_fake("--hang-on-open", startup_timeout=0.3)


async def test_cec_client_exiting_gives_link_closed(open_fake: OpenFake) -> None:
    display = await open_fake("--exit-after", "2")  # `self` was the first command
    await display.set_power(True)
    with pytest.raises(LinkClosed, match="Failed to reconnect"):
        await display.status()
    with pytest.raises(LinkClosed):
        await display.set_power(False)


async def test_close_is_idempotent(open_fake: OpenFake) -> None:
    display = await open_fake()
    await display.close()
    await display.close()
    with pytest.raises(LinkClosed):
        await display.status()


async def test_real_cec_client_without_adapter() -> None:
    """libCEC's own cec-client (Debian's cec-utils), on a machine with no CEC adapter."""
    if shutil.which("cec-client") is None:
        pytest.skip("cec-client is not installed (apt-get install cec-utils)")
    listing = await asyncio.create_subprocess_exec(
        "cec-client", "-l", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(20):
        found, _ = await listing.communicate()
    if b"Found devices: NONE" not in found:
        pytest.skip("a CEC adapter is present: this test must not open it")
    with pytest.raises(LinkClosed, match=r"code 1.*autodetect: FAILED"):
        await CecDisplay.open(startup_timeout=20)
