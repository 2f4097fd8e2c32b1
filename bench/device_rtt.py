"""Device control round trips over a serial line, beside the wire time they cannot beat.

A VISCA preset recall (command, ACK, completion) to a simulated Sony camera and an MDC
power query (request, ACK with the value) to a simulated Samsung display, each through our
driver over a pseudo-terminal paced at the profile's baud rate. The wire time is what the
bytes alone take on the line: bytes x 10 bits / baud (8N1: a start bit, 8 data bits, a stop
bit). The bytes are counted as the simulator sees them, not assumed. What the round trip
costs above the wire time is our software: the target is within 2 ms at 9600 baud.

Run: ``python -m bench.device_rtt``. Prints one JSON line per protocol, then a table.
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from roomsystem.devices.profiles import DEFAULT_PROFILES_DIR, load_profile
from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.mdc import Command, MdcDisplay
from roomsystem.drivers.mdc_sim import MdcSimulator
from roomsystem.drivers.simulator import PtyServer, Session, SimulatedDevice
from roomsystem.drivers.visca import ViscaCamera
from roomsystem.drivers.visca_sim import ViscaSimulator

PROFILES = DEFAULT_PROFILES_DIR
# Samsung's MDC manual fixes RS-232C at 9600 8N1; the shipped Samsung profile uses TCP.
MDC_SERIAL_BAUD = 9600
WARMUP = 5
ROUNDS = 200
TARGET_OVERHEAD_MS = 2.0


@dataclass
class _Counted:
    """Counts the bytes crossing the line in both directions (what the wire time is of)."""

    session: Session
    crossed: int = 0

    def connected(self) -> bytes:
        return self.session.connected()

    def receive(self, data: bytes) -> bytes:
        reply = self.session.receive(data)
        self.crossed += len(data) + len(reply)
        return reply


@dataclass
class _CountingDevice:
    device: SimulatedDevice
    counted: _Counted | None = None

    def session(self) -> _Counted:
        self.counted = _Counted(self.device.session())
        return self.counted


Operation = Callable[[], Awaitable[Any]]


async def measure(
    device: _CountingDevice, baudrate: int, connect: Callable[[StreamLink], Operation]
) -> tuple[list[float], float]:
    """Round trips in ms of the operation ``connect`` makes, and the wire time of one in ms."""
    server = PtyServer(device, baudrate=baudrate)
    server.start()
    link = await StreamLink.open_serial(server.path, baudrate)
    run = connect(link)
    try:
        for _ in range(WARMUP):
            await run()
        assert device.counted is not None
        before = device.counted.crossed
        rtts = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            await run()
            rtts.append((time.perf_counter() - started) * 1000)
        per_round = (device.counted.crossed - before) / ROUNDS
    finally:
        await link.close()
        server.close()
    return rtts, per_round * 10 / baudrate * 1000


async def visca_preset_recall() -> dict[str, Any]:
    profile = load_profile(PROFILES / "cameras" / "sony-srg-300h.toml")
    baudrate = profile.control.baudrate
    assert baudrate is not None, "the Sony profile is a serial one"
    simulator = ViscaSimulator(address=1)
    simulator.presets[1] = simulator.position

    def recall(link: StreamLink) -> Operation:
        return functools.partial(ViscaCamera(link, 1).preset_recall, 1)

    rtts, wire_ms = await measure(_CountingDevice(simulator), baudrate, recall)
    return _row("visca", "preset recall", baudrate, rtts, wire_ms)


async def mdc_power_query() -> dict[str, Any]:
    simulator = MdcSimulator(display_id=1)

    def query(link: StreamLink) -> Operation:
        return functools.partial(MdcDisplay(link, 1).request, Command.POWER)

    rtts, wire_ms = await measure(_CountingDevice(simulator), MDC_SERIAL_BAUD, query)
    return _row("mdc", "power query", MDC_SERIAL_BAUD, rtts, wire_ms)


def _row(
    protocol: str, operation: str, baudrate: int, rtts: list[float], wire_ms: float
) -> dict[str, Any]:
    p50 = statistics.median(rtts)
    return {
        "protocol": protocol,
        "operation": operation,
        "baudrate": baudrate,
        "rounds": len(rtts),
        "rtt_ms_p50": round(p50, 3),
        "rtt_ms_p95": round(statistics.quantiles(rtts, n=20)[-1], 3),
        "wire_ms": round(wire_ms, 3),
        "overhead_ms_p50": round(p50 - wire_ms, 3),
        "within_target": p50 - wire_ms <= TARGET_OVERHEAD_MS,
    }


async def main() -> int:
    rows = [await visca_preset_recall(), await mdc_power_query()]
    for row in rows:
        print(json.dumps(row), flush=True)
    print()
    print(
        f"{'protocol':<8} {'operation':<14} {'baud':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'wire ms':>8} {'over ms':>8}"
    )
    for row in rows:
        print(
            f"{row['protocol']:<8} {row['operation']:<14} {row['baudrate']:>6} "
            f"{row['rtt_ms_p50']:>8.3f} {row['rtt_ms_p95']:>8.3f} {row['wire_ms']:>8.3f} "
            f"{row['overhead_ms_p50']:>8.3f}"
        )
    print(f"target: p50 within {TARGET_OVERHEAD_MS} ms of the wire time")
    return 0 if all(row["within_target"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
