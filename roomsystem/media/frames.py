"""Decoded frames for several consumers: one producer, a `FrameTrack` per consumer.

Used for the composed display picture, the mixed speaker audio, and wherever aiortc
should get raw frames (its per-sender encoder then encodes them once per peer).
"""

from __future__ import annotations

import asyncio
from typing import Literal

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

Frame = av.VideoFrame | av.AudioFrame

# A video consumer only wants the newest picture; audio must not lose 20 ms chunks.
QUEUE_FRAMES = {"video": 1, "audio": 25}


class FrameTrack(MediaStreamTrack):
    """One consumer's frames: ``recv()`` returns the producer's frames as they come."""

    def __init__(self, fanout: FrameFanout) -> None:
        super().__init__()
        self.kind = fanout.kind
        self._fanout = fanout
        self._queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._limit = QUEUE_FRAMES[fanout.kind]

    def deliver(self, frame: Frame) -> None:
        while self._queue.qsize() >= self._limit:
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self) -> Frame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        if self.readyState == "live":
            self._fanout.unsubscribe(self)
            self._queue.put_nowait(None)
        super().stop()


class FrameFanout:
    """Hands every frame to every subscribed `FrameTrack`, on the event loop."""

    def __init__(self, kind: Literal["audio", "video"]) -> None:
        self.kind = kind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tracks: set[FrameTrack] = set()

    def subscribe(self) -> FrameTrack:
        """A new consumer (on the event loop, which then receives every frame)."""
        self._loop = asyncio.get_running_loop()
        track = FrameTrack(self)
        self._tracks.add(track)
        return track

    def unsubscribe(self, track: FrameTrack) -> None:
        self._tracks.discard(track)

    @property
    def subscribers(self) -> int:
        return len(self._tracks)

    def publish(self, frame: Frame) -> None:
        """Deliver ``frame`` (on the event loop)."""
        for track in tuple(self._tracks):
            track.deliver(frame)

    def publish_threadsafe(self, frame: Frame) -> None:
        """Deliver ``frame`` from another thread."""
        if self._tracks and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self.publish, frame)
            except RuntimeError:
                return  # the loop has closed: nobody is left to deliver to

    def stop(self) -> None:
        for track in tuple(self._tracks):
            track.stop()
