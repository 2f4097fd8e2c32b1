"""One coordinator per device: connects, polls its state, runs commands, survives failures.

As Home Assistant's ``DataUpdateCoordinator``: a driver error marks the device offline
with the error; the coordinator reconnects with exponential backoff, and the rest of the
room never notices more than the status change. Every call to the device (poll or command)
goes through one lock, because a serial line carries one conversation at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from roomsystem.devices.state import DeviceStatus
from roomsystem.drivers.camera import CameraControl, CameraStatus
from roomsystem.drivers.display import DisplayControl, DisplayStatus
from roomsystem.drivers.errors import DriverError
from roomsystem.lifecycle import Backoff

logger = logging.getLogger(__name__)

Control = CameraControl | DisplayControl
T = TypeVar("T")


class DeviceOffline(Exception):
    """A command for a device that is not connected right now."""


class Coordinator:
    """Keeps one device connected and its `DeviceStatus` current."""

    def __init__(
        self,
        status: DeviceStatus,
        connect: Callable[[], Awaitable[Control]] | None,
        publish: Callable[[DeviceStatus], None],
        poll_s: float,
        backoff: Backoff,
    ) -> None:
        self.status = status
        self._connect = connect
        self._publish = publish
        self._poll_s = poll_s
        self._backoff = backoff
        self._control: Control | None = None
        self._lock = asyncio.Lock()
        self._reconnect_now = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    @property
    def id(self) -> str:
        return self.status.id

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"device:{self.id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    def reconnect_now(self) -> None:
        """Cut the backoff short: try to connect again at once."""
        self._reconnect_now.set()

    async def call(self, action: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``action(control)`` on the connected device; a failure marks it offline."""
        control = self._control
        if control is None:
            raise DeviceOffline(
                f"{self.status.name} is offline: {self.status.error or 'not connected'}"
            )
        async with self._lock:
            try:
                result = await action(control)
            except DriverError as exc:
                self._went_offline(exc)
                self._reconnect_now.set()
                raise
        await self._poll_once()
        return result

    async def _run(self) -> None:
        if self._connect is None:
            # Nothing to talk to (a USB speakerphone): present means online.
            self._update(online=True, error=None, since=datetime.now(UTC))
            await asyncio.Event().wait()
        while True:
            try:
                await self._connected_session()
            except DriverError as exc:
                self._went_offline(exc)
            await self._disconnect()
            delay = self._backoff.next_delay()
            self._reconnect_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._reconnect_now.wait()

    async def _connected_session(self) -> None:
        assert self._connect is not None
        self._control = await self._connect()
        await self._poll_once(raise_errors=True)
        self._backoff.reset()
        if self._failures:
            logger.info("%s is back online", self.status.name)
        self._failures = 0
        while True:
            await asyncio.sleep(self._poll_s)
            await self._poll_once(raise_errors=True)

    async def _poll_once(self, raise_errors: bool = False) -> None:
        control = self._control
        if control is None:
            return
        try:
            async with self._lock:
                reading = await control.status()
        except DriverError as exc:
            if raise_errors:
                raise
            self._went_offline(exc)
            self._reconnect_now.set()
            return
        self._update(**_fields_of(reading), online=True, error=None, since=self._since(True))

    def _went_offline(self, exc: DriverError) -> None:
        self._failures += 1
        message = str(exc) or type(exc).__name__
        # Loud once, then quiet: an unplugged device must not flood the journal.
        log = logger.warning if self._failures == 1 else logger.debug
        log("%s is offline: %s", self.status.name, message)
        self._update(online=False, error=message, since=self._since(False))

    def _since(self, online: bool) -> datetime | None:
        return (
            self.status.since
            if self.status.online == online and self.status.since
            else datetime.now(UTC)
        )

    async def _disconnect(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(DriverError, OSError):
                await control.close()

    def _update(self, **changes: object) -> None:
        status = self.status.model_copy(update=changes)
        if status != self.status:
            self.status = status
            self._publish(status)


def _fields_of(reading: CameraStatus | DisplayStatus) -> dict[str, object]:
    if isinstance(reading, CameraStatus):
        return {
            "power": reading.power,
            "pan": reading.pan,
            "tilt": reading.tilt,
            "zoom": reading.zoom,
        }
    return {
        "power": reading.power,
        "input_source": reading.input_source,
        "volume": reading.volume,
        "muted": reading.muted,
    }
