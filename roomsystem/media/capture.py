"""The room's camera and microphone, read with PyAV in named threads.

A real room reads a V4L2 camera (``/dev/video0``) and an ALSA microphone (``hw:1,0``); the
demo and the tests read FFmpeg's synthetic sources (``testsrc2`` and ``sine``), paced to
real time as a device would be. Video stays YUV (yuv420p) all the way to the encoder:
converting to RGB and back would cost more than encoding here.

Each frame gets a pts on a clock shared by all sources of the process (``1/90000`` s for
video, samples at 48 kHz for audio), so receivers can keep audio and video in sync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import av
from av.container import InputContainer

from roomsystem.media.encoding import AUDIO_RATE, AUDIO_TIME_BASE, VIDEO_TIME_BASE

logger = logging.getLogger(__name__)

VideoSink = Callable[[av.VideoFrame], None]
AudioSink = Callable[[av.AudioFrame], None]
FrameT = TypeVar("FrameT", av.VideoFrame, av.AudioFrame)


class CaptureError(Exception):
    """A capture device could not be opened or read."""


@dataclass(frozen=True, kw_only=True)
class VideoSource:
    """A camera: ``device`` empty for the synthetic test picture."""

    device: str = ""
    width: int = 1280
    height: int = 720
    frame_rate: int = 30
    input_format: str = ""  # V4L2 pixel format to ask for ("mjpeg", ...); empty: default

    def open(self) -> InputContainer:
        size = f"{self.width}x{self.height}"
        if not self.device:
            return _open(f"testsrc2=size={size}:rate={self.frame_rate}", "lavfi", {})
        options = {"video_size": size, "framerate": str(self.frame_rate)}
        if self.input_format:
            options["input_format"] = self.input_format
        return _open(self.device, "v4l2", options)

    @property
    def synthetic(self) -> bool:
        return not self.device


@dataclass(frozen=True, kw_only=True)
class AudioSource:
    """A microphone: ``device`` empty for a synthetic tone."""

    device: str = ""
    frequency: int = 440

    def open(self) -> InputContainer:
        if not self.device:
            spec = f"sine=frequency={self.frequency}:sample_rate={AUDIO_RATE}"
            return _open(spec, "lavfi", {})
        return _open(self.device, "alsa", {"sample_rate": str(AUDIO_RATE), "channels": "2"})

    @property
    def synthetic(self) -> bool:
        return not self.device


def _open(url: str, format: str, options: dict[str, str]) -> InputContainer:
    try:
        container = av.open(url, format=format, options=options)
    except (av.FFmpegError, OSError) as exc:
        raise CaptureError(f"cannot open {format} source {url!r}: {exc}") from exc
    assert isinstance(container, InputContainer)
    return container


_CLOCK_ORIGIN = time.monotonic()


def media_clock() -> float:
    """Seconds on the clock every capture pts is taken from."""
    return time.monotonic() - _CLOCK_ORIGIN


class _CaptureThread:
    """Reads one source in a named thread until stopped; blocking reads stay off the loop."""

    def __init__(self, name: str, read: Callable[[threading.Event], None]) -> None:
        self._name = name
        self._read = read
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._quit.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._quit.set()
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._read(self._quit)
        except (CaptureError, av.FFmpegError, OSError) as exc:
            self.error = str(exc)
            logger.error("%s stopped: %s", self._name, exc)


def _paced(frames: Iterator[Any], rate: float, quit: threading.Event) -> Iterator[Any]:
    """Yield ``frames`` no faster than ``rate`` per second (synthetic sources run free)."""
    start = time.monotonic()
    for index, frame in enumerate(frames):
        delay = start + index / rate - time.monotonic()
        if delay > 0 and quit.wait(delay):
            return
        yield frame


class _Source(Protocol):
    @property
    def synthetic(self) -> bool: ...

    def open(self) -> InputContainer: ...


class _Capture(Generic[FrameT]):
    """Reads ``source`` in its own thread and hands each frame to ``sink`` there."""

    def __init__(self, name: str, source: _Source, sink: Callable[[FrameT], None]) -> None:
        self._source = source
        self._sink: Callable[[FrameT], None] = sink
        self._thread = _CaptureThread(name, self._read)
        self.frames = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop()

    @property
    def running(self) -> bool:
        return self._thread.running

    @property
    def error(self) -> str | None:
        return self._thread.error

    def _read(self, quit: threading.Event) -> None:
        container = self._source.open()
        try:
            for frame in self._frames(container, quit):
                if quit.is_set():
                    return
                self.frames += 1
                self._sink(self._stamped(frame))
        finally:
            container.close()

    def _frames(self, container: InputContainer, quit: threading.Event) -> Iterator[FrameT]:
        raise NotImplementedError

    def _stamped(self, frame: FrameT) -> FrameT:
        raise NotImplementedError


class VideoCapture(_Capture[av.VideoFrame]):
    """Captures yuv420p frames and hands each one to ``sink`` in the capture thread."""

    def __init__(self, source: VideoSource, sink: VideoSink) -> None:
        super().__init__("capture-video", source, sink)
        self.source = source

    def _frames(self, container: InputContainer, quit: threading.Event) -> Iterator[av.VideoFrame]:
        frames: Iterator[av.VideoFrame] = container.decode(video=0)
        if self.source.synthetic:
            return _paced(frames, self.source.frame_rate, quit)
        return frames

    def _stamped(self, frame: av.VideoFrame) -> av.VideoFrame:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        return stamped_now(frame)


def stamped_now(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame`` timed as captured now, on the room's media clock."""
    # A raw picture comes out of FFmpeg marked "I"; left so, an encoder
    # (aiortc's included) would make every frame a keyframe.
    frame.pict_type = av.video.frame.PictureType.NONE
    frame.pts = round(media_clock() / VIDEO_TIME_BASE)
    frame.time_base = VIDEO_TIME_BASE
    return frame


class AudioCapture(_Capture[av.AudioFrame]):
    """Captures audio and hands each frame to ``sink`` in the capture thread."""

    def __init__(self, source: AudioSource, sink: AudioSink) -> None:
        super().__init__("capture-audio", source, sink)
        self.source = source

    def _frames(self, container: InputContainer, quit: threading.Event) -> Iterator[av.AudioFrame]:
        frames: Iterator[av.AudioFrame] = container.decode(audio=0)
        return _paced_audio(frames, quit) if self.source.synthetic else frames

    def _stamped(self, frame: av.AudioFrame) -> av.AudioFrame:
        frame.pts = round(media_clock() * AUDIO_RATE)
        frame.time_base = AUDIO_TIME_BASE
        return frame


def _paced_audio(frames: Iterator[av.AudioFrame], quit: threading.Event) -> Iterator[av.AudioFrame]:
    start = time.monotonic()
    samples = 0
    for frame in frames:
        delay = start + samples / frame.sample_rate - time.monotonic()
        if delay > 0 and quit.wait(delay):
            return
        samples += frame.samples
        yield frame


def silence_like(frame: av.AudioFrame) -> av.AudioFrame:
    """A silent frame with ``frame``'s format, layout, length and timing."""
    silent = av.AudioFrame(
        format=frame.format.name, layout=frame.layout.name, samples=frame.samples
    )
    for plane in silent.planes:
        plane.update(bytes(plane.buffer_size))
    silent.sample_rate = frame.sample_rate
    silent.pts = frame.pts
    silent.time_base = frame.time_base
    return silent
