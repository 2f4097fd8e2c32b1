"""The room display's video path at 1080p30: frames shown per second and latency added.

A demo room composes a 1920x1080 picture at 30 fps while a laptop share (a moving test
picture at 1080p30) fills it; the composed frames go into shared memory; the display app
(a subprocess with an offscreen 1920x1080 window) maps that memory, uploads each new frame
as three textures and draws it through its YUV shader. Measured inside the display:

* frames shown per second (distinct frames that reached a buffer swap), against the
  frames per second the room wrote;
* latency added by the display path: from the room writing a frame into shared memory to
  the buffer swap that showed it.

Target: the display keeps up with 1080p30 (>= 29 fps shown). On these machines the
window is drawn by a software renderer (Mesa llvmpipe, no GPU), which a room box with a
GPU does not pay for.

Run: ``python -m bench.display_fps [--seconds N]``. Prints one JSON line, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack

from bench.panel_rtt import bench_settings, percentile
from controlpanel.pilot import PilotProcess
from roomsystem.daemon import Daemon
from roomsystem.demo import DemoDevices
from roomsystem.media.capture import media_clock, stamped_now
from roomsystem.media.service import MediaService
from roomsystem.sharing.service import ShareSession, SharingService

SIZE = "1920x1080"
FRAME_RATE = 30
TARGET_FPS = 29.0
WARMUP_S = 2.0


class LoopedScreen(MediaStreamTrack):
    """A laptop's screen at 1080p30: a second of test picture, made once and repeated, so
    that making the picture costs the machine nothing while the display is measured."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        with av.open(f"testsrc2=size={SIZE}:rate={FRAME_RATE}", format="lavfi") as source:
            decoded = zip(range(FRAME_RATE), source.decode(video=0), strict=False)
            self._frames = [frame.reformat(format="yuv420p") for _, frame in decoded]
        self._sent = 0
        self._start = media_clock()

    async def recv(self) -> av.VideoFrame:
        due = self._start + self._sent / FRAME_RATE
        await asyncio.sleep(max(0.0, due - media_clock()))
        frame = self._frames[self._sent % FRAME_RATE]
        self._sent += 1
        return stamped_now(frame)


def _service(daemon: Daemon, kind: type[Any]) -> Any:
    return next(s for s in daemon.room.services if isinstance(s, kind))


async def measure(seconds: float, work: Path) -> dict[str, Any]:
    async with DemoDevices() as simulated:
        settings = bench_settings(work / "state", simulated.added)
        media = settings.media.model_copy(update={"video_size": SIZE, "frame_rate": FRAME_RATE})
        daemon = Daemon(settings.model_copy(update={"media": media}))
        await daemon.start()
        display: PilotProcess | None = None
        screen = LoopedScreen()
        try:
            await asyncio.wait_for(daemon.room.ready.wait(), 15)
            display = PilotProcess(
                "controlpanel.display",
                [
                    *("--api", daemon.url, "--size", SIZE),
                    *("--token-file", str(work / "state" / "api-token")),
                ],
                work / "kivy",
            )
            await display.start()
            await display.request("wait", name="room_name", contains="Demo", timeout=30)
            sharing: SharingService = _service(daemon, SharingService)
            room_media: MediaService = _service(daemon, MediaService)
            session = await sharing.begin_share("Bench laptop", "127.0.0.1", sharing.key.value)
            assert isinstance(session, ShareSession)
            session.show(screen)
            await display.request("wait", name="sharer", contains="Bench laptop", timeout=30)
            await asyncio.sleep(WARMUP_S)
            before = await display.request("video", name="share_video")
            written_before = room_media.display.frames
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.sleep(seconds)
            after = await display.request("video", name="share_video")
            elapsed = loop.time() - started
            written = room_media.display.frames - written_before
            sharing.end_share(session)
        finally:
            screen.stop()
            if display is not None:
                await display.stop()
            await daemon.stop()
    shown = int(after["shown"]) - int(before["shown"])
    # The latencies of the frames shown while measuring (the widget keeps the newest).
    latencies = [float(ms) for ms in after["latencies_ms"]][-shown:] if shown else []
    if not latencies:
        raise RuntimeError("the display showed no new frames while measuring")
    fps = shown / elapsed
    return {
        "bench": "display_fps",
        "what": "room composes 1080p30 -> shared memory -> display app textures -> swap",
        "size": SIZE,
        "seconds": round(elapsed, 2),
        "written_fps": round(written / elapsed, 1),
        "shown_fps": round(fps, 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p95": round(percentile(latencies, 0.95), 2),
        "latency_ms_max": round(max(latencies), 2),
        "target_fps": TARGET_FPS,
        "met": fps >= TARGET_FPS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.display_fps", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time (10)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="display-fps-") as work:
        result = asyncio.run(measure(args.seconds, Path(work)))
    print(json.dumps(result), flush=True)
    print(
        f"\n{'size':<10} {'written':>8} {'shown':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}\n"
        f"{result['size']:<10} {result['written_fps']:>8} {result['shown_fps']:>7} "
        f"{result['latency_ms_p50']:>7} {result['latency_ms_p95']:>7} "
        f"{result['latency_ms_max']:>7}\n"
        f"target: >= {TARGET_FPS:.0f} fps shown at 1080p30 ({'met' if result['met'] else 'missed'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
