"""Remote participants' audio mixed for the room speaker, and the meeting's whole mix.

Every input (a participant's WebRTC audio track, and the room's own microphone) is
resampled to 48 kHz stereo s16 and cut into 20 ms chunks. Every 20 ms the mixer takes one
chunk from each input and makes two mixes:

* the speaker mix: participants only (the room must not hear its own microphone back);
* the meeting mix: participants and the room, for the recorder.

It also keeps each input's level, from which the compositor picks the active speaker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from roomsystem.media.encoding import AUDIO_FRAME_SAMPLES, AUDIO_RATE, AUDIO_TIME_BASE
from roomsystem.media.frames import FrameFanout

logger = logging.getLogger(__name__)

ROOM = "room"  # the input key of the room's own microphone
CHUNK_S = AUDIO_FRAME_SAMPLES / AUDIO_RATE
# Chunks an input may queue (jitter); beyond that the oldest go: latency must not grow.
MAX_BACKLOG = 10
# Level smoothing: a speaker stays "speaking" through short pauses between words.
LEVEL_DECAY = 0.92
SPEAKING_LEVEL = 0.02
# The active speaker changes only when someone else has been louder this long.
SPEAKER_HOLD_S = 1.0

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True)
class MixedChunk:
    """One 20 ms step of the mixer, as the recorder takes it."""

    at: float  # wall-clock time (time.time()) of the chunk's start
    speaker: av.AudioFrame  # participants only
    meeting: av.AudioFrame  # participants and the room
    inputs: dict[str, av.AudioFrame]  # each input that had audio in this step


@dataclass
class _Input:
    name: str
    chunks: collections.deque[Samples] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_BACKLOG)
    )
    muted: bool = False
    level: float = 0.0
    task: asyncio.Task[None] | None = None
    resampler: av.AudioResampler = field(
        default_factory=lambda: av.AudioResampler(
            format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_FRAME_SAMPLES
        )
    )

    def feed(self, frame: av.AudioFrame) -> None:
        for chunk in self.resampler.resample(frame):
            samples = np.frombuffer(memoryview(chunk.planes[0]), dtype=np.int16)[
                : chunk.samples * 2
            ]
            if samples.size == AUDIO_FRAME_SAMPLES * 2:
                self.chunks.append(samples.copy())


def _frame(samples: Samples, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate = AUDIO_RATE
    frame.pts = pts
    frame.time_base = AUDIO_TIME_BASE
    return frame


def _level(samples: Samples) -> float:
    if not samples.size:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) / 32768.0


class AudioMixer:
    """Mixes its inputs every 20 ms; ``speaker`` carries the mix for the room speaker."""

    def __init__(self) -> None:
        self._inputs: dict[str, _Input] = {}
        self.speaker = FrameFanout("audio")
        self._listeners: list[Callable[[MixedChunk], None]] = []
        self._pts = 0
        self._speaker_id: str | None = None
        self._louder_since: dict[str, float] = {}
        self.chunks_mixed = 0

    # -- inputs --------------------------------------------------------------------

    def add_track(self, key: str, name: str, track: MediaStreamTrack) -> None:
        """Mix ``track`` (read here until it ends or the input is removed)."""
        entry = self._inputs.get(key) or self._add(key, name)
        if entry.task is not None:
            entry.task.cancel()
        entry.task = asyncio.ensure_future(self._read(entry, track))

    def feed(self, key: str, name: str, frame: av.AudioFrame) -> None:
        """Mix ``frame`` into input ``key`` (for sources that are not tracks: the room mic)."""
        (self._inputs.get(key) or self._add(key, name)).feed(frame)

    def _add(self, key: str, name: str) -> _Input:
        entry = _Input(name)
        self._inputs[key] = entry
        return entry

    def set_muted(self, key: str, muted: bool) -> None:
        if key in self._inputs:
            self._inputs[key].muted = muted

    async def remove(self, key: str) -> None:
        entry = self._inputs.pop(key, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)

    async def _read(self, entry: _Input, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.AudioFrame):
                    entry.feed(frame)

    # -- output --------------------------------------------------------------------

    def listen(self, listener: Callable[[MixedChunk], None]) -> Callable[[], None]:
        """Call ``listener`` with every `MixedChunk`; returns a function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def levels(self) -> dict[str, float]:
        return {key: entry.level for key, entry in self._inputs.items()}

    def names(self) -> dict[str, str]:
        return {key: entry.name for key, entry in self._inputs.items()}

    @property
    def active_speaker(self) -> str | None:
        """The participant (not the room) who speaks loudest, held for a moment."""
        return self._speaker_id

    def mix_once(self) -> MixedChunk:
        """Take one chunk from every input and mix (the run loop calls this every 20 ms)."""
        silence = np.zeros(AUDIO_FRAME_SAMPLES * 2, dtype=np.int16)
        speaker = np.zeros(AUDIO_FRAME_SAMPLES * 2, dtype=np.int32)
        meeting = np.zeros(AUDIO_FRAME_SAMPLES * 2, dtype=np.int32)
        taken: dict[str, av.AudioFrame] = {}
        for key, entry in self._inputs.items():
            chunk = entry.chunks.popleft() if entry.chunks else silence
            if entry.muted:
                chunk = silence
            entry.level = max(_level(chunk), entry.level * LEVEL_DECAY)
            if chunk is not silence:
                taken[key] = _frame(chunk, self._pts)
                meeting += chunk
                if key != ROOM:
                    speaker += chunk
        self._pick_speaker()
        mixed = MixedChunk(
            at=time.time(),
            speaker=_frame(np.clip(speaker, -32768, 32767).astype(np.int16), self._pts),
            meeting=_frame(np.clip(meeting, -32768, 32767).astype(np.int16), self._pts),
            inputs=taken,
        )
        self._pts += AUDIO_FRAME_SAMPLES
        self.chunks_mixed += 1
        self.speaker.publish(mixed.speaker)
        for listener in tuple(self._listeners):
            listener(mixed)
        return mixed

    def _pick_speaker(self) -> None:
        now = time.monotonic()
        levels = {k: e.level for k, e in self._inputs.items() if k != ROOM}
        current = levels.get(self._speaker_id or "", 0.0)
        for key, level in levels.items():
            if key != self._speaker_id and level > SPEAKING_LEVEL and level > current:
                self._louder_since.setdefault(key, now)
            else:
                self._louder_since.pop(key, None)
        if self._speaker_id not in levels:
            self._speaker_id = None
        ready = [k for k, since in self._louder_since.items() if now - since >= SPEAKER_HOLD_S]
        if self._speaker_id is None:
            ready = [k for k in self._louder_since]  # nobody speaks yet: take over at once
        if ready:
            self._speaker_id = max(ready, key=lambda k: levels[k])
            self._louder_since.clear()

    async def run(self) -> None:
        """Mix every 20 ms on a steady schedule until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.mix_once()
            next_at += CHUNK_S
            delay = next_at - loop.time()
            if delay < -0.2:  # the loop was blocked: skip ahead instead of bursting
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))

    async def close(self) -> None:
        for key in list(self._inputs):
            await self.remove(key)
        self.speaker.stop()
