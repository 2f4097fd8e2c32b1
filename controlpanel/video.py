"""The room's composed picture on the display, straight from the daemon's shared memory.

The media service writes every composed yuv420p frame into a ring in a memory-mapped file
(`roomsystem.media.shm`) and names the file in the ``media`` topic. `SharedVideo` maps that
file, uploads the newest frame's three planes as luminance textures and lets the GPU turn
them into RGB: no JSON, no encode or decode, no colour conversion on the CPU. A frame is
uploaded only when the widget is on screen and the frame is new.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics import BindTexture, Color, Rectangle, RenderContext
from kivy.graphics.texture import Texture
from kivy.uix.widget import Widget

from roomsystem.media.shm import RawFrame, SharedFrameReader

logger = logging.getLogger(__name__)

REOPEN_EVERY_S = 1.0
LATENCIES_KEPT = 300

# BT.601 limited range, what the compositor and FFmpeg's yuv420p use.
YUV_TO_RGB_SHADER = """
$HEADER$
uniform sampler2D texture1;
uniform sampler2D texture2;

void main(void) {
    float y = 1.16438 * (texture2D(texture0, tex_coord0).r - 0.0625);
    float u = texture2D(texture1, tex_coord0).r - 0.5;
    float v = texture2D(texture2, tex_coord0).r - 0.5;
    gl_FragColor = frag_color * vec4(
        y + 1.59603 * v, y - 0.39176 * u - 0.81297 * v, y + 2.01723 * u, 1.0
    );
}
"""


class SharedVideo(Widget):
    """Shows the newest frame of a shared-memory ring, scaled to fit, keeping its shape.

    ``source`` is the ring's path (None: show nothing). ``shown`` counts frames put on
    screen and ``latencies_ms`` holds, per shown frame that was written while the widget
    watched (not an old frame found on opening), the time from the daemon writing it to the
    buffer swap that showed it.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.canvas = RenderContext(
            use_parent_projection=True, use_parent_modelview=True, use_parent_frag_modelview=True
        )
        super().__init__(**kwargs)
        self.canvas.shader.fs = YUV_TO_RGB_SHADER
        # Without the shader the screens still work; only the pictures stay away.
        self.working = bool(self.canvas.shader.success)
        if not self.working:
            logger.error("the display's video shader did not compile: no video is shown")
        with self.canvas:
            # Transparent until the first picture: no empty texture is drawn.
            self._color = Color(1, 1, 1, 0)
            self._u = BindTexture(index=1)
            self._v = BindTexture(index=2)
            self._picture = Rectangle()
        self.canvas["texture1"] = 1
        self.canvas["texture2"] = 2
        self.source: Path | None = None
        self.shown = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self._reader: SharedFrameReader | None = None
        self._check_at = 0.0
        self._seq = 0
        self._frame_time = 0.0
        self._watched_since = 0.0
        self._fresh = False
        self._drawn_at: float | None = None
        self._planes: tuple[Texture, Texture, Texture] | None = None
        self.bind(pos=self._place, size=self._place)
        Clock.schedule_interval(self._poll, 0)
        Window.bind(on_flip=self._flipped)

    def show(self, source: Path | None) -> None:
        """Show the ring at ``source`` (from the ``media`` topic's ``display.path``)."""
        if source != self.source:
            self.source = source
            self._close()
            self._check_at = 0.0
            self._color.a = 0  # no old picture while the room is away or the feed changes

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._seq = 0

    def _poll(self, _dt: float) -> None:
        if self.get_root_window() is None or self.source is None or not self.working:
            self._watched_since = 0.0
            return
        watched_since, self._watched_since = self._watched_since, time.time()
        reader = self._open()
        if reader is None or reader.latest_seq == self._seq:
            return
        raw = reader.latest_raw()
        if raw is not None:
            self._upload(reader, raw)
            self._fresh = bool(watched_since) and raw.time >= watched_since

    def _open(self) -> SharedFrameReader | None:
        """The reader; once a second, (re)open the ring if it is missing or was remade."""
        now = time.monotonic()
        if now < self._check_at or self.source is None:
            return self._reader
        self._check_at = now + REOPEN_EVERY_S
        if self._reader is not None and self._reader.replaced():
            self._close()
        if self._reader is None:
            try:
                self._reader = SharedFrameReader(self.source)
            except (OSError, ValueError) as exc:
                logger.debug("no display picture at %s yet: %s", self.source, exc)
        return self._reader

    def _upload(self, reader: SharedFrameReader, raw: RawFrame) -> None:
        width, height = reader.width, reader.height
        y_size, c_size = width * height, (width // 2) * (height // 2)
        planes = self._textures(width, height)
        data = memoryview(raw.data)
        spans = ((0, y_size), (y_size, y_size + c_size), (y_size + c_size, y_size + 2 * c_size))
        for texture, (start, end) in zip(planes, spans, strict=True):
            texture.blit_buffer(data[start:end], colorfmt="luminance", bufferfmt="ubyte")
        self._seq = raw.seq
        self._frame_time = raw.time
        self._color.a = 1
        self._drawn_at = None
        self.canvas.ask_update()

    def _textures(self, width: int, height: int) -> tuple[Texture, Texture, Texture]:
        if self._planes is None or self._planes[0].size != (width, height):
            planes = tuple(
                Texture.create(size=size, colorfmt="luminance")
                for size in ((width, height), (width // 2, height // 2), (width // 2, height // 2))
            )
            # Rows arrive top first; textures count from the bottom. The chroma planes are
            # sampled at the luma's coordinates, so flipping the luma flips all three.
            planes[0].flip_vertical()
            self._planes = (planes[0], planes[1], planes[2])
            self._picture.texture = planes[0]
            self._u.texture, self._v.texture = planes[1], planes[2]
            self._place()
        return self._planes

    def _flipped(self, *_args: Any) -> None:
        if self._seq and self._drawn_at is None and self.get_root_window() is not None:
            self._drawn_at = time.time()
            self.shown += 1
            if self._fresh:
                self.latencies_ms.append((self._drawn_at - self._frame_time) * 1000)

    def _place(self, *_args: Any) -> None:
        if self._planes is None:
            return
        width, height = self._planes[0].size
        scale = min(self.width / width, self.height / height) if width and height else 0
        w, h = width * scale, height * scale
        self._picture.pos = (self.x + (self.width - w) / 2, self.y + (self.height - h) / 2)
        self._picture.size = (w, h)
        # Shown pixel for pixel, nearest sampling gives the same picture at half the cost of
        # filtering (which a software renderer feels); scaled, filtering keeps text legible.
        sampling = "nearest" if abs(scale - 1) < 0.01 else "linear"
        for texture in self._planes:
            texture.mag_filter = texture.min_filter = sampling
