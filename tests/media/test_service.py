"""The media service in a meeting: real aiortc participants on loopback, both ways."""

from __future__ import annotations

import asyncio
import fractions
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from roomsystem.bus import StateBus
from roomsystem.config import MediaSettings, WebRTCSettings
from roomsystem.devices.state import DevicesState, RoomAudio
from roomsystem.media import yuv
from roomsystem.media.playback import PlaybackError, at_volume, open_speaker
from roomsystem.media.recorder import RecordingError
from roomsystem.media.service import MediaService
from roomsystem.media.state import MediaState
from tests.media.conftest import Counted, Peers, _consume, wait_for

SETTINGS = MediaSettings(video_size="640x360", frame_rate=15)
LOOPBACK_ONLY = WebRTCSettings(ice_host_addresses=("127.0.0.1",))


@pytest.fixture
async def media(tmp_path: Path) -> AsyncIterator[MediaService]:
    service = MediaService(SETTINGS, LOOPBACK_ONLY, None, state_dir=tmp_path)
    await service.start()
    try:
        yield service
    finally:
        await service.close()


@dataclass
class Participant:
    """A remote participant: sends a test picture and a tone, decodes the room."""

    id: str
    pc: RTCPeerConnection
    players: list[MediaPlayer]
    audio: Counted
    video: Counted


async def join(media: MediaService, peers: Peers, pid: str, name: str, tone: int) -> Participant:
    """Connect a participant the way the signalling does: the room offers."""
    room_pc, remote_pc = peers.new_pc(), peers.new_pc()
    tracks = media.room_tracks(pid)
    for track in (tracks.audio, tracks.video):
        transceiver = room_pc.addTransceiver(track, direction="sendrecv")
        media.prefer_codecs(transceiver)
        media.attach_sender(pid, transceiver.sender)
    media.add_participant(pid, name)
    room_pc.on("track", lambda track: media.set_track(pid, track))

    counted = {"audio": Counted(), "video": Counted()}

    @remote_pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        peers.tasks.append(asyncio.ensure_future(_consume(track, counted[track.kind])))

    camera = MediaPlayer("testsrc2=size=320x240:rate=15", format="lavfi")
    mic = MediaPlayer(f"sine=frequency={tone}:sample_rate=48000", format="lavfi")
    await room_pc.setLocalDescription(await room_pc.createOffer())
    await remote_pc.setRemoteDescription(room_pc.localDescription)
    assert mic.audio is not None
    assert camera.video is not None
    remote_pc.addTrack(mic.audio)
    remote_pc.addTrack(camera.video)
    await remote_pc.setLocalDescription(await remote_pc.createAnswer())
    answer = remote_pc.localDescription
    await room_pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
    return Participant(pid, remote_pc, [camera, mic], counted["audio"], counted["video"])


def _stop(participants: list[Participant]) -> None:
    for participant in participants:
        for player in participant.players:
            for track in (player.audio, player.video):
                if track is not None:
                    track.stop()


async def test_participants_see_and_hear_the_room_and_are_composed(
    media: MediaService, peers: Peers
) -> None:
    speaker = media.speaker.subscribe()
    ada = await join(media, peers, "p-ada", "Ada", 440)
    grace = await join(media, peers, "p-grace", "Grace", 880)
    try:
        everyone = [ada, grace]
        await wait_for(
            lambda: all(p.video.count >= 10 and p.audio.count >= 20 for p in everyone),
            timeout=20,
            what="the room's picture and sound at both participants",
        )

        def both_shown() -> bool:
            layout = media.display.layout()
            return (
                layout is not None
                and all(t.has_video for t in layout.tiles)
                and ({t.name for t in layout.tiles} == {"Ada", "Grace"})
            )

        await wait_for(both_shown, timeout=10, what="both participants' pictures on the display")
        frame = media.display.latest()
        assert frame is not None
        assert (frame.width, frame.height) == (640, 360)
        assert media.mixer.active_speaker in {"p-ada", "p-grace"}
        layout = media.display.layout()
        assert layout is not None
        assert sum(t.speaking for t in layout.tiles) == 1

        mixed = [await asyncio.wait_for(speaker.recv(), 5) for _ in range(10)]
        assert all(isinstance(f, av.AudioFrame) and f.sample_rate == 48000 for f in mixed)
        loudest = max(int(np.abs(f.to_ndarray()).max()) for f in mixed)
        assert loudest > 1000  # the participants' tones, not silence

        media.set_muted("p-ada", True)
        media.set_muted("p-grace", True)
        await asyncio.sleep(0.1)
        quiet = [await asyncio.wait_for(speaker.recv(), 5) for _ in range(30)][-5:]
        assert max(int(np.abs(f.to_ndarray()).max()) for f in quiet) == 0

        await media.remove_participant("p-grace")
        media.detach("p-grace")
        await wait_for(
            lambda: [t.name for t in media.display.layout().tiles] == ["Ada"],  # type: ignore[union-attr]
            what="Grace's tile to go",
        )
        assert media.camera.subscribers == 1
    finally:
        speaker.stop()
        _stop([ada, grace])


