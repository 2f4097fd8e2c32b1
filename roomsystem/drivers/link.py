"""Byte-stream transports to devices: a serial port (RS-232 via pyserial) or TCP.

A `StreamLink` only moves bytes; framing belongs to each protocol's codec. Serial ports
accept anything pyserial does: a device path (``/dev/ttyUSB0``, a pty), or a URL such as
``socket://HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib

import serial
import serial_asyncio_fast

from roomsystem.drivers.errors import DeviceTimeout, LinkClosed

READ_CHUNK = 4096


class StreamLink:
    """A connected byte stream with read timeouts that raise typed errors."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.name = name

    @classmethod
    async def open_serial(cls, port: str, baudrate: int, timeout: float = 2.0) -> StreamLink:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=port, baudrate=baudrate
                )
        except (OSError, serial.SerialException) as exc:
            raise LinkClosed(f"cannot open {port}: {exc}") from None
        except TimeoutError:
            raise DeviceTimeout(f"opening {port} took longer than {timeout:g} s") from None
        return cls(reader, writer, port)

    @classmethod
    async def open_tcp(cls, host: str, port: int, timeout: float = 2.0) -> StreamLink:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise LinkClosed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        except TimeoutError:
            raise DeviceTimeout(
                f"connecting to {host}:{port} took longer than {timeout:g} s"
            ) from None
        return cls(reader, writer, f"{host}:{port}")

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise LinkClosed(f"{self.name}: closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, serial.SerialException) as exc:
            raise LinkClosed(f"{self.name}: write failed: {exc}") from None

    async def read(self, timeout: float) -> bytes:
        """The bytes available now, waiting up to ``timeout`` s for at least one."""
        try:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_CHUNK)
        except TimeoutError:
            raise DeviceTimeout(f"{self.name}: no answer within {timeout:g} s") from None
        except (OSError, serial.SerialException) as exc:
            raise LinkClosed(f"{self.name}: read failed: {exc}") from None
        if not data:
            raise LinkClosed(f"{self.name}: closed by the device")
        return data

    async def close(self) -> None:
        self._writer.close()
        # A serial transport may never report closed if the line is stuck; do not hang on it.
        with contextlib.suppress(OSError, serial.SerialException, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 0.5)
