"""What the daemon runs beside the room when it is an appliance: systemd notification,
the watchdog, event-loop lag and the metrics registry."""

from __future__ import annotations

from collections.abc import Mapping

from roomsystem.appliance.metrics import LoopLagMonitor, RoomMetrics
from roomsystem.appliance.notify import SystemdNotifier
from roomsystem.bus import StateBus
from roomsystem.config import Settings


class Appliance:
    """Started after the room, stopped before it; owns every task it starts."""

    def __init__(
        self, settings: Settings, bus: StateBus, environ: Mapping[str, str] | None = None
    ) -> None:
        self._bus = bus
        self.notifier = SystemdNotifier(environ)
        self.loop_lag = LoopLagMonitor()
        self.metrics = RoomMetrics(bus, self.loop_lag) if settings.metrics.enabled else None

    def start(self) -> None:
        self.loop_lag.start()
        self.notifier.start(self._bus)

    async def stop(self) -> None:
        await self.notifier.stop()
        await self.loop_lag.stop()