async def test_a_recording_has_the_picture_the_mix_and_each_participant(
    media: MediaService, peers: Peers, tmp_path: Path
) -> None:
    ada = await join(media, peers, "p-ada", "Ada", 440)
    grace = await join(media, peers, "p-grace", "Grace", 880)
    try:
        await wait_for(lambda: media.display.frames > 5, timeout=20, what="composed frames")
        await media.recorder.start("1234567890")
        path = media.recorder.path
        assert path is not None
        await wait_for(
            lambda: media.recorder.video_frames > 15,
            timeout=15,
            what="recorded frames",
        )
        await asyncio.sleep(1)
        await media.recorder.stop()
        await media.recorder.stop()  # idempotent
    finally:
        _stop([ada, grace])

    assert path.parent == tmp_path / "recordings"
    with av.open(str(path)) as container:
        assert container.metadata["creation_time"].endswith("Z")
        kinds = [s.type for s in container.streams]
        assert kinds == ["video"] + ["audio"] * 10
        titles = [s.metadata.get("title") for s in container.streams]
        assert titles[:3] == ["composed video", "meeting mix", "room microphone"]
        packets: dict[int, int] = {}
        for packet in container.demux():
            if packet.size:
                packets[packet.stream.index] = packets.get(packet.stream.index, 0) + 1
    assert packets[0] > 15  # composed video
    assert packets[1] > 50  # the meeting mix: 20 ms each
    log = [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]
    tracks = {e["name"]: e["track"] for e in log if e["event"] == "track"}
    assert set(tracks) == {"Ada", "Grace"}
    for track in tracks.values():
        assert packets[track] > 20  # each participant's own audio
    assert log[0]["event"] == "started"
    assert log[-1]["event"] == "stopped"


