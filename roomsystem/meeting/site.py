"""The HTTPS site remote participants open: the browser client and its signalling socket.

It is separate from the local API (which stays on loopback, behind a token): this site
faces the network, serves only static files and one WebSocket per participant, and every
participant proves what they may do to the meeting policy, not to a token.
"""

from __future__ import annotations

import logging
import socket
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import WSCloseCode, web

from roomsystem.config import Settings, WebRTCSettings, WebSettings, split_listen
from roomsystem.lifecycle import Service
from roomsystem.media.ice import apply_webrtc_settings, rtc_configuration
from roomsystem.meeting.client import ClientConnection
from roomsystem.meeting.peers import PeerHub, RoomMedia, SyntheticMedia
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.signalling import MAX_MESSAGE_BYTES
from roomsystem.meeting.tls import (
    CertificateFiles,
    ensure_self_signed,
    server_context,
    server_names,
)
from roomsystem.sharing.endpoint import add_share_routes
from roomsystem.sharing.service import SharingService
from roomsystem.statedir import StateDir

logger = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).with_name("web")
JOIN_PATH = "/join"
SIGNALLING_PATH = "/ws"
HEARTBEAT_S = 10.0
# aiohttp closes the socket (1009) above this; below it, the parser answers with an error.
SOCKET_MAX_BYTES = 4 * MAX_MESSAGE_BYTES

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Join links carry a token in the query: never hand it on to another site.
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self)",
    "Cache-Control": "no-store",
}


class ListenError(OSError):
    """The site cannot listen where it was told to."""


class WebSite:
    """Serves the browser client over HTTPS and connects participants to the meeting."""

    def __init__(
        self,
        settings: WebSettings,
        state_dir: StateDir,
        meeting: MeetingService,
        media: RoomMedia | None = None,
        webrtc: WebRTCSettings | None = None,
        sharing: SharingService | None = None,
    ) -> None:
        self.settings = settings
        self._state_dir = state_dir
        self._meeting = meeting
        # Without the room's media, test sources stand in for its camera and microphone.
        self._own_media = SyntheticMedia() if media is None else None
        self.media: RoomMedia = media or self._own_media  # type: ignore[assignment]
        self._webrtc = webrtc or WebRTCSettings()
        self._undo_host_addresses: Callable[[], None] | None = None
        self._connections: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.clients: dict[str, ClientConnection] = {}
        self.hub = PeerHub(rtc_configuration(self._webrtc), self.media, self._slots_changed)
        self.app = web.Application(middlewares=[self._headers])
        self.app.router.add_get("/", self._root)
        self.app.router.add_get(JOIN_PATH, self._join_page)
        self.app.router.add_get(SIGNALLING_PATH, self._signalling)
        self.app.router.add_static("/static", WEB_ROOT, follow_symlinks=False)
        self.app.on_shutdown.append(self._close_sockets)
        # Laptops in the room share their screen from this site too (its /share page).
        self._sharing = sharing
        if sharing is not None:
            add_share_routes(self.app, sharing, configuration=rtc_configuration(self._webrtc))
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def meeting(self) -> MeetingService:
        return self._meeting

    def certificate(self) -> CertificateFiles:
        """The configured certificate, or the room's own self-signed one."""
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            return CertificateFiles(self.settings.tls_cert, self.settings.tls_key, False)
        host, _ = split_listen(self.settings.listen)
        return ensure_self_signed(self._state_dir, server_names(self.settings.public_host, host))

    async def start(self) -> str:
        """Listen (port 0 picks one), tell the meeting its join link, return the base URL."""
        context = server_context(self.certificate())
        if self._own_media is not None:
            # The media service sets the ICE host addresses when it runs; else it is done here.
            self._undo_host_addresses = apply_webrtc_settings(self._webrtc)
        host, port = split_listen(self.settings.listen)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port, ssl_context=context).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ListenError(
                exc.errno, f"web: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        bound_port = self._runner.addresses[0][1]
        self.url = f"https://{self._public_host(host)}:{bound_port}"
        self._meeting.set_join_base_url(self.url + JOIN_PATH)
        if self._sharing is not None:
            await self._sharing.set_web_port(bound_port, self._public_host(host))
        logger.info("meeting site at %s", self.url)
        return self.url

    def _public_host(self, listen_host: str) -> str:
        shown = self.settings.public_host
        if not shown:
            shown = socket.gethostname() if listen_host in ("0.0.0.0", "::") else listen_host
        return f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # closes the sockets; each client then cleans up
            self._runner = None
        await self.hub.close()
        if self._own_media is not None:
            await self._own_media.close()
        if self._undo_host_addresses is not None:
            self._undo_host_addresses()
            self._undo_host_addresses = None

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(JOIN_PATH)

    async def _join_page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "index.html")

    async def _signalling(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"https://{request.host}":
            # Another site's page must not act for a participant's browser.
            raise web.HTTPForbidden(text=f"origin {origin} may not use this room's signalling")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=SOCKET_MAX_BYTES)
        await ws.prepare(request)
        self._connections.add(ws)
        address = request.remote or "unknown"
        await ClientConnection(ws, self._meeting, self.hub, address, self.clients).run()
        return ws

    def _slots_changed(self, participant_id: str, slots: list[dict[str, str | None]]) -> None:
        client = self.clients.get(participant_id)
        if client is not None:
            client.notify({"type": "slots", "slots": slots})

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in set(self._connections):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"room stopping")


def meeting_site(
    settings: Settings, state_dir: StateDir, services: Sequence[Service]
) -> WebSite | None:
    """The site for the room's meeting service, or None if the room hosts no meetings."""
    meetings = [service for service in services if isinstance(service, MeetingService)]
    if not meetings:
        return None
    # The room's media service when it runs; else test sources stand in for camera and mic.
    media = next((s for s in services if isinstance(s, RoomMedia)), None)
    sharing = next((s for s in services if isinstance(s, SharingService)), None)
    return WebSite(
        settings.web, state_dir, meetings[0], media, webrtc=settings.webrtc, sharing=sharing
    )
