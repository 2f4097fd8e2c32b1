"""Serve a simulated device over a pseudo-terminal, TCP or UDP.

A simulator is the device side of a protocol: it keeps the device's state (power, input,
pan/tilt, ...) in a `SimulatedDevice`, and each connection gets a `Session` that parses
the controller's bytes with the protocol's own codec and answers with bytes, exactly as the
real device would. The same device object can be served on several transports at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import time
import tty
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar, cast

from roomsystem.drivers.errors import FrameError

logger = logging.getLogger(__name__)

# How much earlier than due a paced delivery wakes up (see `PtyServer._at_the_wire_time`).
TIMER_SLACK_S = 0.0015


class Session(Protocol):
    """One controller's connection to a simulated device."""

    def connected(self) -> bytes:
        """Bytes the device sends as soon as a controller connects (a greeting), or b""."""
        ...

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the controller; return the bytes the device sends back."""
        ...


class SimulatedDevice(Protocol):
    def session(self) -> Session: ...


FrameT = TypeVar("FrameT")


def answer_each(
    next_frame: Callable[[], FrameT | None],
    answer: Callable[[FrameT], bytes],
    ignore: Callable[[FrameError], None],
) -> bytes:
    """The device's answers to every complete frame buffered so far, in order.

    A frame the device cannot read goes to ``ignore`` and gets no answer, as on a real
    device: the controller times out. ``next_frame`` returns None when it needs more bytes;
    each FrameError it raises consumes bytes, so this ends.
    """
    out = bytearray()
    while True:
        try:
            frame = next_frame()
        except FrameError as exc:
            ignore(exc)
            continue
        if frame is None:
            return bytes(out)
        out += answer(frame)


class _StreamSession(asyncio.Protocol):
    def __init__(self, device: SimulatedDevice) -> None:
        self._device = device

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        self._session = self._device.session()
        self._send(self._session.connected())

    def data_received(self, data: bytes) -> None:
        self._send(self._session.receive(data))

    def _send(self, data: bytes) -> None:
        if data and not self._transport.is_closing():
            self._transport.write(data)


async def serve_tcp(device: SimulatedDevice, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (0 picks a port); close the returned server to stop."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _StreamSession(device), host, port)


class PtyServer:
    """The device on the master side of a pseudo-terminal; clients open `path` as a serial port.

    A real serial cable stays open when nobody listens; so does this: the master keeps
    reading while no client has the slave open. A pty moves bytes instantly; with
    ``baudrate`` set, each direction is paced like a real line (10 bits a byte, one byte
    after the other), so timing measured through it includes the wire time. ``link`` is a
    stable path (a symlink to the pty) that survives restarting the simulator.
    """

    def __init__(
        self, device: SimulatedDevice, baudrate: int | None = None, link: Path | None = None
    ) -> None:
        self._device = device
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.pty_path = os.ttyname(self._slave)
        self.path = str(link) if link else self.pty_path
        self._link = link
        self._byte_time = 10 / baudrate if baudrate else 0.0
        self._line_free = {"in": 0.0, "out": 0.0}
        self._session = device.session()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._link is not None:
            tmp = self._link.with_name(f".{self._link.name}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.pty_path)
            tmp.replace(self._link)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)
        self._write(self._session.connected())

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # EIO while the slave side is closed; the next open brings data again
        if not self._byte_time:
            self._write(self._session.receive(data))
            return
        self._at_the_wire_time("in", data, self._received)

    def _received(self, data: bytes) -> None:
        reply = self._session.receive(data)
        if reply:
            self._at_the_wire_time("out", reply, self._write)

    def _at_the_wire_time(self, direction: str, data: bytes, then: Callable[[bytes], None]) -> None:
        """Call ``then(data)`` when ``data`` has crossed the line, to within a fraction of a ms.

        asyncio's timers wake up to about 1 ms late (epoll counts in whole ms), which would
        double the error of a 13 ms exchange's timing; a UART is timed by hardware. So wake
        up early and sleep the rest: a short, bounded block of a simulator's loop.
        """
        if self._loop is None:
            return
        due = self._on_the_wire(direction, len(data))

        def deliver() -> None:
            if self._loop is None:
                return  # closed while the bytes were on the line
            time.sleep(max(0.0, due - self._loop.time()))
            then(data)

        self._loop.call_at(due - TIMER_SLACK_S, deliver)

    def _on_the_wire(self, direction: str, size: int) -> float:
        """When ``size`` bytes sent now in ``direction`` have fully crossed the line."""
        assert self._loop is not None
        start = max(self._loop.time(), self._line_free[direction])
        self._line_free[direction] = start + size * self._byte_time
        return self._line_free[direction]

    def _write(self, data: bytes) -> None:
        while data:
            try:
                written = os.write(self._master, data)
            except BlockingIOError:
                logger.warning(
                    "pty %s: controller is not reading; dropped %d bytes", self.path, len(data)
                )
                return
            data = data[written:]

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._master)
            self._loop = None
        # Leave the link alone if a restarted simulator has taken it over.
        ours = self._link is not None and self._link.is_symlink()
        if self._link is not None and ours and os.readlink(self._link) == self.pty_path:
            self._link.unlink()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class _DatagramSession(asyncio.DatagramProtocol):
    """UDP: one session per peer address, as a device keeps per-controller state."""

    def __init__(self, device: SimulatedDevice, split: Callable[[bytes], Iterable[bytes]]) -> None:
        self._device = device
        self._split = split
        self._sessions: dict[tuple[str, int], Session] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's datagram transport does not derive from DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        session = self._sessions.get(addr)
        if session is None:
            session = self._sessions[addr] = self._device.session()
        reply = session.receive(data)
        for datagram in self._split(reply) if reply else ():
            self._transport.sendto(datagram, addr)


async def serve_udp(
    device: SimulatedDevice,
    host: str,
    port: int,
    split: Callable[[bytes], Iterable[bytes]] = lambda reply: (reply,),
) -> asyncio.DatagramTransport:
    """Answer datagrams on ``host:port``; ``split`` cuts what `Session.receive` returns
    into datagrams (by default all of it in one)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DatagramSession(device, split), local_addr=(host, port)
    )
    return transport