async def test_a_recording_that_cannot_be_written_says_why(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    settings = SETTINGS.model_copy(update={"recordings_dir": blocked / "recordings"})
    service = MediaService(settings, LOOPBACK_ONLY, None, state_dir=tmp_path)
    await service.start()
    try:
        with pytest.raises(RecordingError, match="cannot create"):
            await service.recorder.start("1234567890")
        assert not service.recorder.recording
        with pytest.raises(RecordingError, match="cannot name a recording file"):
            await service.recorder.start("../etc")
    finally:
        await service.close()


async def test_participants_get_each_other_encoded_once(media: MediaService, peers: Peers) -> None:
    ada = await join(media, peers, "p-ada", "Ada", 440)
    try:
        receivers = []
        for viewer in ("p-grace", "p-alan"):
            tracks = media.forward_tracks("p-ada", viewer)
            _, senders, counted = await peers.connect([tracks.audio, tracks.video])
            for sender in senders:
                media.attach_sender(viewer, sender)
            receivers.append(counted)
        await wait_for(
            lambda: all(a.count >= 20 and v.count >= 10 for a, v in receivers),
            timeout=20,
            what="Ada's sound and picture at both viewers",
        )
        picture = receivers[0][1].last
        assert isinstance(picture, av.VideoFrame)
        assert (picture.width, picture.height) == (320, 240)  # Ada's camera, not the room's
        forward = media._forwards["p-ada"]
        assert forward.video.subscribers == 2
        assert forward.video.frames_encoded < receivers[0][1].count + receivers[1][1].count

        media.set_muted("p-ada", True)
        await asyncio.sleep(0.5)
        assert isinstance(receivers[0][0].last, av.AudioFrame)
        await wait_for(
            lambda: int(np.abs(receivers[0][0].last.to_ndarray()).max()) < 50,  # type: ignore[union-attr]
            timeout=5,
            what="silence from a muted participant",
        )
        media.detach("p-grace")
        assert forward.video.subscribers == 1
        with pytest.raises(KeyError, match="p-nobody"):
            media.forward_tracks("p-nobody", "p-grace")
    finally:
        _stop([ada])


async def test_a_laptop_share_is_shown_and_sent_to_participants(
    media: MediaService, peers: Peers
) -> None:
    track = media.content_track("p-ada")
    _, (sender,), (counted,) = await peers.connect([track])
    media.attach_sender("p-ada", sender)
    media.add_participant("p-ada", "Ada")
    media.share_display.share_started("share-1", "Grace's laptop")
    for index in range(150):
        picture = yuv.blank(1280, 720, y=60 + index % 100)
        picture.pts, picture.time_base = index * 3000, fractions.Fraction(1, 90000)
        media.share_display.share_frame(picture)
        await asyncio.sleep(1 / 30)
        layout = media.display.layout()
        if counted.count >= 10 and layout is not None and layout.content_by:
            break
    assert counted.count >= 10
    layout = media.display.layout()
    assert layout is not None
    assert layout.content_by == "Grace's laptop"
    assert [t.name for t in layout.tiles] == ["Ada"]
    media.share_display.share_ended("share-1")
    await wait_for(lambda: media.display.layout().content is None, what="the share to end")  # type: ignore[union-attr]


async def test_an_odd_picture_from_a_participant_is_still_shown(media: MediaService) -> None:
    media.add_participant("p-odd", "Odd")
    odd = av.VideoFrame(321, 241, "rgb24")
    media.compositor._participants["p-odd"].picture = odd
    media.compositor._changed.set()
    await wait_for(
        lambda: bool((layout := media.display.layout()) and any(t.has_video for t in layout.tiles)),
        what="the odd picture composed",
    )


async def test_the_room_can_send_h264(peers: Peers, tmp_path: Path) -> None:
    settings = SETTINGS.model_copy(update={"video_codec": "h264"})
    service = MediaService(settings, LOOPBACK_ONLY, None, state_dir=tmp_path)
    await service.start()
    try:
        assert service.video_mime == "video/H264"
        ada = await join(service, peers, "p-ada", "Ada", 440)
        try:
            await wait_for(lambda: ada.video.count >= 10, timeout=20, what="H.264 frames")
            answer = ada.pc.localDescription.sdp
            assert "H264/90000" in answer
            assert "VP8/90000" not in answer
        finally:
            _stop([ada])
    finally:
        await service.close()


def _loudest(frame: av.AudioFrame | av.VideoFrame | None) -> int:
    assert isinstance(frame, av.AudioFrame)
    return int(np.abs(frame.to_ndarray()).max())


async def test_the_room_mic_follows_the_devices_mute(peers: Peers, tmp_path: Path) -> None:
    bus = StateBus(
        {"devices": DevicesState(audio=RoomAudio(mic_muted=True)), "media": MediaState()}
    )
    service = MediaService(SETTINGS, LOOPBACK_ONLY, bus, state_dir=tmp_path)
    await service.start()
    try:
        tracks = service.room_tracks("p-ada")
        _, _, (heard,) = await peers.connect([tracks.audio])
        await wait_for(lambda: heard.count >= 25, timeout=15, what="the room's sound")
        assert _loudest(heard.last) == 0
        bus.publish("devices", DevicesState(audio=RoomAudio(mic_muted=False, volume=30)))
        await wait_for(lambda: _loudest(heard.last) > 1000, timeout=5, what="the tone unmuted")
        assert service._volume == 30
    finally:
        await service.close()


async def test_a_missing_speaker_leaves_the_meeting_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = SETTINGS.model_copy(update={"speaker": "hw:97,0"})
    service = MediaService(settings, LOOPBACK_ONLY, None, state_dir=tmp_path)
    await service.start()
    try:
        assert service._playback is None
        assert "hw:97,0" in caplog.text
        tracks = service.room_tracks("p-ada")
        packet = await asyncio.wait_for(tracks.video.recv(), 10)
        assert packet.is_keyframe
    finally:
        await service.close()


def test_the_speaker_plays_at_the_room_volume() -> None:
    frame = av.AudioFrame.from_ndarray(
        np.full((1, 1920), 10000, dtype=np.int16), format="s16", layout="stereo"
    )
    frame.sample_rate = 48000
    assert _loudest(at_volume(frame, 100)) == 10000
    assert _loudest(at_volume(frame, 50)) == 5000
    assert _loudest(at_volume(frame, 0)) == 0
    with pytest.raises(PlaybackError, match="hw:97,0"):
        open_speaker("hw:97,0")


def test_tracks_before_the_service_starts_are_refused(tmp_path: Path) -> None:
    service = MediaService(SETTINGS, LOOPBACK_ONLY, None, state_dir=tmp_path)
    with pytest.raises(RuntimeError, match="has not started"):
        service.room_tracks("p-ada")
    with pytest.raises(RuntimeError, match="has not started"):
        service.add_participant("p-ada", "Ada")
