"""Glass-to-glass latency of a wireless share, sender to room display, on loopback.

The sender is an aiortc peer like ``roomshare``'s: each frame it sends carries its capture
time, written into the picture as a row of black and white 16x16 blocks (they survive
lossy coding). It shares through the room's HTTPS share endpoint and `SharingService`, as a
laptop would; the room's display input decodes each frame's stamp when the frame arrives.
Latency is arrival minus capture time (one machine, one clock); fps counts the frames that
arrived in the measured window. Anchors: the best Miracast adapters ~83 ms at 1080p30,
AirPlay mirroring 200-333 ms. Targets: 1080p30 at >= 29 fps, p50 <= 80 ms, p95 <= 150 ms.

Run: ``python -m bench.share_latency`` (``--seconds``, ``--sizes``). Prints one JSON line
per resolution with ``resolution``, ``fps``, ``latency_p50_ms``, ``latency_p95_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from roomsystem.bus import StateBus
from roomsystem.config import RoomSettings, SharingSettings
from roomsystem.media.ice import host_addresses
from roomsystem.meeting.state import MeetingPolicy, MeetingState
from roomsystem.meeting.tls import ensure_self_signed, server_context
from roomsystem.sharing.endpoint import add_share_routes
from roomsystem.sharing.service import SharingService
from roomsystem.sharing.state import SharingState
from roomsystem.statedir import StateDir

FPS = 30
STAMP_BITS = 48
BLOCK = 16
WARMUP_S = 2.0
TARGET_RESOLUTION = "1920x1080"
TARGET_FPS = 29.0
TARGET_P50_MS = 80.0
TARGET_P95_MS = 150.0


def now_us() -> int:
    return time.perf_counter_ns() // 1000


def _block(luma: np.ndarray, bit: int) -> tuple[slice, slice]:
    """Where ``bit`` of the stamp goes: left to right, then the next row of blocks."""
    per_row = luma.shape[1] // BLOCK
    row, column = divmod(bit, per_row)
    return slice(row * BLOCK, (row + 1) * BLOCK), slice(column * BLOCK, (column + 1) * BLOCK)


def stamp(luma: np.ndarray, value: int) -> None:
    """Write ``value`` into the top of the Y plane, one block per bit."""
    for bit in range(STAMP_BITS):
        on = (value >> (STAMP_BITS - 1 - bit)) & 1
        luma[_block(luma, bit)] = 235 if on else 16


def read_stamp(luma: np.ndarray) -> int:
    """The value `stamp` wrote, read from each block's centre (edges blur in coding)."""
    value = 0
    quarter = BLOCK // 4
    for bit in range(STAMP_BITS):
        rows, columns = _block(luma, bit)
        centre = luma[
            rows.start + quarter : rows.stop - quarter,
            columns.start + quarter : columns.stop - quarter,
        ]
        value = (value << 1) | int(centre.mean() > 125)
    return value


