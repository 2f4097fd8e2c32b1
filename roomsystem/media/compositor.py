"""The room display's picture: remote participants in a gallery, content when shared.

Participants' decoded pictures are kept as they arrive (the newest per participant); a
thread composes them at the display's frame rate into one yuv420p picture:

* no content: a gallery grid, the active speaker's tile outlined;
* content shared: the content large on the left, participants in a column on the right.

Every tile has a name label. The picture goes out through `DisplayOutput`, the one
interface the display app, the recorder, the demo's snapshot sink and the tests use.
Everything stays YUV: an RGB round trip would cost more than the composition.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from PIL import Image, ImageDraw, ImageFont

from roomsystem.media import yuv
from roomsystem.media.capture import media_clock
from roomsystem.media.encoding import VIDEO_TIME_BASE
from roomsystem.media.frames import FrameFanout, FrameTrack

logger = logging.getLogger(__name__)

GAP = 8  # pixels between tiles
BACKGROUND = (24, 128, 128)  # dark grey
TILE_BACKGROUND = (40, 128, 128)
SPEAKER_BORDER = (180, 60, 160)  # a yellow outline around the active speaker
BORDER = 4
CONTENT_SHARE = 0.75  # of the width, when content is shown
WAITING = "Waiting for others to join"  # what the picture says while nobody is in it


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


MIN_TILE = Rect(0, 0, 64, 36)  # smaller tiles show nobody; the speaker gets a place first


@dataclass(frozen=True)
class Tile:
    """Where one participant is shown."""

    id: str
    name: str
    rect: Rect
    speaking: bool
    has_video: bool
    muted: bool = False


@dataclass(frozen=True)
class DisplayLayout:
    """What the composed picture shows, for the display app and the tests."""

    width: int
    height: int
    tiles: tuple[Tile, ...]
    content: Rect | None
    content_by: str | None  # who shares (a name), when content is shown


def _even(value: float) -> int:
    return int(value) & ~1


def grid(count: int, area: Rect) -> list[Rect]:
    """``count`` equal 16:9-ish tiles filling ``area`` in rows, as large as they fit."""
    if count <= 0:
        return []
    best: tuple[float, int, int] = (0.0, 1, count)
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        w = (area.w - GAP * (columns + 1)) / columns
        h = (area.h - GAP * (rows + 1)) / rows
        size = min(w, h * 16 / 9)  # the width a 16:9 picture gets in this cell
        if size > best[0]:
            best = (size, columns, rows)
    _, columns, rows = best
    w = _even((area.w - GAP * (columns + 1)) / columns)
    h = _even((area.h - GAP * (rows + 1)) / rows)
    rects = []
    for index in range(count):
        row, column = divmod(index, columns)
        in_row = min(columns, count - row * columns)
        indent = (area.w - in_row * w - (in_row + 1) * GAP) // 2  # centre a short last row
        x = area.x + _even(indent) + GAP + column * (w + GAP)
        y = area.y + _even((area.h - rows * h - (rows + 1) * GAP) / 2) + GAP + row * (h + GAP)
        rects.append(Rect(_even(x), _even(y), w, h))
    return rects


def fitting_grid(count: int, area: Rect) -> list[Rect]:
    """`grid` for as many of ``count`` tiles as fit at `MIN_TILE` size or larger."""
    for shown in range(count, 0, -1):
        tiles = grid(shown, area)
        if tiles[0].w >= MIN_TILE.w and tiles[0].h >= MIN_TILE.h:
            return tiles
    return []


def plan(width: int, height: int, count: int, content: bool) -> tuple[list[Rect], Rect | None]:
    """Tile rectangles for the first of ``count`` participants that fit, and the content's.

    Without content, a gallery; with content, the content on the left and the
    participants in a narrower gallery on the right.
    """
    if not content:
        return fitting_grid(count, Rect(0, 0, width, height)), None
    if not count:
        # Content alone fills the display edge to edge: a laptop's screen shown as it is,
        # and a picture of the display's size needs no scaling.
        return [], Rect(0, 0, width, height)
    content_w = _even(width * CONTENT_SHARE)
    content_rect = Rect(GAP, GAP, max(2, content_w - 2 * GAP), max(2, height - 2 * GAP))
    column = Rect(content_w, 0, width - content_w, height)
    return fitting_grid(count, column), content_rect


@functools.lru_cache(maxsize=256)
def _label(name: str, height: int) -> np.ndarray:
    """The name rendered white on a dark box as a luma patch (0: leave, else the value)."""
    font = ImageFont.load_default(size=max(10, height))
    left, top, right, _ = font.getbbox(name)
    pad = max(2, height // 4)
    image = Image.new("L", (_even(right - left + 2 * pad + 1), _even(height + 2 * pad + 1)), 40)
    ImageDraw.Draw(image).text((pad - left, pad - top), name, fill=235, font=font)
    return np.asarray(image, dtype=np.uint8)


def draw_label(canvas: av.VideoFrame, name: str, rect: Rect) -> None:
    """Put ``name`` in the bottom-left corner of ``rect``."""
    patch = _label(name, max(10, min(28, rect.h // 12)))
    h = min(patch.shape[0], rect.h)
    w = min(patch.shape[1], rect.w)
    _paste_label(canvas, patch, rect.x, _even(rect.y + rect.h - h), w, h)


def _centred(canvas: av.VideoFrame, text: str) -> None:
    """``text`` large in the middle of ``canvas``."""
    patch = _label(text, max(10, canvas.height // 18))
    h, w = min(patch.shape[0], canvas.height), min(patch.shape[1], canvas.width)
    _paste_label(canvas, patch, _even((canvas.width - w) / 2), _even((canvas.height - h) / 2), w, h)


def _paste_label(canvas: av.VideoFrame, patch: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    py, pu, pv = yuv.planes(canvas)
    py[y : y + h, x : x + w] = patch[:h, :w]
    pu[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = yuv.C_NEUTRAL
    pv[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = yuv.C_NEUTRAL


def _outline(canvas: av.VideoFrame, rect: Rect, colour: tuple[int, int, int]) -> None:
    b = BORDER
    x, y, w, h = rect.x - b, rect.y - b, rect.w + 2 * b, rect.h + 2 * b
    if x < 0 or y < 0 or x + w > canvas.width or y + h > canvas.height:
        x, y, w, h = rect.x, rect.y, rect.w, rect.h
    for bx, by, bw, bh in ((x, y, w, b), (x, y + h - b, w, b), (x, y, b, h), (x + w - b, y, b, h)):
        yuv.fill(canvas, bx, by, bw, bh, *colour)


@dataclass
class _Participant:
    name: str
    picture: av.VideoFrame | None = None
    task: asyncio.Task[None] | None = None
    frames: int = 0
    muted: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} (muted)" if self.muted else self.name


class DisplayOutput:
    """The composed picture: the newest frame, a frame count, tracks and the layout."""

    def __init__(self) -> None:
        self._fanout = FrameFanout("video")
        self._latest: av.VideoFrame | None = None
        self._layout: DisplayLayout | None = None
        self._listeners: list[Callable[[av.VideoFrame], None]] = []
        self.frames = 0

    def latest(self) -> av.VideoFrame | None:
        return self._latest

    def layout(self) -> DisplayLayout | None:
        return self._layout

    def track(self) -> FrameTrack:
        """A MediaStreamTrack of composed frames (yuv420p); stop it when done."""
        return self._fanout.subscribe()

    def listen(self, listener: Callable[[av.VideoFrame], None]) -> Callable[[], None]:
        """Call ``listener`` with each frame in the compositor's thread (keep it short)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def publish(self, frame: av.VideoFrame, layout: DisplayLayout) -> None:
        self._latest = frame
        self._layout = layout
        self.frames += 1
        for listener in tuple(self._listeners):
            listener(frame)
        self._fanout.publish_threadsafe(frame)

    def stop(self) -> None:
        self._fanout.stop()


