"""The systemd notification protocol, spoken by the daemon itself (no libsystemd needed).

systemd hands a ``Type=notify`` service the address of a datagram socket in
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and, with
``WatchdogSec=``, the watchdog period in ``WATCHDOG_USEC``. The service sends
newline-separated ``KEY=value`` assignments: ``READY=1`` once it serves, ``STATUS=...``
for ``systemctl status``, ``WATCHDOG=1`` at least once per period and ``STOPPING=1``.
See sd_notify(3) and systemd.service(5).

`SystemdNotifier` follows the room's lifecycle topic and pings the watchdog from the event
loop, so a blocked loop stops the pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

from roomsystem.bus import StateBus, Subscription
from roomsystem.lifecycle import LifecycleState, Phase, ServiceState

logger = logging.getLogger(__name__)


class NotifySocket:
    """A connection to systemd's notification socket; sending never raises."""

    def __init__(self, address: str) -> None:
        # A leading '@' names a socket in Linux's abstract namespace (a leading NUL byte).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)
        self._warned = False

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False (logged once) if it failed."""
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            self._socket.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                logger.warning("cannot notify systemd at %r: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        self._socket.close()


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between watchdog pings: half the period systemd asked for, or None."""
    text = environ.get("WATCHDOG_USEC", "")
    if not text.isdigit() or int(text) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    # The watchdog is meant for one process; a child that inherited the variables is not it.
    if pid and pid != str(os.getpid()):
        return None
    return int(text) / 1_000_000 / 2


def status_line(state: LifecycleState) -> str:
    """What ``systemctl status`` shows: the phase, and which services are failing and why."""
    failed = [s for s in state.services if s.state is ServiceState.FAILED]
    if not failed:
        return f"{state.phase}" if state.phase is not Phase.READY else "ready"
    problems = "; ".join(f"{s.name}: {s.error_kind} error: {s.error}" for s in failed)
    return f"{state.phase}, degraded: {problems}"[:400]


class SystemdNotifier:
    """Tells systemd when the room is ready, how it is, and that its loop is alive.

    Does nothing when the daemon was not started by systemd (no ``NOTIFY_SOCKET``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._socket = NotifySocket(address) if address else None
        self.watchdog_s = watchdog_interval(env) if address else None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def start(self, bus: StateBus) -> None:
        if self._socket is None:
            return
        self._tasks.append(asyncio.create_task(self._follow(bus), name="notify:status"))
        if self.watchdog_s is not None:
            logger.info("systemd watchdog: pinging every %.2f s", self.watchdog_s)
            self._tasks.append(asyncio.create_task(self._ping(self.watchdog_s), name="notify:dog"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._socket is not None:
            self._socket.send("STOPPING=1", "STATUS=stopping")
            self._socket.close()
            self._socket = None

    async def _follow(self, bus: StateBus) -> None:
        assert self._socket is not None
        sent_ready = False
        shown = ""
        with bus.subscribe() as subscription:
            state = subscription.snapshot.topics["lifecycle"]
            while True:
                assert isinstance(state, LifecycleState)
                line = status_line(state)
                assignments = [f"STATUS={line}"] if line != shown else []
                if state.phase is Phase.READY and not sent_ready:
                    assignments.insert(0, "READY=1")
                    sent_ready = True
                if assignments:
                    self._socket.send(*assignments)
                    shown = line
                state = await _next_lifecycle(subscription)

    async def _ping(self, interval: float) -> None:
        assert self._socket is not None
        while True:
            self._socket.send("WATCHDOG=1")
            # Sleeping on the loop is the point: if the loop is blocked, the ping is late.
            await asyncio.sleep(interval)


async def _next_lifecycle(subscription: Subscription) -> LifecycleState:
    while True:
        change = await subscription.next()
        if isinstance(change.value, LifecycleState):
            return change.value
