"""Join time: from the API's start command to the first frame a browser participant decodes.

The whole room runs in this process (the daemon with the services the configuration asks
for, its HTTPS site on loopback); a real headless Chromium with fake devices is the remote
participant. Each run: ``POST /api/v1/meeting/start``, the browser types the meeting ID
and passcode and joins, the room admits it from the waiting room through the API as soon as
it appears (as a panel would), and the clock stops when the browser's video element
presents the room's first frame (``requestVideoFrameCallback``, stamped in the page with
``performance.timeOrigin + now``, against this process's wall clock on the same machine).
The page is opened and the name typed before the clock starts: a person who follows a
link has that page open already. Target: 1.5 s or less.

Run: ``python -m bench.join_time [--runs N]``. Prints one JSON line per run and a summary
line (``join_s`` is the median), then a short table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser

from roomsystem.config import LifecycleSettings, Settings
from roomsystem.daemon import Daemon
from roomsystem.demo import demo_web_settings
from roomsystem.meeting.state import MeetingState
from tests.chromium import chromium

TARGET_S = 1.5
FIRST_FRAME_JS = """() => new Promise((resolve) => {
    const video = document.getElementById("video-room");
    video.requestVideoFrameCallback(() => resolve(performance.timeOrigin + performance.now()));
})"""


def bench_settings(state_dir: Path) -> Settings:
    """The demo room with everything on loopback (API, site, WebRTC, mDNS)."""
    base = Settings()
    return demo_web_settings(
        base.model_copy(
            update={
                "state_dir": state_dir,
                "api": base.api.model_copy(update={"listen": "127.0.0.1:0"}),
                "lifecycle": LifecycleSettings(setup_timeout_s=10),
            }
        )
    )


async def admit_when_waiting(daemon: Daemon, api: aiohttp.ClientSession) -> None:
    """Admit each participant the moment the meeting topic shows them waiting."""
    with daemon.room.bus.subscribe() as subscription:
        while True:
            change = await subscription.next()
            if not isinstance(change.value, MeetingState):
                continue
            for participant in change.value.participants:
                if participant.waiting:
                    async with api.post(
                        "/api/v1/meeting/admit", json={"participant": participant.id}
                    ) as response:
                        response.raise_for_status()


async def one_join(daemon: Daemon, api: aiohttp.ClientSession, browser: Browser) -> float:
    assert daemon.web is not None
    context = await browser.new_context(ignore_https_errors=True)
    try:
        page = await context.new_page()
        page.set_default_timeout(15_000)
        await page.goto(f"{daemon.web.url}/join")
        await page.fill("#name", "Bench")
        first_frame = asyncio.ensure_future(page.evaluate(FIRST_FRAME_JS))
        started = time.time()
        async with api.post("/api/v1/meeting/start") as response:
            response.raise_for_status()
            meeting: dict[str, Any] = await response.json()
        await page.fill("#meeting-id", meeting["id"])
        await page.fill("#passcode", meeting["passcode"])
        await page.click("#join-button")
        shown_ms: float = await asyncio.wait_for(first_frame, 15)
        joined = shown_ms / 1000 - started
        async with api.post("/api/v1/meeting/end") as response:
            response.raise_for_status()
        return joined
    finally:
        await context.close()


async def measure(runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="join-bench-") as tmp:
        daemon = Daemon(bench_settings(Path(tmp) / "state"))
        await daemon.start()
        try:
            await asyncio.wait_for(daemon.room.ready.wait(), 20)
            headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
            async with (
                aiohttp.ClientSession(daemon.url, headers=headers) as api,
                chromium() as browser,
            ):
                admitting = asyncio.create_task(admit_when_waiting(daemon, api))
                try:
                    await one_join(daemon, api, browser)  # warm-up: caches, first encoder
                    return [await one_join(daemon, api, browser) for _ in range(runs)]
                finally:
                    admitting.cancel()
                    await asyncio.gather(admitting, return_exceptions=True)
        finally:
            await daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.join_time", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="measured joins (default 5)")
    args = parser.parse_args(argv)
    times = asyncio.run(measure(args.runs))
    for run, seconds in enumerate(times, start=1):
        print(json.dumps({"measurement": "join_time", "run": run, "join_s": round(seconds, 3)}))
    median = statistics.median(times)
    summary = {
        "measurement": "join_time",
        "runs": len(times),
        "join_s": round(median, 3),
        "join_max_s": round(max(times), 3),
        "target_s": TARGET_S,
        "met": median <= TARGET_S,
    }
    print(json.dumps(summary))
    print(f"\n{'join time':<12}{'median':>9}{'max':>9}{'target':>9}")
    print(f"{'':<12}{median:>8.2f}s{max(times):>8.2f}s{TARGET_S:>8.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
