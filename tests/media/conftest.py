"""Real aiortc peers on loopback (host candidates 127.0.0.1 only, no ICE servers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from roomsystem.media.ice import host_addresses, rtc_configuration

LOOPBACK = "127.0.0.1"


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    with host_addresses([LOOPBACK]):
        yield


@dataclass
class Counted:
    """What one receiving peer decoded from one track."""

    count: int = 0
    last: av.VideoFrame | av.AudioFrame | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Peers:
    """Connected sender/receiver pairs; everything is closed and awaited at teardown."""

    def __init__(self) -> None:
        self.pcs: list[RTCPeerConnection] = []
        self.tasks: list[asyncio.Task[None]] = []

    def new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration())
        self.pcs.append(pc)
        return pc

    async def connect(
        self,
        tracks: list[MediaStreamTrack],
        *,
        video_mime: str = "video/VP8",
        munge_offer: Callable[[str], str] = lambda sdp: sdp,
    ) -> tuple[RTCPeerConnection, list[RTCRtpSender], list[Counted]]:
        """A sender with ``tracks`` and a receiver that decodes and keeps every frame."""
        sender, receiver = self.new_pc(), self.new_pc()
        senders = []
        for track in tracks:
            transceiver = sender.addTransceiver(track, direction="sendonly")
            if track.kind == "video":
                codecs = RTCRtpSender.getCapabilities("video").codecs
                preferred = [c for c in codecs if c.mimeType in (video_mime, "video/rtx")]
                transceiver.setCodecPreferences(preferred)
            senders.append(transceiver.sender)
        counted = [Counted() for _ in tracks]
        arrived = iter(counted)

        @receiver.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(_consume(track, next(arrived))))

        await sender.setLocalDescription(await sender.createOffer())
        offer = munge_offer(sender.localDescription.sdp)
        assert f" {LOOPBACK} " in offer
        assert "typ srflx" not in offer
        await receiver.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        return receiver, senders, counted

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _consume(track: MediaStreamTrack, counted: Counted) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            assert isinstance(frame, av.VideoFrame | av.AudioFrame)
            counted.count += 1
            counted.last = frame
    counted.ended.set()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    created = Peers()
    try:
        yield created
    finally:
        await created.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.02)
