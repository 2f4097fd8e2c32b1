"""One browser's signalling connection: join, wait, connect media, and follow the meeting.

The browser sends `roomsystem.meeting.signalling` messages; the room answers each bad one
with an ``error`` to this browser only and carries on. What the meeting tells the
participant (admitted, muted, removed, chat, ...) is forwarded as ``event`` messages; on
admission the room makes the peer connection and sends its offer. When the socket goes
away, for whatever reason, the participant leaves the meeting and the peer is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from roomsystem.meeting.peers import PeerError, PeerHub
from roomsystem.meeting.policy import (
    FINAL_EVENTS,
    ChatTarget,
    ControlRefused,
    EventKind,
    JoinRefused,
    JoinRequest,
)
from roomsystem.meeting.service import MeetingService, ParticipantSession, ParticipantView
from roomsystem.meeting.signalling import (
    Answer,
    BadMessage,
    Chat,
    ClientMessage,
    Hand,
    Join,
    Leave,
    MediaState,
    Share,
    error_message,
    offer_message,
    parse_client_message,
)

logger = logging.getLogger(__name__)

OUTBOX_SIZE = 256
SHARE_NOT_ALLOWED = "The host has not allowed you to share your screen."


def view_message(view: ParticipantView) -> dict[str, Any]:
    return dataclasses.asdict(view)


class ClientConnection:
    """Serves one participant's WebSocket until it closes."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        meeting: MeetingService,
        hub: PeerHub,
        address: str,
        registry: dict[str, ClientConnection],
    ) -> None:
        self._ws = ws
        self._meeting = meeting
        self._hub = hub
        self._address = address
        self._registry = registry
        self._session: ParticipantSession | None = None
        self._events: asyncio.Task[None] | None = None
        # One writer keeps messages in order; a browser that stops reading is dropped.
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUTBOX_SIZE)
        self._overflowed = False
        self._writer: asyncio.Task[None] | None = None

    @property
    def participant_id(self) -> str | None:
        return self._session.id if self._session is not None else None

    async def run(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="client:writer")
        try:
            async for message in self._ws:
                if message.type is WSMsgType.TEXT:
                    await self._handle(message.data)
                elif message.type is WSMsgType.BINARY:
                    self.notify(error_message("bad_message", "send JSON text messages"))
                elif message.type is WSMsgType.ERROR:
                    # aiohttp has already told the browser (e.g. 1009 message too big).
                    logger.info("signalling from %s failed: %s", self._address, message.data)
                    break
        finally:
            await self._cleanup()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    def notify(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the browser; a browser that stopped reading is closed."""
        if not self._outbox.full():
            self._outbox.put_nowait(message)
        elif not self._overflowed:
            logger.warning("participant at %s stopped reading: closing", self._address)
            self._overflowed = True
            if self._writer is not None:
                self._writer.cancel()

    async def close(self, code: int, reason: str) -> None:
        """Close after what is queued has been sent (a refusal must reach the browser)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await self._outbox.join()
        await self._ws.close(code=code, message=reason.encode())

    async def _write(self) -> None:
        try:
            while True:
                message = await self._outbox.get()
                try:
                    await self._ws.send_json(message)
                finally:
                    self._outbox.task_done()
        except ConnectionError:
            return
        except asyncio.CancelledError:
            if not self._overflowed:
                raise
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(1):
                await self._ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")

    async def _handle(self, raw: str) -> None:
        try:
            message = parse_client_message(raw)
        except BadMessage as exc:
            self.notify(error_message("bad_message", str(exc)))
            return
        try:
            await self._dispatch(message)
        except BadMessage as exc:
            self.notify(error_message("bad_message", str(exc)))
        except PeerError as exc:
            self.notify(error_message("media", str(exc)))
        except (ControlRefused, KeyError, ValueError) as exc:
            text = exc.args[0] if exc.args else type(exc).__name__
            self.notify(error_message("refused", str(text)))

    async def _dispatch(self, message: ClientMessage) -> None:
        if isinstance(message, Join):
            await self._join(message)
            return
        session = self._session
        if session is None:
            raise BadMessage("join the meeting first")
        pid = session.id
        if isinstance(message, Answer):
            await self._hub.answer(pid, message.sdp)
        elif isinstance(message, MediaState):
            if message.mic is not None:
                self._meeting.set_muted(pid, not message.mic)
            if message.camera is not None:
                self._meeting.set_video(pid, message.camera)
            self._own_change(pid)
        elif isinstance(message, Chat):
            to = ChatTarget.HOST if message.to == "host" else ChatTarget.EVERYONE
            self._meeting.chat(pid, message.text, to=to)
        elif isinstance(message, Hand):
            self._meeting.raise_hand(pid, message.up)
            self._own_change(pid)
        elif isinstance(message, Share):
            await self._share(pid, message.on)
        elif isinstance(message, Leave):
            self._meeting.leave(pid)

    async def _join(self, message: Join) -> None:
        if self._session is not None:
            raise BadMessage("already joined: open a new connection to join again")
        request = JoinRequest(
            meeting_id=message.meeting_id,
            name=message.name,
            address=self._address,
            passcode=message.passcode,
            link_token=message.token,
            invite=message.invite,
            client_key=message.client_key,
        )
        try:
            session = self._meeting.join(request)
        except JoinRefused as exc:
            self.notify(
                error_message(str(exc.reason), exc.message, fatal=True)
                | {"retry_after_s": exc.retry_after_s}
            )
            await self.close(WSCloseCode.POLICY_VIOLATION, "join refused")
            return
        self._session = session
        self._registry[session.id] = self
        self.notify(
            {
                "type": "joined",
                "participant_id": session.id,
                "waiting": session.waiting,
                "view": view_message(session.view),
            }
        )
        self._events = asyncio.create_task(
            self._follow_events(session), name=f"client:{session.id}"
        )
        if not session.waiting:
            await self._connect_media(session)

    async def _share(self, pid: str, on: bool) -> None:
        if on and not self._meeting.may_share(pid):
            self.notify(error_message("share_denied", SHARE_NOT_ALLOWED))
            return
        self._hub.set_sharing(pid, on)
        self.notify({"type": "sharing", "on": on})

    async def _follow_events(self, session: ParticipantSession) -> None:
        async for event in session:
            self.notify(
                {
                    "type": "event",
                    "kind": str(event.kind),
                    "message": event.message,
                    "view": view_message(event.view),
                    "chat": dataclasses.asdict(event.chat) if event.chat else None,
                }
            )
            if event.kind is EventKind.ADMITTED:
                await self._connect_media(session)
            elif event.kind is EventKind.SHARE_DENIED and session.id in self._hub.peers:
                self._hub.set_sharing(session.id, False)
            if event.kind in FINAL_EVENTS:
                await self.close(WSCloseCode.OK, str(event.kind))
                return
            self._follow(event.view)

    async def _connect_media(self, session: ParticipantSession) -> None:
        try:
            sdp = await self._hub.connect(session.id, session.view.name)
        except PeerError as exc:
            self.notify(error_message("media", str(exc)))
            return
        self._follow(session.view)
        self.notify(offer_message(sdp))

    def _own_change(self, pid: str) -> None:
        """The meeting tells others what we changed; this browser learns it from here."""
        view = self._meeting.view(pid)
        self._follow(view)
        self.notify({"type": "view", "view": view_message(view)})

    def _follow(self, view: ParticipantView) -> None:
        """Forward only what the meeting allows: no audio while muted, no video while off."""
        self._hub.set_forwarding(view.id, audio=not view.muted, video=view.video)

    async def _cleanup(self) -> None:
        if self._events is not None:
            self._events.cancel()
            (outcome,) = await asyncio.gather(self._events, return_exceptions=True)
            if isinstance(outcome, Exception):
                logger.error("following the meeting failed", exc_info=outcome)
        if self._session is not None:
            # The meeting may have ended or moved on; leaving is then already done.
            with contextlib.suppress(ControlRefused, KeyError):
                self._meeting.leave(self._session.id)
            await self._hub.disconnect(self._session.id)
            if self._registry.get(self._session.id) is self:
                del self._registry[self._session.id]
