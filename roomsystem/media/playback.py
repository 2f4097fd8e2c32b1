"""The room speaker: remote participants' mix played on an ALSA device at the room's volume.

The mix (`AudioMixer.speaker`) is read on the event loop and written to the device by a
named thread, so a slow or blocking sound card never stalls the loop. The volume is the
room's (``devices.audio.volume``, 0 to 100), applied to the samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av.container import OutputContainer

from roomsystem.media.encoding import AUDIO_RATE

logger = logging.getLogger(__name__)

QUEUE_CHUNKS = 10  # 200 ms: more would only add delay to what the room hears


class PlaybackError(Exception):
    """The speaker device could not be opened or written."""


def at_volume(frame: av.AudioFrame, volume: int) -> av.AudioFrame:
    """``frame`` (s16) scaled to ``volume`` percent; 100 is unchanged, 0 silent."""
    if volume >= 100:
        return frame
    samples = frame.to_ndarray().astype(np.int32) * max(volume, 0) // 100
    scaled = av.AudioFrame.from_ndarray(
        samples.astype(np.int16), format=frame.format.name, layout=frame.layout.name
    )
    scaled.sample_rate = frame.sample_rate
    scaled.pts = frame.pts
    if frame.time_base is not None:
        scaled.time_base = frame.time_base
    return scaled


def open_speaker(device: str) -> tuple[OutputContainer, av.audio.stream.AudioStream]:
    """Open ALSA ``device`` for 48 kHz stereo s16 playback."""
    try:
        container = av.open(device, mode="w", format="alsa")
        assert isinstance(container, OutputContainer)
        stream = container.add_stream("pcm_s16le", rate=AUDIO_RATE, layout="stereo")
        container.start_encoding()  # opens the device now, so a bad name fails here
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise PlaybackError(f"cannot open the speaker {device!r}: {exc}") from exc
    return container, stream


class SpeakerPlayback:
    """Plays a track of s16 48 kHz stereo frames on an ALSA device until stopped."""

    def __init__(self, device: str, volume: Callable[[], int]) -> None:
        self.device = device
        self._volume = volume
        self._chunks: queue.Queue[av.AudioFrame | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._thread: threading.Thread | None = None
        self._reader: asyncio.Task[None] | None = None
        self._track: MediaStreamTrack | None = None
        self.error: str | None = None
        self.chunks_played = 0

    def start(self, track: MediaStreamTrack) -> None:
        """Open the device (raises `PlaybackError`) and play ``track``."""
        container, stream = open_speaker(self.device)
        self._track = track
        self._thread = threading.Thread(
            target=self._play, args=(container, stream), name="speaker", daemon=True
        )
        self._thread.start()
        self._reader = asyncio.ensure_future(self._read(track))

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._track is not None:
            self._track.stop()
            self._track = None
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(self._chunks.put, None)
            await asyncio.to_thread(thread.join, 5)

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                with contextlib.suppress(queue.Full):  # the device is behind: skip 20 ms
                    self._chunks.put_nowait(at_volume(frame, self._volume()))

    def _play(self, container: OutputContainer, stream: av.audio.stream.AudioStream) -> None:
        try:
            while (frame := self._chunks.get()) is not None:
                for packet in stream.encode(frame):
                    container.mux(packet)
                self.chunks_played += 1
        except (av.FFmpegError, OSError) as exc:
            self.error = f"the speaker {self.device!r} failed: {exc}"
            logger.error("%s", self.error)
        finally:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()
