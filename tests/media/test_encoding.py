"""Encode once: real aiortc peers on loopback receive one shared encoder's packets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from roomsystem.media.capture import VideoCapture, VideoSource
from roomsystem.media.encoding import (
    BitrateByWeakestPeer,
    EncodedStream,
    PacketTrack,
    VideoEncoder,
    VideoEncoderConfig,
    attach_sender,
)
from tests.media.conftest import Peers, wait_for

SMALL = VideoSource(width=320, height=240, frame_rate=30)


class Camera:
    """The synthetic camera feeding one shared stream."""

    def __init__(self, stream: EncodedStream, encoder: VideoEncoder) -> None:
        self.stream = stream
        self.encoder = encoder
        self.capture = VideoCapture(SMALL, stream.push)


async def _camera(codec: str = "vp8") -> Camera:
    config = VideoEncoderConfig(codec=codec, min_bitrate=100_000, start_bitrate=800_000)  # type: ignore[arg-type]
    encoder = VideoEncoder(config)
    stream = EncodedStream(
        "video",
        encoder,
        name="camera",
        bitrate=BitrateByWeakestPeer(config),
    )
    stream.start()
    camera = Camera(stream, encoder)
    camera.capture.start()
    return camera


@pytest.fixture
async def camera() -> AsyncIterator[Camera]:
    made = await _camera()
    try:
        yield made
    finally:
        made.capture.stop()
        made.stream.stop()


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_three_peers_decode_one_encode(peers: Peers, codec: str) -> None:
    camera = await _camera(codec)
    try:
        mime = {"vp8": "video/VP8", "h264": "video/H264"}[codec]
        received = []
        for _ in range(3):
            _, _, (counted,) = await peers.connect([camera.stream.subscribe()], video_mime=mime)
            received.append(counted)
        await wait_for(lambda: all(c.count >= 20 for c in received), what="20 frames per peer")
        captured, encoded = camera.capture.frames, camera.stream.frames_encoded
        # One encode per captured frame, whatever the number of peers.
        assert encoded <= captured
        assert sum(c.count for c in received) > encoded
        last = received[0].last
        assert isinstance(last, av.VideoFrame)
        assert (last.width, last.height) == (320, 240)
    finally:
        camera.capture.stop()
        camera.stream.stop()


async def test_a_peers_picture_loss_forces_one_shared_keyframe(
    peers: Peers, camera: Camera
) -> None:
    track = camera.stream.subscribe()
    receiver, (sender,), (counted,) = await peers.connect([track])
    camera.stream.attach_sender("peer", sender)
    await wait_for(lambda: counted.count >= 10, what="10 frames")
    forced = camera.stream.keyframes_forced
    await asyncio.sleep(0.4)  # past the keyframe hold-off
    rtp_receiver = receiver.getReceivers()[0]
    await rtp_receiver._send_rtcp_pli(sender._ssrc)
    await wait_for(lambda: camera.stream.keyframes_forced == forced + 1, what="a forced keyframe")
    count = counted.count
    await wait_for(lambda: counted.count > count + 5, what="frames after the keyframe")


async def test_bitrate_follows_the_weakest_peers_remb(peers: Peers, camera: Camera) -> None:
    connections = []
    for _ in range(2):
        receiver, (sender,), (counted,) = await peers.connect(
            [camera.stream.subscribe()], munge_offer=_without_remb
        )
        camera.stream.attach_sender(sender, sender)
        connections.append((receiver, sender, counted))
    await wait_for(lambda: all(c.count >= 5 for _, _, c in connections), what="frames")

    async def remb(index: int, bitrate: int) -> None:
        receiver, sender, _ = connections[index]
        await _send_remb(receiver, sender._ssrc, bitrate)

    await remb(0, 1_200_000)
    await remb(1, 300_000)
    await wait_for(lambda: camera.encoder.bitrate == 300_000, what="the weakest peer's bitrate")
    await remb(1, 50_000)  # below the floor: clamped
    await wait_for(lambda: camera.encoder.bitrate == 100_000, what="the configured minimum")
    camera.stream.forget_peer(connections[1][1])
    await wait_for(lambda: camera.encoder.bitrate == 1_200_000, what="the remaining peer's rate")
    count = connections[0][2].count
    await wait_for(lambda: connections[0][2].count > count + 5, what="frames after re-tuning")


async def test_a_late_peer_starts_at_a_keyframe(camera: Camera) -> None:
    early = camera.stream.subscribe()
    await wait_for(lambda: early._queue.qsize() > 3, what="packets for the first peer")
    late = camera.stream.subscribe()
    first = await asyncio.wait_for(late.recv(), 5)
    assert first.is_keyframe
    early.stop()
    late.stop()
    assert camera.stream.subscribers == 0


async def test_a_stalled_peer_is_resynchronised_at_a_keyframe(camera: Camera) -> None:
    stalled = camera.stream.subscribe()
    await wait_for(lambda: stalled.resyncs >= 1, timeout=5, what="a resync")
    packet = await asyncio.wait_for(stalled.recv(), 5)
    assert packet.is_keyframe
    stalled.stop()
    with pytest.raises(MediaStreamError):
        await stalled.recv()


def test_weakest_peer_bitrate_is_clamped_and_forgets() -> None:
    config = VideoEncoderConfig(min_bitrate=200_000, max_bitrate=1_000_000, start_bitrate=700_000)
    bitrate = BitrateByWeakestPeer(config)
    assert bitrate.target == 700_000
    bitrate.report("a", 5_000_000)
    assert bitrate.target == 1_000_000
    bitrate.report("b", 400_000)
    assert bitrate.target == 400_000
    bitrate.report("c", 10)
    assert bitrate.target == 200_000
    bitrate.forget("c")
    bitrate.forget("unknown")
    assert bitrate.target == 400_000


def _without_remb(sdp: str) -> str:
    # The receivers' own bandwidth estimates would race the ones a test sends.
    return "\r\n".join(line for line in sdp.split("\r\n") if "goog-remb" not in line)


async def _send_remb(receiver: RTCPeerConnection, ssrc: int, bitrate: int) -> None:
    fci = pack_remb_fci(bitrate, [ssrc])
    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1234, media_ssrc=0, fci=fci)
    await receiver.getReceivers()[0]._send_rtcp(packet)


async def test_feedback_follows_a_replaced_track(peers: Peers) -> None:
    first, second = await _camera(), await _camera()
    try:
        receiver, (sender,), (counted,) = await peers.connect(
            [first.stream.subscribe()], munge_offer=_without_remb
        )
        attach_sender("peer", sender)
        attach_sender("peer", sender)  # again: no second wrapper
        await wait_for(lambda: counted.count >= 5, what="frames of the first stream")
        await _send_remb(receiver, sender._ssrc, 300_000)
        await wait_for(lambda: first.encoder.bitrate == 300_000, what="the first stream's rate")

        abandoned = sender.track
        sender.replaceTrack(second.stream.subscribe())
        attach_sender("peer", sender)
        count = counted.count
        await wait_for(lambda: counted.count > count + 10, what="frames of the second stream")
        await _send_remb(receiver, sender._ssrc, 400_000)
        await wait_for(lambda: second.encoder.bitrate == 400_000, what="the second stream's rate")
        assert first.stream._bitrate is not None
        assert first.stream._bitrate.target == 800_000  # the moved sender's estimate is gone

        await asyncio.sleep(0.5)
        forced_first, forced_second = first.stream.keyframes_forced, second.stream.keyframes_forced
        await receiver.getReceivers()[0]._send_rtcp_pli(sender._ssrc)
        await wait_for(
            lambda: second.stream.keyframes_forced == forced_second + 1, what="a keyframe"
        )
        await asyncio.sleep(1.5)  # the abandoned track overflows, unread
        assert isinstance(abandoned, PacketTrack)
        assert abandoned.resyncs >= 1
        assert first.stream.keyframes_forced == forced_first
    finally:
        for camera in (first, second):
            camera.capture.stop()
            camera.stream.stop()
