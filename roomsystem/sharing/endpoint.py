"""The share endpoint: senders (the browser page, `roomshare`) post a WebRTC offer and a key.

``POST /share/offer`` with JSON ``{"name", "key", "sdp", "type": "offer"}`` answers
``201 {"type": "answer", "sdp", "session", "token"}`` and the room starts showing the share;
``DELETE /share/session/{token}`` ends it; ``GET /share`` is the browser's share page.
Refusals are JSON ``{"error", "message"}``: 400 for a malformed request or offer, 403 wrong
key, 429 locked out (with ``Retry-After``), 409 busy, 503 sharing off. Mount it on the
room's HTTPS site with `add_share_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from pathlib import Path
from typing import Literal

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roomsystem.media.ice import close_peer_connection
from roomsystem.sharing.service import ShareRefused, ShareSession, SharingService

logger = logging.getLogger(__name__)

PAGE_PATH = "/share"
WEB_ROOT = Path(__file__).with_name("web")
PAGE_FILES = ("share.js", "share.css")
OFFER_PATH = "/share/offer"
SESSION_PATH = "/share/session/{token}"
MAX_OFFER_BYTES = 64 * 1024
CLOSE_TIMEOUT_S = 2.0


class ShareOffer(BaseModel):
    """What a sender posts to start a share."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=64)
    key: str = Field(max_length=32)
    sdp: str = Field(min_length=1, max_length=MAX_OFFER_BYTES)
    type: Literal["offer"]


class BadOffer(ValueError):
    """The offer cannot start a share; the text says why."""


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def check_offer_sdp(sdp: str) -> None:
    """Refuse an SDP that is not an offer with a video section the room can receive."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises many kinds on bad input
        raise BadOffer(f"the SDP offer cannot be parsed ({type(exc).__name__})") from None
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise BadOffer("the SDP offer has no video section")
    if all(m.direction not in ("sendonly", "sendrecv") for m in video):
        raise BadOffer("the SDP offer sends no video")
    if not any(m.port for m in video) or not all(m.ice and m.ice.usernameFragment for m in video):
        raise BadOffer("the SDP offer's video section has no ICE credentials or port")


async def _read_offer(request: web.Request) -> ShareOffer:
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES * 2:
        raise BadOffer(f"the request body is larger than {MAX_OFFER_BYTES * 2} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_OFFER_BYTES * 2:
            raise BadOffer(f"the request body is larger than {MAX_OFFER_BYTES * 2} bytes")
        chunks.append(chunk)
    return parse_offer(b"".join(chunks))


def parse_offer(body: bytes) -> ShareOffer:
    """The offer in a request body, or `BadOffer` saying what is wrong with it."""
    try:
        offer = ShareOffer.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadOffer(f"{where}: {first['msg']}") from None
    check_offer_sdp(offer.sdp)
    return offer


class ShareEndpoint:
    """The aiohttp handlers and the peer connection of each share they started."""

    def __init__(
        self, service: SharingService, configuration: RTCConfiguration | None = None
    ) -> None:
        self.service = service
        # Never aiortc's default, which asks a public STUN server.
        self._configuration = configuration or RTCConfiguration(iceServers=[])
        self._shares: dict[str, tuple[ShareSession, RTCPeerConnection]] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PAGE_PATH, self.page)
        for name in PAGE_FILES:
            app.router.add_get(f"{PAGE_PATH}/{name}", self.page_file)
        app.router.add_post(OFFER_PATH, self.offer)
        app.router.add_delete(SESSION_PATH, self.stop)
        app.on_shutdown.append(self._on_shutdown)

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "share.html")

    async def page_file(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / request.path.rsplit("/", 1)[1])

    async def offer(self, request: web.Request) -> web.Response:
        try:
            offer = await _read_offer(request)
        except BadOffer as exc:
            return _error(400, "bad_offer", str(exc))
        address = request.remote or "unknown"
        result = await self.service.begin_share(offer.name, address, offer.key)
        if isinstance(result, ShareRefused):
            return self._refused(result)
        try:
            answer = await self._answer(result, offer)
        except (BadOffer, ValueError) as exc:
            self.service.end_share(result, "the offer could not be answered")
            return _error(400, "bad_offer", f"the SDP offer cannot be answered: {exc}")
        token = secrets.token_urlsafe(16)
        self._shares[token] = (result, answer[1])
        self._watch(token, result, answer[1])
        return web.json_response(
            {"type": "answer", "sdp": answer[0], "session": result.id, "token": token},
            status=201,
        )

    def _refused(self, refusal: ShareRefused) -> web.Response:
        headers = {}
        if refusal.retry_after_s:
            headers["Retry-After"] = str(math.ceil(refusal.retry_after_s))
        body: dict[str, object] = {"error": refusal.reason.value, "message": refusal.message}
        if refusal.retry_after_s:
            body["retry_after_s"] = round(refusal.retry_after_s, 1)
        return web.json_response(body, status=refusal.http_status, headers=headers)

    async def _answer(
        self, session: ShareSession, offer: ShareOffer
    ) -> tuple[str, RTCPeerConnection]:
        pc = RTCPeerConnection(self._configuration)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                session.show(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.service.end_share(session, "the connection to the sender was lost")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await close_peer_connection(pc)
            raise
        return pc.localDescription.sdp, pc

    def _watch(self, token: str, session: ShareSession, pc: RTCPeerConnection) -> None:
        async def close_when_ended() -> None:
            try:
                await session.ended.wait()
            finally:
                self._shares.pop(token, None)
                await close_peer_connection(pc)

        task = asyncio.create_task(close_when_ended(), name=f"sharing:pc:{session.id}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def stop(self, request: web.Request) -> web.Response:
        share = self._shares.get(request.match_info["token"])
        if share is None:
            return _error(404, "no_share", "no share with that token is running")
        self.service.end_share(share[0], "the sender stopped sharing")
        return web.Response(status=204)

    async def close(self) -> None:
        """End every share this endpoint started and close their connections."""
        for session, _pc in list(self._shares.values()):
            self.service.end_share(session, "the room stopped")
        watchers = list(self._watchers)
        if not watchers:
            return
        # Let each watcher finish closing its connection: cancelling a task inside
        # RTCPeerConnection.close() would break aiortc's own close running beside it.
        _done, late = await asyncio.wait(watchers, timeout=CLOSE_TIMEOUT_S)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()


def add_share_routes(
    app: web.Application,
    service: SharingService,
    configuration: RTCConfiguration | None = None,
) -> ShareEndpoint:
    """Serve the share endpoint on ``app``; it is closed when ``app`` shuts down.

    ``configuration``: the room's ``rtc_configuration`` (no ICE servers unless configured).
    """
    endpoint = ShareEndpoint(service, configuration)
    endpoint.add_routes(app)
    return endpoint
