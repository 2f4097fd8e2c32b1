"""VISCA and VISCA over IP: codec, clients against the simulator, and a third-party client.

Golden bytes come from Sony's command lists (EVI-D70 / BRC-300 Technical Manual, "Command
List" and "VISCA Camera-Issued Messages"; SRG-300H / BRC-X400 "VISCA over IP").
"""

from __future__ import annotations

import asyncio
import socket
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import pytest
import visca_over_ip.camera
from hypothesis import given
from hypothesis import strategies as st
from visca_over_ip import Camera as ThirdPartyCamera
from visca_over_ip.exceptions import ViscaException

from roomsystem.drivers.camera import CameraControl, CameraStatus, Direction
from roomsystem.drivers.errors import DeviceRejected, DeviceTimeout, FrameError, LinkClosed
from roomsystem.drivers.simulator import PtyServer, Session, SimulatedDevice, serve_udp
from roomsystem.drivers.visca import (
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
    ViscaCamera,
    ViscaErrorCode,
    ViscaIpCamera,
    ViscaIpMessage,
    ViscaMessage,
    ViscaPacket,
    ViscaStreamDecoder,
    ZoomDirect,
    ZoomDirection,
    ZoomDrive,
    ZoomPositionInquiry,
    decode_reply,
    decode_request,
)
from roomsystem.drivers.visca_sim import (
    CameraPosition,
    ViscaIpSession,
    ViscaSimulator,
    serve_visca_ip,
)

H = bytes.fromhex

# --- golden bytes -----------------------------------------------------------------------

REQUESTS: list[tuple[str, ViscaMessage]] = [
    ("81 01 04 00 02 FF", Power(True)),
    ("81 01 04 00 03 FF", Power(False)),
    ("81 01 06 01 05 07 03 01 FF", PanTiltDrive(5, 7, PanDirection.STOP, TiltDirection.UP)),
    ("81 01 06 01 05 07 03 02 FF", PanTiltDrive(5, 7, PanDirection.STOP, TiltDirection.DOWN)),
    ("81 01 06 01 05 07 01 03 FF", PanTiltDrive(5, 7, PanDirection.LEFT, TiltDirection.STOP)),
    ("81 01 06 01 05 07 02 03 FF", PanTiltDrive(5, 7, PanDirection.RIGHT, TiltDirection.STOP)),
    ("81 01 06 01 18 17 01 01 FF", PanTiltDrive(0x18, 0x17, PanDirection.LEFT, TiltDirection.UP)),
    ("81 01 06 01 01 01 02 02 FF", PanTiltDrive(1, 1, PanDirection.RIGHT, TiltDirection.DOWN)),
    ("81 01 06 01 01 01 03 03 FF", PanTiltDrive(1, 1, PanDirection.STOP, TiltDirection.STOP)),
    (
        "81 01 06 02 18 14 00 09 09 00 0F 0E 05 00 FF",
        PanTiltAbsolute(0x18, 0x14, 2448, -432),
    ),
    ("83 01 06 03 01 01 0F 0F 0F 0F 00 00 00 01 FF", PanTiltRelative(1, 1, -1, 1, address=3)),
    ("81 01 06 04 FF", PanTiltHome()),
    ("81 01 06 05 FF", PanTiltReset()),
    ("81 01 04 07 00 FF", ZoomDrive(ZoomDirection.STOP)),
    ("81 01 04 07 02 FF", ZoomDrive(ZoomDirection.TELE)),
    ("81 01 04 07 03 FF", ZoomDrive(ZoomDirection.WIDE)),
    ("81 01 04 07 25 FF", ZoomDrive(ZoomDirection.TELE, 5)),
    ("81 01 04 07 37 FF", ZoomDrive(ZoomDirection.WIDE, 7)),
    ("81 01 04 47 04 00 00 00 FF", ZoomDirect(0x4000)),
    ("81 01 04 38 02 FF", FocusMode(auto=True)),
    ("81 01 04 38 03 FF", FocusMode(auto=False)),
    ("81 01 04 48 01 02 03 04 FF", FocusDirect(0x1234)),
    ("81 01 04 3F 00 05 FF", Preset(PresetAction.RESET, 5)),
    ("81 01 04 3F 01 05 FF", Preset(PresetAction.SET, 5)),
    ("87 01 04 3F 02 0F FF", Preset(PresetAction.RECALL, 15, address=7)),
    ("88 01 00 01 FF", IfClear(address=8)),
    ("81 01 00 01 FF", IfClear()),
    ("81 21 FF", Cancel(1)),
    ("81 09 04 00 FF", PowerInquiry()),
    ("81 09 04 47 FF", ZoomPositionInquiry()),
    ("81 09 04 48 FF", FocusPositionInquiry()),
    ("81 09 04 38 FF", FocusModeInquiry()),
    ("82 09 06 12 FF", PanTiltPositionInquiry(address=2)),
]

