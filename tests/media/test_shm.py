"""The display picture in shared memory: what the display app reads."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from roomsystem.config import MediaSettings, WebRTCSettings
from roomsystem.media import yuv
from roomsystem.media.service import MediaService
from roomsystem.media.shm import SharedFrameReader, SharedFrameWriter
from tests.media.conftest import wait_for


def _picture(width: int, height: int, seed: int) -> av.VideoFrame:
    rows = np.random.default_rng(seed).integers(0, 256, (height * 3 // 2, width), np.uint8)
    return av.VideoFrame.from_ndarray(rows, format="yuv420p")


def test_the_reader_gets_the_newest_frame_exactly(tmp_path: Path) -> None:
    writer = SharedFrameWriter(tmp_path / "display", 64, 36, slots=3)
    reader = SharedFrameReader(tmp_path / "display")
    try:
        assert reader.latest() is None
        for seed in range(5):
            picture = _picture(64, 36, seed)
            writer.write(picture)
            shared = reader.latest()
            assert shared is not None
            assert shared.seq == seed + 1
            assert (shared.frame.width, shared.frame.height) == (64, 36)
            for got, want in zip(yuv.planes(shared.frame), yuv.planes(picture), strict=True):
                assert np.array_equal(got, want)
    finally:
        reader.close()
        writer.close()
    assert not (tmp_path / "display").exists()


def test_a_frame_being_written_is_not_read(tmp_path: Path) -> None:
    writer = SharedFrameWriter(tmp_path / "display", 64, 36, slots=2)
    reader = SharedFrameReader(tmp_path / "display")
    try:
        writer.write(_picture(64, 36, 1))
        # What a reader sees while the writer is inside the slot: its seq is 0.
        slot = 64 + (1 % 2) * (16 + 64 * 36 * 3 // 2)
        writer._map[slot : slot + 8] = struct.pack("<Q", 0)
        assert reader.latest() is None
    finally:
        reader.close()
        writer.close()


def test_another_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(b"x" * 128)
    with pytest.raises(ValueError, match="not a display frame file"):
        SharedFrameReader(path)


async def test_the_service_shares_the_composed_picture(tmp_path: Path) -> None:
    settings = MediaSettings(video_size="640x360", frame_rate=15)
    service = MediaService(
        settings,
        WebRTCSettings(ice_host_addresses=("127.0.0.1",)),
        None,
        state_dir=tmp_path,
        display_shm=tmp_path / "display.yuv",
    )
    await service.start()
    try:
        service.add_participant("p-ada", "Ada")
        await wait_for(
            lambda: bool((layout := service.display.layout()) and layout.tiles),
            what="Ada's tile",
        )
        reader = SharedFrameReader(service.display_shm_path)
        try:
            await wait_for(
                lambda: (s := reader.latest()) is not None and s.seq == service.display.frames,
                what="the newest composed frame in shared memory",
            )
            shared = reader.latest()
            composed = service.display.latest()
            assert shared is not None
            assert composed is not None
            assert np.array_equal(yuv.planes(shared.frame)[0], yuv.planes(composed)[0])
        finally:
            reader.close()
    finally:
        await service.close()
    assert not service.display_shm_path.exists()


def test_the_display_user_can_read_the_ring_under_the_daemons_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)  # the daemon's under systemd
    try:
        writer = SharedFrameWriter(tmp_path / "display", 64, 36)
    finally:
        os.umask(previous)
    try:
        assert (tmp_path / "display").stat().st_mode & 0o777 == 0o640
    finally:
        writer.close()


def test_a_new_writer_replaces_the_file_a_reader_still_maps(tmp_path: Path) -> None:
    path = tmp_path / "display"
    first = SharedFrameWriter(path, 64, 36)
    first.write(yuv.blank(64, 36))
    reader = SharedFrameReader(path)
    try:
        assert not reader.replaced()
        # The room crashed (the old writer never closed) and a new one starts, larger.
        second = SharedFrameWriter(path, 128, 72)
        try:
            assert reader.replaced()
            assert reader.latest_seq == 1  # the old mapping is intact, not truncated
            fresh = SharedFrameReader(path)
            assert (fresh.width, fresh.height) == (128, 72)
            fresh.close()
        finally:
            second.close()
    finally:
        reader.close()
        first._map.close()
