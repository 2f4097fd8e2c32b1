"""The ``media`` topic: live stream rates and loss, the display feed, the camera switch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

from roomsystem.bus import StateBus
from roomsystem.media import yuv
from roomsystem.media.recorder import RecordingError
from roomsystem.media.service import CameraArgs, MediaService
from roomsystem.media.shm import SharedFrameReader
from roomsystem.media.state import MediaState, StreamStats
from roomsystem.meeting.state import MeetingState
from tests.media.conftest import Counted, Peers, wait_for
from tests.media.test_service import LOOPBACK_ONLY, SETTINGS
from tests.util import POLICY


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[tuple[MediaService, StateBus]]:
    bus = StateBus({"media": MediaState(), "meeting": MeetingState(policy=POLICY)})
    service = MediaService(SETTINGS, LOOPBACK_ONLY, bus, state_dir=tmp_path)
    await service.start()
    try:
        yield service, bus
    finally:
        await service.close()


def media_state(bus: StateBus) -> MediaState:
    state = bus.get("media")
    assert isinstance(state, MediaState)
    return state


def stream(bus: StateBus, name: str) -> StreamStats:
    return next(s for s in media_state(bus).streams if s.name == name)


def brightness(counted: Counted) -> float:
    frame = counted.last
    assert frame is not None
    return float(np.asarray(yuv.planes(frame)[0]).mean())  # type: ignore[arg-type]


async def test_the_topic_measures_the_camera_stream_a_peer_receives(
    room: tuple[MediaService, StateBus], peers: Peers
) -> None:
    media, bus = room
    assert media_state(bus).running
    display = media_state(bus).display
    assert display is not None
    assert (display.width, display.height) == (640, 360)
    reader = SharedFrameReader(Path(display.path))
    try:
        assert (reader.width, reader.height) == (640, 360)
    finally:
        reader.close()

    tracks = media.room_tracks("p-ada")
    _, (sender,), (seen,) = await peers.connect([tracks.video])
    media.attach_sender("p-ada", sender)
    await wait_for(lambda: seen.count >= 10, timeout=15, what="the room's camera")
    await wait_for(
        lambda: stream(bus, "camera").fps > 5 and stream(bus, "camera").bitrate_bps > 10_000,
        timeout=5,
        what="camera rates in the media topic",
    )
    camera = stream(bus, "camera")
    assert camera.peers == 1
    assert camera.kind == "video"
    assert camera.target_bitrate_bps >= SETTINGS.min_bitrate_kbps * 1000
    # The receiver's own RTCP reports reach the room (loopback loses nothing).
    await wait_for(
        lambda: bool(media.camera._losses), timeout=10, what="a receiver report from the peer"
    )
    assert stream(bus, "camera").fraction_lost == 0

    # A report of loss, as a peer on a bad link sends it, shows as that peer's loss.
    lossy = RtcpReceiverInfo(
        ssrc=sender._ssrc,
        fraction_lost=64,
        packets_lost=12,
        highest_sequence=1000,
        jitter=0,
        lsr=0,
        dlsr=0,
    )
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1234, reports=[lossy]))
    assert media.camera.fraction_lost == 0.25
    assert media.camera.packets_lost == 12
    # Measured now: the peer's next real report would replace this one within a second.
    media._stats.measure(media._all_streams())
    measured = next(s for s in media.snapshot().streams if s.name == "camera")
    assert (measured.fraction_lost, measured.packets_lost) == (0.25, 12)
    media.detach("p-ada")
    assert media.camera.packets_lost == 0


async def test_the_camera_turned_off_sends_black_and_stops_capture(
    room: tuple[MediaService, StateBus], peers: Peers
) -> None:
    media, bus = room
    tracks = media.room_tracks("p-ada")
    _, _, (seen,) = await peers.connect([tracks.video])
    await wait_for(lambda: seen.count >= 5, timeout=15, what="the room's camera")
    assert brightness(seen) > 40  # the test picture

    media.set_camera_on(False)
    assert not media_state(bus).camera_on
    assert not media._video_capture.running
    await wait_for(lambda: brightness(seen) < 20, timeout=5, what="a black picture")

    media.set_camera_on(True)
    assert media._video_capture.running
    await wait_for(lambda: brightness(seen) > 40, timeout=5, what="the picture back")


async def test_the_camera_comes_back_on_when_the_meeting_ends(
    room: tuple[MediaService, StateBus],
) -> None:
    media, bus = room
    bus.publish("meeting", MeetingState(in_meeting=True, id="1", policy=POLICY))
    for _ in range(5):  # the service follows the bus in a task: let it see the meeting
        await asyncio.sleep(0)
    (camera,) = media.commands()
    assert camera.path == "media/camera"
    result = await camera.handler(CameraArgs(on=False))
    assert isinstance(result, MediaState)
    assert not result.camera_on
    bus.publish("meeting", MeetingState(policy=POLICY))
    await wait_for(lambda: media_state(bus).camera_on, timeout=5, what="the camera back on")


async def test_a_recording_that_cannot_start_is_in_the_topic(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the recordings should go")
    bus = StateBus({"media": MediaState(), "meeting": MeetingState(policy=POLICY)})
    settings = SETTINGS.model_copy(update={"recordings_dir": blocked})
    media = MediaService(settings, LOOPBACK_ONLY, bus, state_dir=tmp_path)
    await media.start()
    try:
        with pytest.raises(RecordingError, match="not-a-directory"):
            await media.recorder.start("1234")
        await wait_for(
            lambda: "not-a-directory" in (media_state(bus).recording_error or ""),
            timeout=5,
            what="the recording error in the topic",
        )
        assert not media_state(bus).recording
    finally:
        await media.close()
    assert not media_state(bus).running


async def test_muted_participants_are_labelled_in_the_picture(
    room: tuple[MediaService, StateBus],
) -> None:
    media, _ = room
    media.add_participant("p-ada", "Ada")
    media.add_participant("p-bo", "Bo")
    media.set_muted("p-bo", True)
    _, layout = media.compositor.compose()
    muted = {tile.name: tile.muted for tile in layout.tiles}
    assert muted == {"Ada": False, "Bo": True}


async def test_an_empty_picture_says_that_the_room_waits_for_others(
    room: tuple[MediaService, StateBus],
) -> None:
    media, _ = room
    empty, _ = media.compositor.compose()
    luma = np.asarray(yuv.planes(empty)[0])
    middle = luma[150:210, 160:480]  # 640x360: the text is in the middle
    assert middle.max() > 200  # white letters
    media.add_participant("p-ada", "Ada")
    with_someone, _ = media.compositor.compose()
    assert np.asarray(yuv.planes(with_someone)[0])[150:210, 160:480].max() < 200
