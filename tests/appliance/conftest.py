"""Helpers for the appliance tests: a notification socket that records what arrives."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


class NotifyReceiver:
    """systemd's side of NOTIFY_SOCKET: a datagram socket read by a thread, so that the
    arrival times are right even while the test's event loop is blocked on purpose."""

    def __init__(self, address: str) -> None:
        # NOTIFY_SOCKET's form: a path, or '@name' in the abstract namespace.
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self._socket.settimeout(0.02)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-receiver")
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.extend((time.monotonic(), line) for line in data.decode().split("\n"))

    def lines(self, prefix: str = "") -> list[tuple[float, str]]:
        with self._lock:
            return [(t, line) for t, line in self.messages if line.startswith(prefix)]

    def wait_for(self, line: str, timeout: float) -> float:
        """When ``line`` first arrived; waits (blocking) up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t, text in self.lines() if text == line]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} did not arrive within {timeout} s: {self.lines()}")
            time.sleep(0.01)

    async def arrival(self, line: str, timeout: float) -> float:
        """`wait_for` without blocking the event loop."""
        async with asyncio.timeout(timeout):
            while not any(text == line for _, text in self.lines()):  # noqa: ASYNC110 - a thread fills the list
                await asyncio.sleep(0.02)
        return self.wait_for(line, 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()


@pytest.fixture
def abstract_notify_receiver() -> Iterator[NotifyReceiver]:
    receiver = NotifyReceiver(f"@roomsystem-test-{uuid.uuid4().hex}")
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def notify_receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    receiver = NotifyReceiver(str(tmp_path / "notify.sock"))
    try:
        yield receiver
    finally:
        receiver.close()
