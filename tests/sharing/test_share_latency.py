"""The share latency benchmark: its frame stamp, and one short run on loopback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.share_latency import STAMP_BITS, measure, read_stamp, stamp
from roomsystem.media.ice import host_addresses


@given(
    value=st.integers(min_value=0, max_value=2**STAMP_BITS - 1),
    width=st.sampled_from([320, 640, 1280, 1920]),
)
def test_a_stamp_reads_back(value: int, width: int) -> None:
    planes = np.full((360, width), 128, dtype=np.uint8)
    stamp(planes, value)
    assert read_stamp(planes) == value


@pytest.mark.timeout(40)
async def test_a_short_run_reports_fps_and_latency() -> None:
    with host_addresses(["127.0.0.1"]):
        result = await measure(320, 240, seconds=1.0)
    assert result["resolution"] == "320x240"
    assert result["received_sizes"] == ["320x240"]
    fps = result["fps"]
    p50 = result["latency_p50_ms"]
    p95 = result["latency_p95_ms"]
    assert isinstance(fps, float)
    assert isinstance(p50, float)
    assert isinstance(p95, float)
    assert 5 <= fps <= 40
    assert 0 < p50 <= p95 < 5000
