"""Working on yuv420p frames in place: numpy views of their planes, fills, pastes.

Composition stays in YUV: converting participants' pictures to RGB and back would cost
more per frame than encoding them.
"""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]

# Video-range black and white (BT.601/709 limited range), and neutral chroma.
Y_BLACK = 16
Y_WHITE = 235
C_NEUTRAL = 128


def planes(frame: av.VideoFrame) -> tuple[Plane, Plane, Plane]:
    """Writable (height, width) views of a yuv420p frame's Y, U and V planes."""
    if frame.format.name != "yuv420p":
        raise ValueError(f"expected a yuv420p frame, got {frame.format.name}")
    views = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(
            plane.height, plane.line_size
        )
        views.append(rows[:, : plane.width])
    return views[0], views[1], views[2]


def blank(
    width: int, height: int, y: int = Y_BLACK, u: int = C_NEUTRAL, v: int = C_NEUTRAL
) -> av.VideoFrame:
    """A new yuv420p frame of one colour (black by default)."""
    frame = av.VideoFrame(width, height, "yuv420p")
    fill(frame, 0, 0, width, height, y, u, v)
    return frame


def fill(
    frame: av.VideoFrame,
    x: int,
    y: int,
    w: int,
    h: int,
    luma: int,
    u: int = C_NEUTRAL,
    v: int = C_NEUTRAL,
) -> None:
    """Paint a rectangle (even coordinates keep chroma aligned)."""
    py, pu, pv = planes(frame)
    py[y : y + h, x : x + w] = luma
    pu[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = u
    pv[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = v


def paste(canvas: av.VideoFrame, picture: av.VideoFrame, x: int, y: int) -> None:
    """Copy ``picture`` onto ``canvas`` at (x, y), clipped to the canvas; x and y even."""
    dst = planes(canvas)
    src = planes(picture)
    for index, (d, s) in enumerate(zip(dst, src, strict=True)):
        shift = 0 if index == 0 else 1
        px, py = x >> shift, y >> shift
        h = min(s.shape[0], d.shape[0] - py)
        w = min(s.shape[1], d.shape[1] - px)
        if h > 0 and w > 0:
            d[py : py + h, px : px + w] = s[:h, :w]


def fit(picture: av.VideoFrame, width: int, height: int) -> tuple[av.VideoFrame, int, int]:
    """``picture`` scaled to fit in width x height, keeping its aspect; and its offset."""
    scale = min(width / picture.width, height / picture.height)
    w = max(2, int(picture.width * scale) & ~1)
    h = max(2, int(picture.height * scale) & ~1)
    if (w, h) == (picture.width, picture.height) and picture.format.name == "yuv420p":
        scaled = picture
    else:
        scaled = picture.reformat(width=w, height=h, format="yuv420p")
    return scaled, ((width - w) // 2) & ~1, ((height - h) // 2) & ~1
