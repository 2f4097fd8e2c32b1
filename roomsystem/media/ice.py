"""Which addresses the room's WebRTC peers offer, and which ICE servers they use.

Two defaults of aiortc do not suit a room appliance:

* aioice gathers host candidates on every interface *except* 127.0.0.1. A demo, a test
  or a benchmark that keeps all traffic on one machine needs exactly 127.0.0.1, and a
  room with several networks may want only the one its participants reach. aioice has no
  option for this, so `use_host_addresses` replaces its address lookup
  (``aioice.ice.get_host_addresses``, read on every gathering) for the whole process.
* aiortc uses a public STUN server when ``RTCConfiguration`` names none. The room never
  talks to a third party unless configured to: `rtc_configuration` always passes the
  configured list, which is empty by default.

Use: call ``apply_webrtc_settings(settings.webrtc)`` once before creating peers (the
daemon and the tests do), then ``RTCPeerConnection(rtc_configuration(settings.webrtc))``.
Tests that need a temporary choice use ``with host_addresses(["127.0.0.1"]): ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransport, RTCPeerConnection

from roomsystem.config import IceServerSettings, WebRTCSettings

# Loop turns for a `connect()` that ICE completed just before `close()` to resume.
LATE_CONSENT_TICKS = 3

logger = logging.getLogger(__name__)

_AddressLookup = Callable[[bool, bool], list[str]]


def _set_lookup(lookup: _AddressLookup) -> None:
    # aioice reads this module attribute on every gathering: replacing it is the hook.
    setattr(aioice.ice, "get_host_addresses", lookup)  # noqa: B010


# aioice's own lookup, kept to restore it and to answer "every interface".
_AIOICE_LOOKUP: _AddressLookup = aioice.ice.get_host_addresses
_lock = threading.Lock()


def _check_addresses(addresses: Sequence[str]) -> list[str]:
    chosen = []
    for address in addresses:
        try:
            chosen.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise ValueError(f"ICE host address must be an IP address, got {address!r}") from None
    return chosen


def _only(addresses: list[str]) -> _AddressLookup:
    def chosen_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    return chosen_addresses


def use_host_addresses(addresses: Sequence[str]) -> Callable[[], None]:
    """Offer only ``addresses`` as ICE host candidates from now on, in this whole process.

    An empty sequence restores aioice's choice (every interface but loopback). Returns a
    function that puts back whatever choice was in force before this call.
    """
    chosen = _check_addresses(addresses)
    with _lock:
        previous = aioice.ice.get_host_addresses
        _set_lookup(_only(chosen) if chosen else _AIOICE_LOOKUP)
    logger.debug("ICE host candidates: %s", chosen or "every interface")

    def undo() -> None:
        with _lock:
            _set_lookup(previous)

    return undo


@contextmanager
def host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """``use_host_addresses`` for the duration of a ``with`` block."""
    undo = use_host_addresses(addresses)
    try:
        yield
    finally:
        undo()


def current_host_addresses() -> list[str]:
    """The IPv4 and IPv6 addresses aioice would offer as host candidates now."""
    return list(aioice.ice.get_host_addresses(True, True))


def apply_webrtc_settings(settings: WebRTCSettings) -> Callable[[], None]:
    """Make the process gather host candidates as ``[webrtc] ice_host_addresses`` says.

    An empty list is aioice's own behaviour (every interface), so it changes nothing: a
    choice made earlier in the process (a test's ``host_addresses``) stays in force.
    """
    if not settings.ice_host_addresses:
        return lambda: None
    return use_host_addresses(settings.ice_host_addresses)


def _ice_server(server: IceServerSettings) -> RTCIceServer:
    return RTCIceServer(
        urls=list(server.urls),
        username=server.username or None,
        credential=server.credential or None,
    )


def rtc_configuration(
    ice_servers: WebRTCSettings | Sequence[IceServerSettings] = (),
) -> RTCConfiguration:
    """An ``RTCConfiguration`` with exactly the configured ICE servers (none by default).

    Accepts the ``[webrtc]`` settings or just their ``ice_servers``. Never returns
    aiortc's default (a public STUN server): with no servers, ``iceServers`` is ``[]``.
    """
    servers = ice_servers.ice_servers if isinstance(ice_servers, WebRTCSettings) else ice_servers
    return RTCConfiguration(iceServers=[_ice_server(s) for s in servers])


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` and stop the ICE consent checks that aioice may start after closing.

    aioice starts its consent-freshness task when its check list completes; if the
    connection is closed between that moment and `connect()` resuming, the task starts
    after `close()` has run and keeps sending checks on a closed connection. Let such a
    `connect()` resume, then stop the task.
    """
    await pc.close()
    for _ in range(LATE_CONSENT_TICKS):
        await asyncio.sleep(0)
    tasks = {
        task
        for transceiver in pc.getTransceivers()
        if transceiver.sender.transport is not None
        and (task := _consent_task(transceiver.sender.transport.transport)) is not None
    }
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _consent_task(ice: RTCIceTransport) -> asyncio.Task[None] | None:
    connection = getattr(ice, "_connection", None)  # aioice's Connection, not public
    task = getattr(connection, "_query_consent_task", None)
    return task if isinstance(task, asyncio.Task) and not task.done() else None