REPLIES: list[tuple[str, ViscaMessage]] = [
    ("90 41 FF", Ack(1)),
    ("A0 42 FF", Ack(2, address=2)),
    ("90 51 FF", Completion(1)),
    ("90 50 02 FF", Completion(0, b"\x02")),
    ("F0 50 03 FF", Completion(0, b"\x03", address=7)),
    ("90 50 00 00 06 04 0F 0F 0C 0E FF", Completion(0, H("00 00 06 04 0F 0F 0C 0E"))),
    ("90 60 02 FF", ErrorReply(ViscaErrorCode.SYNTAX)),
    ("90 60 03 FF", ErrorReply(ViscaErrorCode.COMMAND_BUFFER_FULL)),
    ("90 61 04 FF", ErrorReply(ViscaErrorCode.COMMAND_CANCELLED, 1)),
    ("90 62 05 FF", ErrorReply(ViscaErrorCode.NO_SOCKET, 2)),
    ("90 61 41 FF", ErrorReply(ViscaErrorCode.NOT_EXECUTABLE, 1)),
    ("90 38 FF", NetworkChange()),
    ("88 30 02 FF", AddressSet(2)),
    ("88 01 00 01 FF", IfClear(address=8)),
]


@pytest.mark.parametrize(("wire", "message"), REQUESTS, ids=[w for w, _ in REQUESTS])
def test_request_golden_bytes(wire: str, message: ViscaMessage) -> None:
    data = H(wire)
    assert bytes(message) == data
    assert type(message).parse(data) == message
    assert decode_request(ViscaPacket.parse(data)) == message
    assert bytes(ViscaPacket.parse(data)) == data


@pytest.mark.parametrize(("wire", "message"), REPLIES, ids=[w for w, _ in REPLIES])
def test_reply_golden_bytes(wire: str, message: ViscaMessage) -> None:
    data = H(wire)
    assert bytes(message) == data
    assert type(message).parse(data) == message
    assert decode_reply(ViscaPacket.parse(data)) == message


def test_address_set_golden_bytes() -> None:
    assert bytes(AddressSet(1)) == H("88 30 01 FF")
    assert AddressSet.parse(H("88 30 01 FF")) == AddressSet(1)


def test_inquiry_answers_decode() -> None:
    assert PowerInquiry.decode(b"\x02") is True
    assert PowerInquiry.decode(b"\x03") is False
    assert ZoomPositionInquiry.decode(H("04 00 00 00")) == 0x4000
    assert PanTiltPositionInquiry.decode(H("00 00 06 04 0F 0F 0C 0E")) == (100, -50)
    assert FocusModeInquiry.decode(b"\x03") is False
    with pytest.raises(FrameError):
        PowerInquiry.decode(b"\x05")
    with pytest.raises(FrameError):
        PanTiltPositionInquiry.decode(H("00 00 06 14 0F 0F 0C 0E"))  # 0x14 is not a nibble


@pytest.mark.parametrize(
    "wire",
    [
        "81 01 04 00 FF FF",  # terminator inside
        "01 01 04 00 02 FF",  # header without its high bit
        "81 FF",  # too short
        "81 01 04 00 02",  # no terminator
        "81" + " 01" * 15 + " FF",  # 17 bytes
    ],
)
def test_packet_parse_rejects_malformed(wire: str) -> None:
    with pytest.raises(FrameError):
        ViscaPacket.parse(H(wire))


def test_message_parse_rejects_another_kind() -> None:
    with pytest.raises(FrameError):
        Power.parse(H("81 01 04 00 07 FF"))
    with pytest.raises(FrameError):
        Ack.parse(H("90 51 FF"))
    assert decode_request(ViscaPacket.parse(H("81 01 7E 01 18 02 FF"))) is None


def test_values_that_cannot_be_encoded_are_refused() -> None:
    with pytest.raises(ValueError, match="pan"):
        PanTiltAbsolute(1, 1, 40000, 0)
    with pytest.raises(ValueError, match="preset"):
        Preset(PresetAction.SET, 255)  # 0xFF would end the packet
    with pytest.raises(ValueError, match="zoom speed"):
        ZoomDrive(ZoomDirection.TELE, 8)
    with pytest.raises(ValueError, match="address"):
        bytes(Power(True, address=9))


# --- VISCA over IP header ---------------------------------------------------------------

