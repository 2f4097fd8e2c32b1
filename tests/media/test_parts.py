"""The pieces on their own: layout, labels, mixing, capture errors, the benchmark's stamp."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import time

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fanout import latency_ms, read_stamp, stamp
from roomsystem.media import yuv
from roomsystem.media.capture import (
    AudioSource,
    CaptureError,
    VideoCapture,
    VideoSource,
)
from roomsystem.media.compositor import Compositor, Rect, plan
from roomsystem.media.encoding import VideoEncoder, VideoEncoderConfig
from roomsystem.media.mixer import ROOM, SPEAKER_HOLD_S, AudioMixer


def _inside(rect: Rect, width: int, height: int) -> bool:
    return rect.x >= 0 and rect.y >= 0 and rect.x + rect.w <= width and rect.y + rect.h <= height


def _overlap(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(160, 3840).map(lambda n: n & ~1),
    height=st.integers(120, 2160).map(lambda n: n & ~1),
    count=st.integers(0, 25),
    content=st.booleans(),
)
def test_tiles_fit_on_the_display_and_never_overlap(
    width: int, height: int, count: int, content: bool
) -> None:
    tiles, content_rect = plan(width, height, count, content)
    assert len(tiles) <= count
    if width >= 1280 and height >= 720 and count <= 16:
        assert len(tiles) == count  # a real display has room for everyone
    for rect in tiles:
        assert rect.w >= 64
        assert rect.h >= 36
    shown = tiles + ([content_rect] if content_rect else [])
    assert (content_rect is not None) == content
    for rect in shown:
        assert _inside(rect, width, height), rect
        assert rect.x % 2 == 0
        assert rect.y % 2 == 0
    for a, b in itertools.combinations(shown, 2):
        if a.w > 0 and a.h > 0 and b.w > 0 and b.h > 0:
            assert not _overlap(a, b), (a, b)


def test_gallery_tiles_grow_with_fewer_people() -> None:
    one, _ = plan(1280, 720, 1, False)
    four, _ = plan(1280, 720, 4, False)
    assert one[0].w > 1200
    assert 600 < four[0].w < 640
    assert len({(r.x, r.y) for r in four}) == 4


def test_a_tile_shows_the_picture_and_the_name(tmp_path: object) -> None:
    compositor = Compositor(640, 360, 15)
    compositor.add_participant("p-1", "Ada")
    picture = yuv.blank(320, 240, y=200)
    compositor._participants["p-1"].picture = picture
    frame, layout = compositor.compose()
    (tile,) = layout.tiles
    assert tile.has_video
    y = yuv.planes(frame)[0]
    centre = y[tile.rect.y + tile.rect.h // 2, tile.rect.x + tile.rect.w // 2]
    assert centre == 200
    label = y[
        tile.rect.y + tile.rect.h - 20 : tile.rect.y + tile.rect.h, tile.rect.x : tile.rect.x + 60
    ]
    assert label.max() > 220  # white letters
    assert label.min() < 60  # on a dark box


def test_the_speaker_is_shown_when_not_everyone_fits() -> None:
    compositor = Compositor(320, 180, 15, active_speaker=lambda: "p-19")
    for n in range(20):
        compositor.add_participant(f"p-{n}", f"Person {n}")
    _, layout = compositor.compose()
    shown = [t.id for t in layout.tiles]
    assert 0 < len(shown) < 20
    assert "p-19" in shown


def test_paste_clips_at_the_edges() -> None:
    canvas = yuv.blank(64, 64)
    yuv.paste(canvas, yuv.blank(32, 32, y=100), 48, 48)
    y = yuv.planes(canvas)[0]
    assert y[63, 63] == 100
    assert y[47, 47] == yuv.Y_BLACK


def _tone(level: int, samples: int = 960) -> av.AudioFrame:
    data = np.full((1, samples * 2), level, dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
    frame.sample_rate = 48000
    return frame


async def test_the_speaker_mix_leaves_the_room_out_and_the_meeting_mix_keeps_it() -> None:
    mixer = AudioMixer()
    mixer.feed("p-1", "Ada", _tone(1000))
    mixer.feed("p-2", "Grace", _tone(2000))
    mixer.feed(ROOM, "Room", _tone(300))
    chunk = mixer.mix_once()
    assert int(chunk.speaker.to_ndarray().max()) == 3000
    assert int(chunk.meeting.to_ndarray().max()) == 3300
    assert set(chunk.inputs) == {"p-1", "p-2", ROOM}
    mixer.feed("p-1", "Ada", _tone(30000))
    mixer.feed("p-2", "Grace", _tone(30000))
    assert int(mixer.mix_once().speaker.to_ndarray().max()) == 32767  # clipped, not wrapped
    mixer.set_muted("p-2", True)
    mixer.feed("p-1", "Ada", _tone(10))
    mixer.feed("p-2", "Grace", _tone(20000))
    assert int(mixer.mix_once().speaker.to_ndarray().max()) == 10
    await mixer.close()


async def test_the_active_speaker_changes_only_after_a_moment() -> None:
    mixer = AudioMixer()
    mixer.feed("p-1", "Ada", _tone(5000))
    mixer.mix_once()
    assert mixer.active_speaker == "p-1"
    started = time.monotonic()
    while time.monotonic() - started < SPEAKER_HOLD_S + 0.5:
        mixer.feed("p-1", "Ada", _tone(0))
        mixer.feed("p-2", "Grace", _tone(20000))
        mixer.mix_once()
        if time.monotonic() - started < SPEAKER_HOLD_S * 0.8:
            assert mixer.active_speaker == "p-1"
        await asyncio.sleep(0.02)
    assert mixer.active_speaker == "p-2"
    await mixer.close()


def test_a_missing_camera_is_a_clear_error() -> None:
    with pytest.raises(CaptureError, match="/dev/video-missing"):
        VideoSource(device="/dev/video-missing").open()
    with pytest.raises(CaptureError, match="hw:97,0"):
        AudioSource(device="hw:97,0").open()


def test_a_capture_that_fails_reports_it_and_ends() -> None:
    capture = VideoCapture(VideoSource(device="/dev/video-missing"), lambda frame: None)
    capture.start()
    deadline = time.monotonic() + 5
    while capture.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    capture.stop()
    assert capture.error is not None
    assert "/dev/video-missing" in capture.error


def test_captured_frames_stay_yuv_and_keep_time() -> None:
    frames: list[av.VideoFrame] = []
    capture = VideoCapture(VideoSource(width=320, height=240, frame_rate=30), frames.append)
    capture.start()
    deadline = time.monotonic() + 5
    while len(frames) < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    capture.stop()
    assert len(frames) >= 15
    assert {f.format.name for f in frames} == {"yuv420p"}
    pts = [f.pts or 0 for f in frames]
    assert pts == sorted(pts)
    span_s = (pts[-1] - pts[0]) / 90000
    assert span_s == pytest.approx((len(frames) - 1) / 30, abs=0.25)  # paced to real time


@settings(max_examples=50, deadline=None)
@given(ms=st.integers(0, (1 << 40) - 1))
def test_the_benchmark_stamp_survives_encoding(ms: int) -> None:
    frame = yuv.blank(1280, 720, y=128)
    stamp(frame, ms)
    encoder = VideoEncoder(VideoEncoderConfig(start_bitrate=500_000))
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    packets = encoder.encode(frame, keyframe=True, bitrate=500_000)
    decoder = av.CodecContext.create("libvpx", "r")
    decoded = [f for p in packets for f in decoder.decode(p)]
    assert decoded
    assert read_stamp(decoded[0]) == ms


def test_an_unstamped_picture_reads_as_none_and_latency_wraps() -> None:
    assert read_stamp(yuv.blank(1280, 720, y=128)) is None
    assert latency_ms((1 << 40) - 5, 10) == 15