class Compositor:
    """Composes participants and content into `output` at ``frame_rate`` in a thread."""

    def __init__(
        self,
        width: int,
        height: int,
        frame_rate: int,
        active_speaker: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.width, self.height, self.frame_rate = width, height, frame_rate
        self.output = DisplayOutput()
        self._active_speaker = active_speaker
        self._participants: dict[str, _Participant] = {}
        self._content: av.VideoFrame | None = None
        self._content_by: str | None = None
        self._content_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        # Set by every change (and by stop): the thread composes at once when it is set.
        self._changed = threading.Event()
        self._changed.set()

    # -- inputs (event loop) ---------------------------------------------------------

    def add_participant(self, key: str, name: str) -> None:
        with self._lock:
            self._participants.setdefault(key, _Participant(name)).name = name
            self._changed.set()

    def set_muted(self, key: str, muted: bool) -> None:
        """Mark ``key``'s tile as muted (its label says so) or not."""
        with self._lock:
            entry = self._participants.get(key)
            if entry is not None and entry.muted != muted:
                entry.muted = muted
                self._changed.set()

    def set_video(self, key: str, track: MediaStreamTrack) -> None:
        """Show ``track``'s pictures in ``key``'s tile (read here until it ends)."""
        entry = self._participants.get(key)
        if entry is None:
            raise KeyError(f"no participant {key!r} in the picture")
        if entry.task is not None:
            entry.task.cancel()
        entry.task = asyncio.ensure_future(self._read(key, track))

    async def remove_participant(self, key: str) -> None:
        with self._lock:
            entry = self._participants.pop(key, None)
            self._changed.set()
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)

    async def _read(self, key: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                entry = self._participants.get(key)
                if entry is None:
                    return
                if isinstance(frame, av.VideoFrame):
                    entry.picture = frame
                    entry.frames += 1
                    self._changed.set()
        entry = self._participants.get(key)
        if entry is not None:
            entry.picture = None  # the camera went away: an empty tile
            self._changed.set()

    def show_content(self, by: str, track: MediaStreamTrack | None) -> None:
        """Show ``track`` (a screen share by ``by``) as content; None ends it."""
        if self._content_task is not None:
            self._content_task.cancel()
            self._content_task = None
        if track is None:
            self.content_frame(None, None)
            return
        self._content_by = by
        self._content_task = asyncio.ensure_future(self._read_content(by, track))

    async def _read_content(self, by: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.content_frame(by, frame)
        self.content_frame(None, None)

    def content_frame(self, by: str | None, frame: av.VideoFrame | None) -> None:
        """Show ``frame`` as content from ``by`` (any thread); None: no content."""
        self._content, self._content_by = frame, by if frame else None
        self._changed.set()

    # -- composing (own thread) ------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._quit.clear()
            self._thread = threading.Thread(target=self._run, name="compositor", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._quit.set()
            self._changed.set()
            await asyncio.to_thread(thread.join, 5)
        for key in list(self._participants):
            await self.remove_participant(key)
        self.show_content("", None)
        self.output.stop()

    def _run(self) -> None:
        # A change is composed as soon as it comes, not at the next tick of a clock of our
        # own (two 30 fps clocks out of phase drop frames and add up to a frame of delay),
        # but never more often than the frame rate: changes within one period make one.
        period = 1 / self.frame_rate
        composed_at = -period
        while True:
            self._changed.wait()
            if self._quit.wait(max(0.0, composed_at + period - time.monotonic())):
                return
            self._changed.clear()
            composed_at = time.monotonic()
            try:
                frame, layout = self.compose()
            except (ValueError, av.FFmpegError):
                # One bad picture (an odd format, a size swscale refuses) must not
                # freeze the display: log it and compose again on the next change.
                logger.exception("composing the display picture failed")
                continue
            self.output.publish(frame, layout)

    def compose(self) -> tuple[av.VideoFrame, DisplayLayout]:
        """One picture of the current state (the thread calls this; tests may too)."""
        with self._lock:
            participants = list(self._participants.items())
        content, content_by = self._content, self._content_by
        speaker = self._active_speaker()
        canvas = yuv.blank(self.width, self.height, *BACKGROUND)
        if not participants and content is None:
            _centred(canvas, WAITING)
        rects, content_rect = plan(self.width, self.height, len(participants), content is not None)
        participants = _speaker_visible(participants, speaker, len(rects))
        tiles = []
        for (key, entry), rect in zip(participants, rects, strict=False):
            picture = entry.picture
            yuv.fill(canvas, rect.x, rect.y, rect.w, rect.h, *TILE_BACKGROUND)
            if picture is not None:
                scaled, dx, dy = yuv.fit(picture, rect.w, rect.h)
                yuv.paste(canvas, scaled, rect.x + dx, rect.y + dy)
            draw_label(canvas, entry.label, rect)
            speaking = key == speaker and len(participants) > 1
            if speaking:
                _outline(canvas, rect, SPEAKER_BORDER)
            tiles.append(Tile(key, entry.name, rect, speaking, picture is not None, entry.muted))
        if content is not None and content_rect is not None:
            scaled, dx, dy = yuv.fit(content, content_rect.w, content_rect.h)
            yuv.paste(canvas, scaled, content_rect.x + dx, content_rect.y + dy)
        canvas.pts = round(media_clock() / VIDEO_TIME_BASE)
        canvas.time_base = VIDEO_TIME_BASE
        layout = DisplayLayout(
            self.width,
            self.height,
            tuple(tiles),
            content_rect if content is not None else None,
            content_by if content is not None else None,
        )
        return canvas, layout


def _speaker_visible(
    participants: list[tuple[str, _Participant]], speaker: str | None, shown: int
) -> list[tuple[str, _Participant]]:
    """``participants`` with the active speaker moved into the first ``shown`` places."""
    keys = [key for key, _ in participants]
    if speaker not in keys or keys.index(speaker) < shown or shown == 0:
        return participants
    index = keys.index(speaker)
    reordered = list(participants)
    reordered[shown - 1], reordered[index] = reordered[index], reordered[shown - 1]
    return reordered