def stamp_rows(width: int) -> int:
    return -(-STAMP_BITS // (width // BLOCK))


class StampedTrack(VideoStreamTrack):
    """A 30 fps sender whose frames carry their capture time; a moving bar gives motion."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self.width, self.height = width, height
        self._base = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        planes = self._base.copy()
        bar = (self._count * 8) % self.width
        planes[BLOCK * stamp_rows(self.width) : self.height, bar : bar + 32] = 200
        self._count += 1
        stamp(planes, now_us())
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


class LatencyDisplay:
    """The room display's share input, reading each arriving frame's stamp."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, float]] = []  # (arrival s, latency ms)
        self.sizes: set[tuple[int, int]] = set()

    def share_started(self, session_id: str, name: str) -> None:
        self.arrivals.clear()

    def share_frame(self, frame: av.VideoFrame) -> None:
        arrived = now_us()
        luma = frame.to_ndarray(format="yuv420p")
        self.sizes.add((frame.width, frame.height))
        self.arrivals.append((arrived / 1e6, (arrived - read_stamp(luma)) / 1000))

    def share_ended(self, session_id: str) -> None:
        pass


def _bus() -> StateBus:
    policy = MeetingPolicy(
        waiting_room=True,
        join_before_host=False,
        mute_on_entry=True,
        video_off_on_entry=True,
        host_only_sharing=True,
    )
    return StateBus({"meeting": MeetingState(policy=policy), "sharing": SharingState()})


@contextlib.asynccontextmanager
async def share_room(display: LatencyDisplay) -> AsyncIterator[tuple[SharingService, str]]:
    """A room's sharing service behind its HTTPS endpoint on 127.0.0.1."""
    settings = SharingSettings(mdns_interfaces=("127.0.0.1",), stall_timeout_s=5.0)
    service = SharingService(
        settings, RoomSettings(), _bus(), "127.0.0.1:0", display, addresses=lambda: ["127.0.0.1"]
    )
    app = web.Application()
    add_share_routes(app, service)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = StateDir(Path(tmp))
        context = server_context(ensure_self_signed(state_dir, ["127.0.0.1"]))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
            await service.set_web_port(runner.addresses[0][1])
            yield service, service.share_url
        finally:
            await runner.cleanup()
            await service.close()


async def measure(width: int, height: int, seconds: float) -> dict[str, object]:
    display = LatencyDisplay()
    async with share_room(display) as (service, url):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTrack(StampedTrack(width, height))
            await pc.setLocalDescription(await pc.createOffer())
            body = {"name": "bench", "key": service.key.value, "sdp": pc.localDescription.sdp}
            connector = aiohttp.TCPConnector(ssl=False)  # the room's own self-signed certificate
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.post(url + "/offer", json={**body, "type": "offer"}) as reply,
            ):
                answer = await reply.json()
                if reply.status != 201:
                    raise RuntimeError(f"the room refused the share: {answer}")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await asyncio.sleep(WARMUP_S + seconds)
        finally:
            await pc.close()
    return summarize(display, width, height, seconds)


def summarize(
    display: LatencyDisplay, width: int, height: int, seconds: float
) -> dict[str, object]:
    if not display.arrivals:
        raise RuntimeError(f"no frame arrived at {width}x{height}")
    end = display.arrivals[-1][0]
    window = [lat for at, lat in display.arrivals if at >= end - seconds]
    latencies = sorted(window)
    p95_index = min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))
    return {
        "resolution": f"{width}x{height}",
        "target_fps": FPS,
        "fps": round(len(window) / seconds, 1),
        "latency_p50_ms": round(statistics.median(latencies), 1),
        "latency_p95_ms": round(latencies[p95_index], 1),
        "frames": len(window),
        "received_sizes": sorted(f"{w}x{h}" for w, h in display.sizes),
    }


def meets_target(result: dict[str, object]) -> bool:
    fps, p50, p95 = result["fps"], result["latency_p50_ms"], result["latency_p95_ms"]
    assert isinstance(fps, float)
    assert isinstance(p50, float)
    assert isinstance(p95, float)
    return fps >= TARGET_FPS and p50 <= TARGET_P50_MS and p95 <= TARGET_P95_MS


async def main_async(sizes: list[tuple[int, int]], seconds: float) -> None:
    with host_addresses(["127.0.0.1"]):
        for width, height in sizes:
            result = await measure(width, height, seconds)
            if result["resolution"] == TARGET_RESOLUTION:
                result["meets_target"] = meets_target(result)
            print(json.dumps(result), flush=True)


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per size")
    parser.add_argument("--sizes", default="1280x720,1920x1080", help="comma-separated WxH list")
    args = parser.parse_args()
    sizes = [_size(s) for s in args.sizes.split(",")]
    asyncio.run(main_async(sizes, args.seconds))


if __name__ == "__main__":
    main()
