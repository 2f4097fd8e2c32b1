"""The panel and display benchmarks run and print what they promise."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
async def test_panel_rtt_prints_its_figures() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.panel_rtt",
        "--rounds",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().splitlines()[0])
    assert result["bench"] == "panel_rtt"
    assert result["rounds"] == 3
    assert 0 < result["tap_to_update_ms_p50"] <= result["tap_to_update_ms_max"]
    assert result["tap_to_frame_ms_p50"] >= result["tap_to_update_ms_p50"]
    assert result["met"] == (result["tap_to_update_ms_p50"] < 100)


@pytest.mark.timeout(150)
async def test_display_fps_prints_its_figures() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.display_fps",
        "--seconds",
        "2",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 130)
    assert process.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().splitlines()[0])
    assert result["bench"] == "display_fps"
    assert result["size"] == "1920x1080"
    assert 20 < result["written_fps"] <= 31
    assert 0 < result["shown_fps"] <= result["written_fps"] + 1
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p95"] <= result["latency_ms_max"]
    assert result["met"] == (result["shown_fps"] >= 29)