IP_MESSAGES: list[tuple[str, ViscaIpMessage]] = [
    (
        "01 00 00 06 00 00 00 01 81 01 04 00 02 FF",
        ViscaIpMessage(PayloadType.VISCA_COMMAND, 1, H("81 01 04 00 02 FF")),
    ),
    (
        "01 10 00 05 00 00 00 02 81 09 04 00 FF",
        ViscaIpMessage(PayloadType.VISCA_INQUIRY, 2, H("81 09 04 00 FF")),
    ),
    (
        "01 11 00 03 FF FF FF FF 90 41 FF",
        ViscaIpMessage(PayloadType.VISCA_REPLY, 0xFFFF_FFFF, H("90 41 FF")),
    ),
    ("02 00 00 01 00 00 00 00 01", ViscaIpMessage(PayloadType.CONTROL_COMMAND, 0, b"\x01")),
    ("02 01 00 01 00 00 00 01 01", ViscaIpMessage(PayloadType.CONTROL_REPLY, 1, b"\x01")),
    ("02 00 00 02 00 00 00 07 0F 01", ViscaIpMessage(PayloadType.CONTROL_COMMAND, 7, H("0F01"))),
]


@pytest.mark.parametrize(("wire", "message"), IP_MESSAGES, ids=[w for w, _ in IP_MESSAGES])
def test_ip_message_golden_bytes(wire: str, message: ViscaIpMessage) -> None:
    data = H(wire)
    assert bytes(message) == data
    assert ViscaIpMessage.parse(data) == message


def test_ip_message_control_error() -> None:
    assert ViscaIpMessage.parse(H("02 00 00 02 00 00 00 07 0F 01")).control_error() is (
        ControlError.SEQUENCE_NUMBER
    )
    assert ViscaIpMessage.parse(H("02 01 00 02 00 00 00 07 0F 02")).control_error() is (
        ControlError.MESSAGE
    )
    assert ViscaIpMessage.parse(H("01 11 00 03 00 00 00 01 90 41 FF")).control_error() is None


def test_ip_datagram_with_two_messages_splits() -> None:
    ack, completion = H("01 11 00 03 00 00 00 09 90 41 FF"), H("01 11 00 03 00 00 00 09 90 51 FF")
    messages = ViscaIpMessage.split(ack + completion)
    assert [m.payload for m in messages] == [H("90 41 FF"), H("90 51 FF")]
    with pytest.raises(FrameError):
        ViscaIpMessage.parse(ack + completion)


@pytest.mark.parametrize(
    "wire",
    [
        "",
        "01 00 00 06 00 00 00",  # header cut short
        "01 00 00 06 00 00 00 01 81 01 04",  # payload cut short
        "01 00 00 00 00 00 00 01",  # empty payload
        "01 00 00 11 00 00 00 01" + " 00" * 17,  # 17-byte payload
    ],
)
def test_ip_message_parse_rejects_malformed(wire: str) -> None:
    with pytest.raises(FrameError):
        ViscaIpMessage.split(H(wire))


# --- stream decoder ---------------------------------------------------------------------


def _drain(decoder: ViscaStreamDecoder) -> tuple[list[ViscaPacket], int]:
    """Every packet the decoder has, and how many times it reported garbage."""
    packets: list[ViscaPacket] = []
    errors = 0
    for _ in range(10_000):  # each call consumes a byte or returns None
        try:
            packet = decoder.next_packet()
        except FrameError:
            errors += 1
            continue
        if packet is None:
            return packets, errors
        packets.append(packet)
    raise AssertionError("the decoder never ran dry")


def test_decoder_splits_and_joins_chunks() -> None:
    stream = H("90 41 FF 90 51 FF 90 50 02 FF")
    decoder = ViscaStreamDecoder()
    got: list[ViscaPacket] = []
    for byte in stream:
        decoder.feed(bytes([byte]))
        got += _drain(decoder)[0]
    assert [bytes(p) for p in got] == [H("90 41 FF"), H("90 51 FF"), H("90 50 02 FF")]


def test_decoder_resyncs_after_garbage() -> None:
    decoder = ViscaStreamDecoder()
    decoder.feed(H("00 12 FF 7F") + H("90 41 FF") + H("81 FF") + H("90 51 FF"))
    packets, errors = _drain(decoder)
    assert [bytes(p) for p in packets] == [H("90 41 FF"), H("90 51 FF")]
    assert errors == 2


def test_decoder_drops_a_packet_without_terminator() -> None:
    decoder = ViscaStreamDecoder()
    decoder.feed(H("81") + b"\x01" * 20 + H("90 41 FF"))
    packets, errors = _drain(decoder)
    assert [bytes(p) for p in packets] == [H("90 41 FF")]
    assert errors == 1


