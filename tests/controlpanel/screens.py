"""Checks on screenshots: the size they should have, and that they show something."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import av


def screenshot_dir(fallback: Path) -> Path:
    """Where screenshots go: $ROOMSYSTEM_SCREENSHOTS (e.g. docs/screenshots), else ``fallback``."""
    chosen = os.environ.get("ROOMSYSTEM_SCREENSHOTS")
    return Path(chosen) if chosen else fallback


def check_screenshot(path: Path, size: tuple[int, int]) -> None:
    """The PNG at ``path`` is ``size`` pixels and not one flat colour."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == size, f"{path.name}: {frame.width}x{frame.height}"
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    raw = bytes(plane)
    rows = [raw[y * plane.line_size : y * plane.line_size + gray.width] for y in range(gray.height)]
    levels = Counter(b"".join(rows))
    commonest = levels.most_common(1)[0][1]
    assert commonest < 0.95 * gray.width * gray.height, f"{path.name} is almost blank"
    assert len(levels) > 16, f"{path.name} shows too little ({len(levels)} grey levels)"
