"""Benchmarks of the daemon core: bus publish, GET /api/v1/state, event fan-out over WebSocket.

Run: ``.venv/bin/python bench/bench_api.py``. Prints one JSON line per measurement, then a
table. Everything runs on loopback in one process; the figures are medians of rounds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.sharing.state import SharingState

ROUNDS = 5


def emit(results: list[dict[str, Any]], **row: Any) -> None:
    results.append(row)
    print(json.dumps(row), flush=True)


async def median_of_rounds(measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await measure() for _ in range(ROUNDS)])


async def bench_publish(daemon: Daemon, results: list[dict[str, Any]]) -> None:
    bus = daemon.room.bus
    count = 20_000
    for subscribers in (0, 10, 100):
        subscriptions = [bus.subscribe() for _ in range(subscribers)]

        async def measure() -> float:
            started = time.perf_counter()
            for number in range(count):
                bus.publish("sharing", SharingState(active=True, sharer=str(number)))
            return (time.perf_counter() - started) / count * 1e6

        us = await median_of_rounds(measure)
        emit(results, bench="bus_publish", subscribers=subscribers, us_per_publish=round(us, 2))
        for subscription in subscriptions:
            subscription.close()


async def bench_state(
    daemon: Daemon, session: aiohttp.ClientSession, results: list[dict[str, Any]]
) -> None:
    latencies: list[float] = []
    count = 2000

    async def measure() -> float:
        started = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            async with session.get("/api/v1/state") as response:
                await response.read()
                assert response.status == 200
            latencies.append(time.perf_counter() - began)
        return count / (time.perf_counter() - started)

    rate = await median_of_rounds(measure)
    latencies.sort()
    emit(
        results,
        bench="get_state",
        requests_per_s=round(rate),
        p50_ms=round(latencies[len(latencies) // 2] * 1e3, 3),
        p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1e3, 3),
    )


async def bench_fanout(
    daemon: Daemon, session: aiohttp.ClientSession, results: list[dict[str, Any]]
) -> None:
    bus = daemon.room.bus
    for clients in (1, 10, 50):
        sockets = [await session.ws_connect("/api/v1/events") for _ in range(clients)]
        for ws in sockets:
            await ws.receive_json()
        latencies: list[float] = []
        for number in range(200):
            began = time.perf_counter()
            bus.publish("sharing", SharingState(active=True, sharer=f"fan-out {clients} {number}"))
            await asyncio.gather(*(ws.receive_json() for ws in sockets))
            latencies.append(time.perf_counter() - began)
        latencies.sort()
        emit(
            results,
            bench="event_fanout",
            clients=clients,
            p50_ms=round(statistics.median(latencies) * 1e3, 3),
            p99_ms=round(latencies[int(len(latencies) * 0.99)] * 1e3, 3),
        )
        for ws in sockets:
            await ws.close()


async def main() -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as state_dir:
        base = Settings()
        settings = base.model_copy(
            update={
                "state_dir": Path(state_dir),
                "api": base.api.model_copy(update={"listen": "127.0.0.1:0"}),
            }
        )
        daemon = Daemon(settings, lambda settings, bus: [])
        await daemon.start()
        await daemon.room.ready.wait()
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        try:
            async with aiohttp.ClientSession(daemon.url, headers=headers) as session:
                await bench_publish(daemon, results)
                await bench_state(daemon, session, results)
                await bench_fanout(daemon, session, results)
        finally:
            await daemon.stop()
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'benchmark':<14} {'case':<16} {'result'}"]
    for row in results:
        case = next((f"{k}={row[k]}" for k in ("subscribers", "clients") if k in row), "")
        figures = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("bench", "subscribers", "clients")
        )
        lines.append(f"{row['bench']:<14} {case:<16} {figures}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(asyncio.run(main())), file=sys.stdout)