def test_decoder_waits_for_the_rest_of_a_packet() -> None:
    decoder = ViscaStreamDecoder()
    decoder.feed(H("90 50 00 00"))
    assert decoder.next_packet() is None
    decoder.feed(H("06 04 FF"))
    assert decoder.next_packet() == ViscaPacket(0x90, H("50 00 00 06 04"))


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_decoder_fuzz_gives_packets_or_frame_errors(chunks: list[bytes]) -> None:
    decoder = ViscaStreamDecoder()
    stream = b"".join(chunks)
    for chunk in chunks:
        decoder.feed(chunk)
        packets, _ = _drain(decoder)
        for packet in packets:
            assert bytes(packet) in stream
            assert 3 <= len(bytes(packet)) <= 16


_valid_packets = st.builds(
    ViscaPacket,
    st.integers(0x80, 0xFE),
    st.binary(min_size=1, max_size=14).map(lambda b: b.replace(b"\xff", b"\x00")),
)
_garbage = st.binary(max_size=20).map(lambda b: bytes(x & 0x7F for x in b))


@given(st.lists(st.tuples(_garbage, _valid_packets), max_size=10))
def test_decoder_fuzz_recovers_every_packet_between_garbage(
    items: list[tuple[bytes, ViscaPacket]],
) -> None:
    decoder = ViscaStreamDecoder()
    decoder.feed(b"".join(garbage + bytes(packet) for garbage, packet in items))
    packets, _ = _drain(decoder)
    assert packets == [packet for _, packet in items]


@given(_valid_packets)
def test_message_decoders_fuzz_round_trip(packet: ViscaPacket) -> None:
    for message in (decode_request(packet), decode_reply(packet)):
        if message is not None:
            assert bytes(message) == bytes(packet)


@given(st.binary(max_size=60))
def test_ip_header_fuzz_gives_messages_or_frame_error(data: bytes) -> None:
    try:
        messages = ViscaIpMessage.split(data)
    except FrameError:
        return
    assert b"".join(bytes(m) for m in messages) == data


