"""The demo room's devices: simulators that speak the real wire protocols, in-process.

A Sony VISCA camera on a serial line (a pseudo-terminal, paced at 9600 baud like the real
cable) and a Samsung display over MDC on TCP. The daemon drives them through the same
profiles and drivers as real hardware; only the addresses come from here.
"""

from __future__ import annotations

import asyncio
import ipaddress
from types import TracebackType

from roomsystem.config import AddedDevice, Settings, split_listen
from roomsystem.drivers.mdc_sim import MdcSimulator
from roomsystem.drivers.simulator import PtyServer, serve_tcp
from roomsystem.drivers.visca_sim import ViscaSimulator

CAMERA_PROFILE = "sony-srg-300h"
DISPLAY_PROFILE = "samsung-qb-series"


class DemoDevices:
    """Starts the simulators on entry, stops them on exit; `added` says where they are."""

    def __init__(self) -> None:
        self.camera = ViscaSimulator(address=1)
        self.display = MdcSimulator(display_id=1)
        self._pty: PtyServer | None = None
        self._server: asyncio.Server | None = None
        self.added: tuple[AddedDevice, ...] = ()

    async def __aenter__(self) -> DemoDevices:
        self._pty = PtyServer(self.camera, baudrate=9600)
        self._pty.start()
        self._server = await serve_tcp(self.display, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.added = (
            AddedDevice(
                id="camera", profile=CAMERA_PROFILE, name="Room camera", serial=self._pty.path
            ),
            AddedDevice(
                id="display",
                profile=DISPLAY_PROFILE,
                name="Main display",
                host="127.0.0.1",
                port=port,
                address=1,
            ),
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()  # the daemon has closed its connections by now
        if self._pty is not None:
            self._pty.close()


def demo_web_settings(settings: Settings) -> Settings:
    """The demo's meeting site listens on the API's host: port 8443, or any free port when
    the API takes any. On loopback, WebRTC peers offer loopback too (aioice never does), and
    the room is announced over mDNS on loopback only."""
    host, api_port = split_listen(settings.api.listen)
    _, web_port = split_listen(settings.web.listen)
    shown = f"[{host}]" if ":" in host else host
    web = settings.web.model_copy(update={"listen": f"{shown}:{web_port if api_port else 0}"})
    webrtc, sharing = settings.webrtc, settings.sharing
    if _is_loopback(host):
        # A demo on loopback stays there: no mDNS on the machine's network either.
        webrtc = webrtc.model_copy(update={"ice_host_addresses": ("127.0.0.1",)})
        sharing = sharing.model_copy(update={"mdns_interfaces": ("127.0.0.1",)})
    return settings.model_copy(update={"web": web, "webrtc": webrtc, "sharing": sharing})


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
