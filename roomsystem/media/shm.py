"""The composed display picture in shared memory, for the display app on the same machine.

The display app is a separate process. Passing it 720p frames through the API would mean
JSON or an encode and a decode per frame; instead the media service writes each composed
yuv420p frame into a small ring in a memory-mapped file (``/dev/shm``), and the app maps the
same file and reads the newest frame. Nothing is encoded, and a slow reader never slows
the writer.

File layout (little-endian):

* header, 64 bytes: ``magic`` 8 bytes ``b"RSYUV420"``, ``version`` u32 (1), ``width`` u32,
  ``height`` u32, ``slots`` u32, ``frame_bytes`` u32 (width*height*3/2), 4 bytes padding,
  ``latest`` u64 (sequence number of the newest complete frame, 0: none yet), rest zero;
* ``slots`` slots, each 16 bytes of ``seq`` u64 and ``time`` f64 (wall clock, seconds)
  followed by ``frame_bytes`` of Y, U and V planes, tightly packed.

Frame ``n`` goes to slot ``n % slots``. The writer sets the slot's ``seq`` to 0, writes the
planes and the time, sets ``seq`` to ``n`` and then ``latest`` to ``n``. A reader takes
``latest``, copies that slot, and keeps the copy only if the slot's ``seq`` was ``latest``
before and after copying (otherwise it tries again).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from roomsystem.media import yuv

MAGIC = b"RSYUV420"
VERSION = 1
HEADER = struct.Struct("<8sIIIII4xQ")
HEADER_BYTES = 64
SLOT_HEADER = struct.Struct("<Qd")
LATEST_OFFSET = 32
DEFAULT_SLOTS = 3
READ_ATTEMPTS = 5


def default_path(state_dir: Path) -> Path:
    """Where a room keeps its display frames: RAM-backed ``/dev/shm`` when there is one."""
    tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"roomsystem-display-{tag}"
    return state_dir / "media" / "display.yuv"


class SharedFrameWriter:
    """Writes yuv420p frames of one size into the ring at ``path`` (created, mode 0640)."""

    def __init__(self, path: Path, width: int, height: int, slots: int = DEFAULT_SLOTS) -> None:
        self.path = path
        self.width, self.height, self.slots = width, height, slots
        self.frame_bytes = width * height * 3 // 2
        self._slot_bytes = SLOT_HEADER.size + self.frame_bytes
        size = HEADER_BYTES + slots * self._slot_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        # Always a new file: a reader that still maps an old one (a room that crashed) sees
        # it replaced instead of having it truncated under it; and never through a link.
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        try:
            # The daemon's umask (0077 under systemd) would leave out its group, which is
            # how the display app, another user, reads the file.
            os.fchmod(fd, 0o640)
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._map[:HEADER_BYTES] = HEADER.pack(
            MAGIC, VERSION, width, height, slots, self.frame_bytes, 0
        ).ljust(HEADER_BYTES, b"\0")
        self.seq = 0

    def write(self, frame: av.VideoFrame) -> None:
        """Publish ``frame`` (yuv420p, this writer's size) as the newest frame."""
        if (frame.width, frame.height) != (self.width, self.height):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        self.seq += 1
        start = HEADER_BYTES + (self.seq % self.slots) * self._slot_bytes
        self._map[start : start + 8] = struct.pack("<Q", 0)
        data = start + SLOT_HEADER.size
        for plane in yuv.planes(frame):
            size = plane.size
            view = np.frombuffer(self._map, dtype=np.uint8, count=size, offset=data)
            view.reshape(plane.shape)[:] = plane
            data += size
        self._map[start : start + SLOT_HEADER.size] = SLOT_HEADER.pack(self.seq, time.time())
        self._map[LATEST_OFFSET : LATEST_OFFSET + 8] = struct.pack("<Q", self.seq)

    def close(self) -> None:
        """Unmap and remove the file (readers see it vanish and wait for a new one)."""
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RawFrame:
    """A copy of one frame's planes as they lie in the ring: Y, then U, then V (writable,
    as OpenGL uploads want it)."""

    seq: int
    time: float
    data: bytearray


@dataclass(frozen=True)
class SharedFrame:
    seq: int
    time: float
    frame: av.VideoFrame


class SharedFrameReader:
    """Reads the newest frame from a `SharedFrameWriter`'s file (another process's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as file:
            self._inode = os.fstat(file.fileno()).st_ino
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self._map) < HEADER_BYTES:
            self._map.close()
            raise ValueError(f"{path} is too short for a display frame file")
        magic, version, width, height, slots, frame_bytes, _ = HEADER.unpack_from(self._map)
        size = HEADER_BYTES + slots * (SLOT_HEADER.size + frame_bytes)
        if magic != MAGIC or version != VERSION or frame_bytes != width * height * 3 // 2:
            self._map.close()
            raise ValueError(f"{path} is not a display frame file (version {VERSION})")
        if len(self._map) < size or slots == 0:
            self._map.close()
            raise ValueError(f"{path} is shorter than its header says ({len(self._map)} bytes)")
        self.width, self.height, self.slots, self.frame_bytes = width, height, slots, frame_bytes
        self._slot_bytes = SLOT_HEADER.size + frame_bytes

    @property
    def latest_seq(self) -> int:
        """The sequence number of the newest complete frame (0: none yet); no copy."""
        (seq,) = struct.unpack_from("<Q", self._map, LATEST_OFFSET)
        return int(seq)

    def replaced(self) -> bool:
        """Whether the writer went away or made a new file (the room restarted)."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except OSError:
            return True

    def latest_raw(self) -> RawFrame | None:
        """A copy of the newest complete frame's planes, or None if there is none (yet)."""
        for _ in range(READ_ATTEMPTS):
            seq = self.latest_seq
            if seq == 0:
                return None
            start = HEADER_BYTES + (seq % self.slots) * self._slot_bytes
            before, at = SLOT_HEADER.unpack_from(self._map, start)
            with memoryview(self._map) as whole:
                data = bytearray(whole[start + SLOT_HEADER.size : start + self._slot_bytes])
            (after,) = struct.unpack_from("<Q", self._map, start)
            if before == seq == after:
                return RawFrame(seq, at, data)
        return None

    def latest(self) -> SharedFrame | None:
        """A copy of the newest complete frame, or None if there is none (yet)."""
        raw = self.latest_raw()
        if raw is None:
            return None
        rows = np.frombuffer(raw.data, dtype=np.uint8).reshape(self.height * 3 // 2, self.width)
        return SharedFrame(raw.seq, raw.time, av.VideoFrame.from_ndarray(rows, format="yuv420p"))

    def close(self) -> None:
        self._map.close()