@given(
    st.lists(
        st.builds(
            ViscaIpMessage,
            st.integers(0, 0xFFFF),
            st.integers(0, 2**32 - 1),
            st.binary(min_size=1, max_size=16),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_ip_header_fuzz_round_trip(messages: list[ViscaIpMessage]) -> None:
    assert ViscaIpMessage.split(b"".join(bytes(m) for m in messages)) == messages


@given(st.lists(st.binary(max_size=30), max_size=6))
def test_simulator_serial_session_fuzz(chunks: list[bytes]) -> None:
    session = ViscaSimulator().session()
    for chunk in chunks:
        out = session.receive(chunk)
        decoder = ViscaStreamDecoder()
        decoder.feed(out)
        packets, errors = _drain(decoder)
        assert errors == 0
        assert all(decode_reply(p) is not None for p in packets)


@given(st.lists(st.binary(max_size=30), max_size=6))
def test_simulator_ip_session_fuzz(datagrams: list[bytes]) -> None:
    session = ViscaSimulator().over_ip().session()
    for datagram in datagrams:
        out = session.receive(datagram)
        if out:
            ViscaIpMessage.split(out)


# --- simulator, device side -------------------------------------------------------------


def _ip(sequence: int, wire: str, kind: int = PayloadType.VISCA_COMMAND) -> bytes:
    return bytes(ViscaIpMessage(kind, sequence, H(wire)))


def test_ip_session_replies_with_the_sequence_number() -> None:
    session = ViscaIpSession(ViscaSimulator())
    out = ViscaIpMessage.split(session.receive(_ip(41, "81 01 04 00 03 FF")))
    assert out == [
        ViscaIpMessage(PayloadType.VISCA_REPLY, 41, H("90 41 FF")),
        ViscaIpMessage(PayloadType.VISCA_REPLY, 41, H("90 51 FF")),
    ]


def test_ip_session_refuses_a_repeated_sequence_number_until_reset() -> None:
    camera = ViscaSimulator()
    session = ViscaIpSession(camera)
    session.receive(_ip(5, "81 01 06 03 01 01 00 00 00 01 00 00 00 00 FF"))
    assert camera.pan == 1
    again = session.receive(_ip(5, "81 01 06 03 01 01 00 00 00 01 00 00 00 00 FF"))
    assert again == H("02 00 00 02 00 00 00 05 0F 01")
    assert camera.pan == 1  # not executed twice
    reset = session.receive(H("02 00 00 01 00 00 00 05 01"))
    assert reset == H("02 01 00 01 00 00 00 05 01")
    session.receive(_ip(5, "81 01 06 03 01 01 00 00 00 01 00 00 00 00 FF"))
    assert camera.pan == 2


def test_ip_session_answers_errors_again_on_retransmission() -> None:
    session = ViscaIpSession(ViscaSimulator())
    first = session.receive(_ip(3, "81 01 7E 01 18 02 FF"))
    assert (
        first
        == session.receive(_ip(3, "81 01 7E 01 18 02 FF"))
        == _ip(3, "90 60 02 FF", PayloadType.VISCA_REPLY)
    )


@pytest.mark.parametrize(
    "datagram",
    [
        "01 20 00 05 00 00 00 09 81 01 04 00 FF",  # device setting: not implemented
        "01 11 00 03 00 00 00 09 90 41 FF",  # a reply sent to the camera
        "02 00 00 01 00 00 00 09 07",  # unknown control command
        "01 00 00 09 00 00 00 09 81 01",  # length beyond the datagram
        "BE EF 00 01 00 00 00 09 01",  # unknown payload type
    ],
)
def test_ip_session_reports_abnormal_messages(datagram: str) -> None:
    session = ViscaIpSession(ViscaSimulator())
    assert session.receive(H(datagram)) == H("02 00 00 02 00 00 00 09 0F 02")


def test_serial_session_announces_itself_and_numbers_the_chain() -> None:
    camera = ViscaSimulator(address=3)
    session = camera.session()
    assert session.connected() == H("B0 38 FF")
    assert session.receive(H("88 30 01 FF")) == H("88 30 02 FF")
    assert camera.address == 1
    assert session.receive(H("88 01 00 01 FF")) == H("88 01 00 01 FF")
    assert session.receive(H("81 01 00 01 FF")) == H("90 50 FF")
    assert session.receive(H("82 01 04 00 03 FF")) == b""  # for the next camera
    assert session.receive(H("81 22 FF")) == H("90 62 05 FF")  # nothing runs in socket 2


# --- the client over a pty --------------------------------------------------------------


@pytest.fixture
def sim() -> ViscaSimulator:
    return ViscaSimulator()


@pytest.fixture
async def serial_camera(sim: ViscaSimulator) -> AsyncIterator[ViscaCamera]:
    server = PtyServer(sim)
    server.start()
    camera = await ViscaCamera.open_serial(server.path, timeout=0.2, retries=1)
    try:
        yield camera
    finally:
        await camera.close()
        server.close()


async def test_serial_power_and_status(serial_camera: ViscaCamera, sim: ViscaSimulator) -> None:
    control: CameraControl = serial_camera
    await control.set_power(False)
    assert sim.power is False
    assert await control.status() == CameraStatus(power=False)
    await control.set_power(True)
    assert await control.status() == CameraStatus(power=True, pan=0, tilt=0, zoom=0)


async def test_serial_absolute_move_and_position(
    serial_camera: ViscaCamera, sim: ViscaSimulator
) -> None:
    await serial_camera.pan_tilt_absolute(-1200, 300, 0x18, 0x14)
    assert (sim.pan, sim.tilt) == (-1200, 300)
    assert await serial_camera.pan_tilt_position() == (-1200, 300)
    await serial_camera.pan_tilt_relative(-5000, 10, 1, 1)
    assert await serial_camera.pan_tilt_position() == (-2448, 310)  # stopped at the end stop
    await serial_camera.zoom_absolute(0x2000)
    assert await serial_camera.status() == CameraStatus(True, -2448, 310, 0x2000)
    await serial_camera.home()
    assert await serial_camera.pan_tilt_position() == (0, 0)


@pytest.mark.parametrize("direction", list(Direction))
async def test_serial_drive_directions(
    serial_camera: ViscaCamera, sim: ViscaSimulator, direction: Direction
) -> None:
    await serial_camera.pan_tilt_drive(direction, 8, 8)
    expected_pan = {"left": PanDirection.LEFT, "right": PanDirection.RIGHT}
    expected_tilt = {"up": TiltDirection.UP, "down": TiltDirection.DOWN}
    words = direction.value.split("_")
    assert sim.pan_direction == next(
        (expected_pan[w] for w in words if w in expected_pan), PanDirection.STOP
    )
    assert sim.tilt_direction == next(
        (expected_tilt[w] for w in words if w in expected_tilt), TiltDirection.STOP
    )
    await serial_camera.pan_tilt_stop()
    assert (sim.pan_direction, sim.tilt_direction) == (PanDirection.STOP, TiltDirection.STOP)


async def test_serial_presets(serial_camera: ViscaCamera, sim: ViscaSimulator) -> None:
    await serial_camera.pan_tilt_absolute(500, -100, 10, 10)
    await serial_camera.zoom_absolute(0x1000)
    await serial_camera.preset_set(3)
    assert sim.presets[3] == CameraPosition(500, -100, 0x1000, sim.focus)
    await serial_camera.home()
    await serial_camera.preset_recall(3)
    assert (sim.pan, sim.tilt, sim.zoom) == (500, -100, 0x1000)
    await serial_camera.preset_reset(3)
    assert 3 not in sim.presets
    await serial_camera.preset_recall(3)  # an unset preset is the factory position
    assert (sim.pan, sim.tilt, sim.zoom) == (0, 0, 0)


async def test_serial_zoom_and_focus(serial_camera: ViscaCamera, sim: ViscaSimulator) -> None:
    await serial_camera.zoom_drive(ZoomDirection.TELE, 3)
    assert sim.zoom_direction is ZoomDirection.TELE
    await serial_camera.zoom_drive(ZoomDirection.STOP)
    assert sim.zoom_direction is ZoomDirection.STOP
    with pytest.raises(DeviceRejected) as rejected:
        await serial_camera.focus_absolute(0x2000)  # auto focus is on
    assert rejected.value.code == ViscaErrorCode.NOT_EXECUTABLE
    await serial_camera.set_focus_auto(False)
    assert await serial_camera.focus_is_auto() is False
    await serial_camera.focus_absolute(0x2000)
    assert await serial_camera.focus_position() == 0x2000


async def test_serial_error_replies(serial_camera: ViscaCamera, sim: ViscaSimulator) -> None:
    with pytest.raises(DeviceRejected) as rejected:
        await serial_camera.preset_recall(16)  # the camera has presets 0..15
    assert rejected.value.code == ViscaErrorCode.SYNTAX
    with pytest.raises(DeviceRejected) as rejected:
        await serial_camera.pan_tilt_absolute(0, 0, 0x30, 1)  # speed beyond 0x18
    assert rejected.value.code == ViscaErrorCode.SYNTAX
    await serial_camera.set_power(False)
    with pytest.raises(DeviceRejected, match="not executable") as rejected:
        await serial_camera.home()
    assert rejected.value.code == ViscaErrorCode.NOT_EXECUTABLE


async def test_serial_chain_address_set_and_if_clear() -> None:
    sim = ViscaSimulator(address=5)
    server = PtyServer(sim)
    server.start()
    camera = await ViscaCamera.open_serial(server.path, address=1, timeout=0.2, retries=1)
    try:
        assert await camera.assign_addresses() == 1
        assert sim.address == 1
        await camera.clear_interface()
        await camera.set_power(False)
        assert sim.power is False
    finally:
        await camera.close()
        server.close()


class _Recorder:
    """A device that hears everything and always answers with the same bytes."""

    def __init__(self, answer: bytes = b"") -> None:
        self.heard = bytearray()
        self.answer = answer

    def session(self) -> _Recorder:
        return self

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        self.heard += data
        return self.answer


async def _serial_camera(device: SimulatedDevice) -> tuple[ViscaCamera, PtyServer]:
    server = PtyServer(device)
    server.start()
    return await ViscaCamera.open_serial(server.path, timeout=0.1, retries=2), server


async def test_serial_silent_device_times_out_after_resends() -> None:
    device = _Recorder()
    camera, server = await _serial_camera(device)
    try:
        with pytest.raises(DeviceTimeout, match="3 tries"):
            await camera.set_power(True)
    finally:
        await camera.close()
        server.close()
    decoder = ViscaStreamDecoder()
    decoder.feed(bytes(device.heard))
    assert _drain(decoder) == ([Power(True).to_packet()] * 3, 0)


async def test_serial_garbage_gives_frame_error() -> None:
    camera, server = await _serial_camera(_Recorder(H("01 02 FF 83")))
    try:
        with pytest.raises(FrameError, match="garbage"):
            await camera.power()
    finally:
        await camera.close()
        server.close()


async def test_serial_answer_found_among_garbage_and_other_replies() -> None:
    # garbage, a network change, another camera's ACK, a late completion, then the answer
    camera, server = await _serial_camera(
        _Recorder(H("13 37 FF 90 38 FF A0 41 FF 90 51 FF 90 50 02 FF"))
    )
    try:
        assert await camera.power() is True
    finally:
        await camera.close()
        server.close()


async def test_ip_closed_camera(ip_camera: ViscaIpCamera) -> None:
    await ip_camera.close()
    with pytest.raises(LinkClosed):
        await ip_camera.home()


async def test_serial_closed_link(serial_camera: ViscaCamera) -> None:
    await serial_camera.close()
    with pytest.raises(LinkClosed):
        await serial_camera.home()


# --- the client over UDP ----------------------------------------------------------------


@pytest.fixture
async def udp_port(sim: ViscaSimulator) -> AsyncIterator[int]:
    transport = await serve_visca_ip(sim, "127.0.0.1", 0)
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@pytest.fixture
async def ip_camera(udp_port: int) -> AsyncIterator[ViscaIpCamera]:
    camera = await ViscaIpCamera.connect("127.0.0.1", udp_port, timeout=0.2, retries=2)
    try:
        yield camera
    finally:
        await camera.close()


async def test_ip_power_move_and_position(ip_camera: ViscaIpCamera, sim: ViscaSimulator) -> None:
    control: CameraControl = ip_camera
    await control.set_power(False)
    assert sim.power is False
    assert await control.status() == CameraStatus(power=False)
    await control.set_power(True)
    await control.pan_tilt_absolute(2000, 1296, 0x18, 0x17)
    await control.zoom_absolute(0x4000)
    assert await control.status() == CameraStatus(True, 2000, 1296, 0x4000)


async def test_ip_presets(ip_camera: ViscaIpCamera, sim: ViscaSimulator) -> None:
    await ip_camera.pan_tilt_absolute(-700, 50, 4, 4)
    await ip_camera.preset_set(15)
    await ip_camera.home()
    await ip_camera.preset_recall(15)
    assert await ip_camera.pan_tilt_position() == (-700, 50)


async def test_ip_error_replies(ip_camera: ViscaIpCamera, sim: ViscaSimulator) -> None:
    with pytest.raises(DeviceRejected) as rejected:
        await ip_camera.preset_set(200)
    assert rejected.value.code == ViscaErrorCode.SYNTAX
    sim.power = False
    with pytest.raises(DeviceRejected) as rejected:
        await ip_camera.zoom_absolute(5)
    assert rejected.value.code == ViscaErrorCode.NOT_EXECUTABLE


class _LossyServer(asyncio.DatagramProtocol):
    """The simulator behind a network that loses the reply messages ``lose`` picks."""

    def __init__(self, device: SimulatedDevice, lose: Callable[[ViscaIpMessage], bool]) -> None:
        self._device = device
        self._lose = lose
        self._sessions: dict[tuple[str, int], Session] = {}
        self.heard: list[ViscaIpMessage] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        session = self._sessions.setdefault(addr, self._device.session())
        self.heard += ViscaIpMessage.split(data)
        reply = session.receive(data)
        for message in ViscaIpMessage.split(reply) if reply else []:
            if not self._lose(message):
                self.transport.sendto(bytes(message), addr)


Losing = Callable[[ViscaIpMessage], bool]
StartLossy = Callable[[SimulatedDevice, Losing], Awaitable[tuple[_LossyServer, int]]]


@pytest.fixture
async def lossy() -> AsyncIterator[StartLossy]:
    """Starts `_LossyServer`s on 127.0.0.1; closes them at the end of the test."""
    transports: list[asyncio.DatagramTransport] = []

    async def start(device: SimulatedDevice, lose: Losing) -> tuple[_LossyServer, int]:
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            lambda: _LossyServer(device, lose), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return server, transport.get_extra_info("sockname")[1]

    yield start
    for transport in transports:
        transport.close()


def _lose_first(count: int, wanted: Losing) -> Losing:
    lost: list[ViscaIpMessage] = []

    def lose(message: ViscaIpMessage) -> bool:
        if wanted(message) and len(lost) < count:
            lost.append(message)
            return True
        return False

    return lose


async def test_ip_lost_completion_is_recovered_without_moving_twice(
    lossy: StartLossy, sim: ViscaSimulator
) -> None:
    relative = PanTiltRelative(1, 1, 100, 0)
    lose = _lose_first(2, lambda m: m.payload in (H("90 41 FF"), H("90 51 FF")))
    server, port = await lossy(sim.over_ip(), lose)
    camera = await ViscaIpCamera.connect("127.0.0.1", port, timeout=0.1, retries=2)
    try:
        await camera.execute(relative)
    finally:
        await camera.close()
    assert sim.pan == 100  # moved once
    resent = [m.sequence for m in server.heard if m.payload == bytes(relative)]
    assert resent == [1, 1]  # the same sequence number, as Sony prescribes


async def test_ip_lost_inquiry_answer_is_asked_again(
    lossy: StartLossy, sim: ViscaSimulator
) -> None:
    lose = _lose_first(1, lambda m: m.payload == H("90 50 02 FF"))
    server, port = await lossy(sim.over_ip(), lose)
    camera = await ViscaIpCamera.connect("127.0.0.1", port, timeout=0.1, retries=2)
    try:
        assert await camera.power() is True
    finally:
        await camera.close()
    asked = [m.sequence for m in server.heard if m.payload == H("81 09 04 00 FF")]
    assert asked == [1, 1, 2]  # resent, told it was answered already, asked anew


async def test_ip_silent_device_times_out_after_resends(
    lossy: StartLossy, sim: ViscaSimulator
) -> None:
    server, port = await lossy(sim.over_ip(), lambda m: True)
    with pytest.raises(DeviceTimeout, match="RESET"):
        await ViscaIpCamera.connect("127.0.0.1", port, timeout=0.05, retries=2)
    assert [m.payload_type for m in server.heard] == [PayloadType.CONTROL_COMMAND] * 3

    def all_but_reset(message: ViscaIpMessage) -> bool:
        return message.payload_type != PayloadType.CONTROL_REPLY

    server, port = await lossy(sim.over_ip(), all_but_reset)
    camera = await ViscaIpCamera.connect("127.0.0.1", port, timeout=0.05, retries=2)
    try:
        with pytest.raises(DeviceTimeout, match="3 tries"):
            await camera.home()
    finally:
        await camera.close()
    assert [m.sequence for m in server.heard[1:]] == [1, 1, 1]


async def test_ip_garbage_gives_frame_error(lossy: StartLossy) -> None:
    class Garbage:
        def session(self) -> Garbage:
            return self

        def connected(self) -> bytes:
            return b""

        def receive(self, data: bytes) -> bytes:
            if data == H("02 00 00 01 00 00 00 00 01"):
                return H("02 01 00 01 00 00 00 00 01")
            return _ip(1, "13 37 FF", PayloadType.VISCA_REPLY)

    _, port = await lossy(Garbage(), lambda m: False)
    camera = await ViscaIpCamera.connect("127.0.0.1", port, timeout=0.05, retries=1)
    try:
        with pytest.raises(FrameError):
            await camera.power()
    finally:
        await camera.close()


async def test_ip_client_reads_replies_sent_in_one_datagram(sim: ViscaSimulator) -> None:
    transport = await serve_udp(sim.over_ip(), "127.0.0.1", 0)
    port = transport.get_extra_info("sockname")[1]
    try:
        camera = await ViscaIpCamera.connect("127.0.0.1", port, timeout=0.2)
        try:
            await camera.pan_tilt_absolute(10, 20, 1, 1)
            assert await camera.pan_tilt_position() == (10, 20)
        finally:
            await camera.close()
    finally:
        transport.close()


# --- a third-party client: visca-over-ip -------------------------------------------------


class _LoopbackSocket(socket.socket):
    """A socket whose bind takes a free port on 127.0.0.1."""

    def bind(self, address: object) -> None:
        super().bind(("127.0.0.1", 0))


@pytest.fixture
def third_party_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """visca-over-ip binds its inquiry socket to the camera's own port on every interface,
    which on one host is the port the simulator already holds; its sockets get free
    loopback ports instead. What it sends, and how it reads replies, is unchanged."""
    sockets = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket) if k.isupper()})
    sockets.socket = _LoopbackSocket
    sockets.timeout = socket.timeout
    monkeypatch.setattr(visca_over_ip.camera, "socket", sockets)


