"""Local meeting recording: composed video, the meeting mix, one audio track per participant.

A recording is a Matroska file written as it goes (no index at the end, clusters of at
most a second, every packet flushed), so a crash or ``kill -9`` loses at most the last
second or two and the rest plays. Timestamps follow the wall clock from the moment
recording started (in the container's ``creation_time``), so a gap in the picture stays a
gap in time. Beside each file, a ``.jsonl`` log says which participant each audio track
carries and when they came and went, in wall-clock UTC.

Tracks: 0 the composed video (H.264), 1 the meeting mix (Opus), 2 the room's microphone,
then one per remote participant in order of first sound, up to ``participant_tracks``
(later participants are still in the mix).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

from roomsystem.media.compositor import DisplayOutput
from roomsystem.media.encoding import AUDIO_RATE, AUDIO_TIME_BASE
from roomsystem.media.mixer import ROOM, AudioMixer, MixedChunk

logger = logging.getLogger(__name__)

MIX = "mix"
MS = Fraction(1, 1000)
# How far an audio track may drift from the wall clock before it is put back on it.
RESYNC_SAMPLES = AUDIO_RATE // 10
# What FFmpeg's muxer may hold back: a sparse track must not delay the others' writes.
MAX_INTERLEAVE_US = 500_000
QUEUE_ITEMS = 600  # about 4 s of audio and video; beyond that the writer is overloaded


class RecordingError(Exception):
    """A recording could not start or could not be written."""


@dataclass(frozen=True)
class _Video:
    at: float
    frame: av.VideoFrame


@dataclass(frozen=True)
class _Audio:
    at: float
    key: str
    frame: av.AudioFrame


class RecordingFile:
    """One Matroska file, written by one thread; `write_video` / `write_audio` take wall time."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        frame_rate: int,
        participant_tracks: int,
        title: str,
    ) -> None:
        self.path = path
        self.started_at = time.time()
        self._container = self._open(path, title)
        self._video = self._add_video(width, height, frame_rate)
        self._audio: dict[str, AudioStream] = {}
        self._next_pts: dict[str, int] = {}
        self._add_audio(MIX, "meeting mix")
        self._add_audio(ROOM, "room microphone")
        self._free_slots = [self._add_audio_slot(n) for n in range(1, participant_tracks + 1)]
        self._last_video_ms = -1
        self.video_frames = 0
        self.audio_chunks = 0

    def _open(self, path: Path, title: str) -> OutputContainer:
        started = datetime.fromtimestamp(self.started_at, UTC)
        try:
            container = av.open(
                str(path),
                mode="w",
                format="matroska",
                options={
                    "live": "1",  # no index to write at the end: nothing is lost without it
                    "cluster_time_limit": "1000",
                    "flush_packets": "1",
                    "max_interleave_delta": str(MAX_INTERLEAVE_US),
                },
            )
        except (av.FFmpegError, OSError) as exc:
            raise RecordingError(f"cannot create recording {path}: {exc}") from exc
        assert isinstance(container, OutputContainer)
        container.metadata["title"] = title
        container.metadata["creation_time"] = started.isoformat().replace("+00:00", "Z")
        return container

    def _add_video(self, width: int, height: int, frame_rate: int) -> VideoStream:
        stream = self._container.add_stream("libx264", rate=frame_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = MS
        # A keyframe every 2 s: what survives a crash starts playing from the last one.
        stream.codec_context.gop_size = 2 * frame_rate
        stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "26"}
        stream.metadata["title"] = "composed video"
        return stream

    def _add_audio(self, key: str, title: str) -> AudioStream:
        stream = self._container.add_stream("libopus", rate=AUDIO_RATE, layout="stereo")
        stream.format = "s16"
        stream.codec_context.time_base = AUDIO_TIME_BASE
        stream.codec_context.bit_rate = 48_000
        stream.metadata["title"] = title
        self._audio[key] = stream
        self._next_pts[key] = 0
        return stream

    def _add_audio_slot(self, number: int) -> AudioStream:
        stream = self._add_audio(f"slot-{number}", f"participant {number}")
        del self._audio[f"slot-{number}"]
        return stream

    def has_track(self, key: str) -> bool:
        return key in self._audio

    def assign(self, key: str) -> int | None:
        """Give participant ``key`` a track of its own; its stream index, or None if full."""
        if key in self._audio:
            return self._audio[key].index
        if not self._free_slots:
            return None
        stream = self._free_slots.pop(0)
        self._audio[key] = stream
        self._next_pts[key] = 0
        return stream.index

    def write_video(self, at: float, frame: av.VideoFrame) -> None:
        ms = round((at - self.started_at) * 1000)
        if ms <= self._last_video_ms:
            return  # the muxer needs rising timestamps; a frame this close adds nothing
        self._last_video_ms = ms
        if frame.width != self._video.width or frame.height != self._video.height:
            frame = frame.reformat(width=self._video.width, height=self._video.height)
        frame = frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame
        copy = av.VideoFrame(frame.width, frame.height, "yuv420p")
        for dst, src in zip(copy.planes, frame.planes, strict=True):
            dst.update(bytes(src))
        copy.pts, copy.time_base = ms, MS
        self._mux(self._video.encode(copy))
        self.video_frames += 1

    def write_audio(self, at: float, key: str, frame: av.AudioFrame) -> None:
        stream = self._audio.get(key)
        if stream is None:
            return
        wall_pts = round((at - self.started_at) * AUDIO_RATE)
        expected = self._next_pts[key]
        pts = expected if abs(wall_pts - expected) < RESYNC_SAMPLES else max(wall_pts, expected)
        self._next_pts[key] = pts + frame.samples
        copy = av.AudioFrame.from_ndarray(frame.to_ndarray(), format="s16", layout="stereo")
        copy.sample_rate, copy.pts, copy.time_base = AUDIO_RATE, pts, AUDIO_TIME_BASE
        self._mux(stream.encode(copy))
        self.audio_chunks += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoders and close the file (a crash instead loses only the last second)."""
        with contextlib.suppress(av.FFmpegError):
            self._mux(self._video.encode(None))
            for stream in self._audio.values():
                self._mux(stream.encode(None))
        self._container.close()


class Recorder:
    """Records the room's composed picture and audio; the meeting service starts and stops it.

    Satisfies the meeting service's ``Recorder`` protocol (``start(meeting_id)``, ``stop()``).
    """

    def __init__(
        self,
        directory: Path,
        display: DisplayOutput,
        mixer: AudioMixer,
        *,
        width: int,
        height: int,
        frame_rate: int,
        participant_tracks: int = 8,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_change = on_change
        self._display = display
        self._mixer = mixer
        self._size = (width, height)
        self._frame_rate = frame_rate
        self._participant_tracks = participant_tracks
        self._file: RecordingFile | None = None
        self._items: queue.Queue[_Video | _Audio | None] = queue.Queue(maxsize=QUEUE_ITEMS)
        self._thread: threading.Thread | None = None
        self._unlisten: list[Callable[[], None]] = []
        self._log: Any = None
        self.dropped = 0
        self.error: str | None = None

    @property
    def recording(self) -> bool:
        return self._file is not None

    @property
    def video_frames(self) -> int:
        """Frames written to the current recording so far."""
        return self._file.video_frames if self._file is not None else 0

    @property
    def path(self) -> Path | None:
        return self._file.path if self._file is not None else None

    async def start(self, meeting_id: str) -> None:
        """Start recording meeting ``meeting_id``; raises `RecordingError` if it cannot."""
        if self._file is not None:
            return
        try:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", meeting_id):
                raise RecordingError(f"meeting id {meeting_id!r} cannot name a recording file")
            self._file = await asyncio.to_thread(self._create, meeting_id)
        except RecordingError as exc:
            self.error = str(exc)  # kept for the room's health until a recording starts
            raise
        self.error = None
        self._write_log({"event": "started", "meeting": meeting_id, "file": self._file.path.name})
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self._unlisten = [self._display.listen(self._on_video), self._mixer.listen(self._on_audio)]
        logger.info("recording meeting %s to %s", meeting_id, self._file.path)
        if self._on_change is not None:
            self._on_change(True)

    def _create(self, meeting_id: str) -> RecordingFile:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create {self.directory}: {exc}") from exc
        path = self.directory / f"{meeting_id}-{stamp}.mkv"
        width, height = self._size
        file = RecordingFile(
            path,
            width=width,
            height=height,
            frame_rate=self._frame_rate,
            participant_tracks=self._participant_tracks,
            title=f"Meeting {meeting_id}",
        )
        try:
            self._log = path.with_suffix(".jsonl").open("a", encoding="utf-8")
        except OSError as exc:
            file.close()
            raise RecordingError(f"cannot create {path.with_suffix('.jsonl')}: {exc}") from exc
        return file

    async def stop(self) -> None:
        """Finish the file; idempotent."""
        file, self._file = self._file, None
        if file is None:
            return
        for unlisten in self._unlisten:
            unlisten()
        self._unlisten = []
        thread, self._thread = self._thread, None
        await asyncio.to_thread(self._items.put, None)
        if thread is not None:
            await asyncio.to_thread(thread.join, 10)
        await asyncio.to_thread(file.close)
        self._write_log({"event": "stopped", "video_frames": file.video_frames})
        if self._log is not None:
            self._log.close()
            self._log = None
        logger.info("recording %s finished", file.path)
        if self._on_change is not None:
            self._on_change(False)

    def _write_log(self, entry: dict[str, Any]) -> None:
        if self._log is None:
            return
        entry = {"at": datetime.now(UTC).isoformat().replace("+00:00", "Z"), **entry}
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()

    # -- feeding the writer ----------------------------------------------------------

    def _on_video(self, frame: av.VideoFrame) -> None:
        self._put(_Video(time.time(), frame))

    def _on_audio(self, chunk: MixedChunk) -> None:
        file = self._file
        if file is None:
            return
        self._put(_Audio(chunk.at, MIX, chunk.meeting))
        names = self._mixer.names()
        for key, frame in chunk.inputs.items():
            if key != ROOM and not file.has_track(key):
                index = file.assign(key)
                self._write_log(
                    {
                        "event": "track",
                        "participant": key,
                        "name": names.get(key, key),
                        "track": index,
                    }
                )
            self._put(_Audio(chunk.at, key, frame))

    def _put(self, item: _Video | _Audio) -> None:
        try:
            self._items.put_nowait(item)
        except queue.Full:
            self.dropped += 1  # the writer cannot keep up: losing a frame beats blocking

    def _run(self) -> None:
        file = self._file
        while (item := self._items.get()) is not None:
            if file is None:
                continue
            try:
                if isinstance(item, _Video):
                    file.write_video(item.at, item.frame)
                else:
                    file.write_audio(item.at, item.key, item.frame)
            except (av.FFmpegError, OSError) as exc:
                self.error = f"recording {file.path} failed: {exc}"
                logger.error("%s", self.error)
                return
