"""The pseudo-terminal server paces bytes like a serial line at its baud rate."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import pytest

from roomsystem.drivers.link import StreamLink
from roomsystem.drivers.simulator import PtyServer


@dataclass
class Echo:
    """Answers every chunk with the same bytes; a device with no protocol to get wrong."""

    def session(self) -> Echo:
        return self

    def connected(self) -> bytes:
        return b""

    def receive(self, data: bytes) -> bytes:
        return data


async def round_trip(server: PtyServer, message: bytes) -> float:
    link = await StreamLink.open_serial(server.path, 9600)
    try:
        started = time.perf_counter()
        await link.write(message)
        received = b""
        while len(received) < len(message):
            received += await link.read(timeout=2)
        assert received == message
        return time.perf_counter() - started
    finally:
        await link.close()


async def test_a_paced_exchange_takes_at_least_the_wire_time() -> None:
    server = PtyServer(Echo(), baudrate=9600)
    server.start()
    try:
        elapsed = await round_trip(server, bytes(48))
    finally:
        server.close()
    # 48 bytes each way, 10 bits a byte at 9600 baud: 100 ms on a real line.
    assert elapsed >= 0.1


async def test_without_a_baud_rate_bytes_are_not_held_back() -> None:
    server = PtyServer(Echo())
    server.start()
    try:
        elapsed = await round_trip(server, bytes(48))
    finally:
        server.close()
    assert elapsed < 0.1


async def test_bytes_still_on_the_line_at_close_are_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = PtyServer(Echo(), baudrate=300)
    server.start()
    link = await StreamLink.open_serial(server.path, 300)
    try:
        await link.write(b"hello")  # 5 bytes take 167 ms at 300 baud
        await asyncio.sleep(0.05)
        server.close()
        await asyncio.sleep(0.3)  # past the time the delivery was due
    finally:
        server.close()
        await link.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