async def test_third_party_client_drives_the_udp_simulator(
    third_party_sockets: None, udp_port: int, sim: ViscaSimulator
) -> None:
    def session() -> list[object]:
        results: list[object] = []
        camera = ThirdPartyCamera("127.0.0.1", udp_port)  # RESET, then IF_Clear
        try:
            camera.set_power(False)
            results.append(sim.power)
            camera.set_power(True)
            camera.pantilt(10, 12, pan_position=-1000, tilt_position=400)
            results.append(camera.get_pantilt_position())
            camera.zoom_to(0.25)
            results.append(camera.get_zoom_position())
            camera.save_preset(2)
            camera.pantilt_home()
            results.append((sim.pan, sim.tilt))
            camera.recall_preset(2)
            results.append((sim.pan, sim.tilt, sim.zoom))
            camera.pantilt(-5, 3)
            results.append((sim.pan_direction, sim.tilt_direction))
            camera.pantilt(0, 0)
            camera.zoom(-4)
            results.append(sim.zoom_direction)
            camera.set_focus_mode("manual")
            results.append(camera.get_focus_mode())
            for refused in (lambda: camera.recall_preset(99), lambda: camera.info_display(True)):
                try:
                    refused()
                except ViscaException as exc:
                    results.append(exc.status_code)
        finally:
            camera.close_connection()
        return results

    assert await asyncio.to_thread(session) == [
        False,
        (-1000, 400),
        0x1000,
        (0, 0),
        (-1000, 400, 0x1000),
        (PanDirection.LEFT, TiltDirection.DOWN),
        ZoomDirection.WIDE,
        "manual",
        ViscaErrorCode.SYNTAX,
        ViscaErrorCode.SYNTAX,
    ]
    assert sim.focus_auto is False
