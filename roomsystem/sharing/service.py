"""The sharing service: the key, the mDNS announcement and the one share the room shows.

Signalling (the HTTPS share endpoint, the browser page) asks `SharingService.begin_share`
with the sharer's name, address and typed key, and gets a `ShareSession` or a typed
`ShareRefused`. The session's video track goes to the room display through `ShareSession.show`;
the service reads it and ends the share when the sender leaves or stops sending. One share
at a time: a new one takes over, or (``takeover = "confirm"``) waits for the panel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from pydantic import BaseModel

from roomsystem.bus import StateBus
from roomsystem.commands import Arguments, Command, CommandError, NoArguments
from roomsystem.config import RoomSettings, SharingSettings, split_listen
from roomsystem.lifecycle import Service
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.advertise import (
    AddressSource,
    Advertiser,
    Announcement,
    api_reachable,
    machine_addresses,
    worth_announcing,
)
from roomsystem.sharing.key import Clock, GuessLimiter, SharingKey, Verdict
from roomsystem.sharing.state import SharingState

logger = logging.getLogger(__name__)

SHARE_PATH = "/share"
MAX_NAME_LENGTH = 64
FIRST_FRAME_TIMEOUT_S = 10.0


class ShareDisplay(Protocol):
    """Where the room shows a share: the display output's content input."""

    def share_started(self, session_id: str, name: str) -> None: ...

    def share_frame(self, frame: av.VideoFrame) -> None: ...

    def share_ended(self, session_id: str) -> None: ...


class FrameSink:
    """A display that keeps what it was shown: frame count, the last frame and its session.

    The room uses it when no display output is given; tests use it to see what arrived.
    """

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.frames = 0
        self.last_frame: av.VideoFrame | None = None
        self.shown = asyncio.Event()

    def share_started(self, session_id: str, name: str) -> None:
        self.session_id = session_id
        self.frames = 0
        self.last_frame = None
        self.shown.clear()

    def share_frame(self, frame: av.VideoFrame) -> None:
        self.frames += 1
        self.last_frame = frame
        self.shown.set()

    def share_ended(self, session_id: str) -> None:
        if self.session_id == session_id:
            self.session_id = None
            self.last_frame = None


class Refusal(StrEnum):
    WRONG_KEY = "wrong_key"
    LOCKED_OUT = "locked_out"
    BUSY = "busy"
    BAD_NAME = "bad_name"
    DISABLED = "disabled"


_HTTP_STATUS = {
    Refusal.WRONG_KEY: 403,
    Refusal.LOCKED_OUT: 429,
    Refusal.BUSY: 409,
    Refusal.BAD_NAME: 400,
    Refusal.DISABLED: 503,
}


@dataclass(frozen=True, slots=True)
class ShareRefused:
    """Why a share was not started; ``message`` is a sentence to show the sharer."""

    reason: Refusal
    message: str
    retry_after_s: float | None = None

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self.reason]


@dataclass(eq=False)
class ShareSession:
    """One share: from `SharingService.begin_share` until it ends (``ended`` is set)."""

    id: str
    name: str
    address: str
    started_at: datetime
    _service: SharingService = field(repr=False)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str | None = None
    _track: asyncio.Future[MediaStreamTrack] | None = field(default=None, repr=False)
    _reader: asyncio.Task[None] | None = field(default=None, repr=False)

    def show(self, track: MediaStreamTrack) -> None:
        """Put ``track`` (the sharer's video) on the room display until the share ends.

        Only the first track counts. A share whose first picture does not arrive within
        `SharingService.first_frame_timeout_s` of its start ends by itself.
        """
        if self._track is not None and not self._track.done():
            self._track.set_result(track)


class _ConfirmArgs(Arguments):
    accept: bool


class StopResult(BaseModel):
    stopped: bool
    sharer: str | None


class ConfirmResult(BaseModel):
    accepted: bool
    sharer: str


class KeyResult(BaseModel):
    key: str


def _check_name(name: str) -> str | None:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH or not cleaned.isprintable():
        return None
    return cleaned


class SharingService(Service):
    """Owns the sharing key, the mDNS announcement and the active share; publishes ``sharing``."""

    name = "sharing"

    def __init__(
        self,
        settings: SharingSettings,
        room: RoomSettings,
        bus: StateBus,
        web_listen: str = "0.0.0.0:8443",
        display: ShareDisplay | None = None,
        clock: Clock = time.monotonic,
        addresses: AddressSource = machine_addresses,
    ) -> None:
        self.settings = settings
        self._room = room
        self._bus = bus
        self._clock = clock
        self._addresses = addresses
        self.display: ShareDisplay = display if display is not None else FrameSink()
        self.limiter = GuessLimiter(
            clock,
            free_attempts=settings.free_attempts,
            lockout_initial_s=settings.lockout_initial_s,
            lockout_max_s=settings.lockout_max_s,
        )
        self.key = SharingKey(
            self.limiter,
            clock,
            rotate_every_s=settings.key_rotate_min * 60,
            pairing_code=settings.pairing_code,
        )
        self.web_host, self.web_port = split_listen(web_listen)
        self._api_port = 0  # announced for panels once the API listens where they reach it
        self.session: ShareSession | None = None
        self._pending: asyncio.Future[bool] | None = None
        self._pending_name: str | None = None
        self._advertiser: Advertiser | None = None
        self._key_changed = asyncio.Event()
        self._readers: set[asyncio.Task[None]] = set()
        self._rotation_for: tuple[str, datetime | None] = ("", None)
        # The first picture may take longer than a gap between pictures: ICE and DTLS first.
        self.first_frame_timeout_s = FIRST_FRAME_TIMEOUT_S
        self._publish()

    # -- lifecycle

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._rotate_on_time(), name="sharing:key")
            tasks.create_task(self._follow_meeting(), name="sharing:meeting")
            if self.settings.enabled:
                self._advertiser = self._make_advertiser()
                tasks.create_task(self._advertiser.run(), name="sharing:mdns")

    async def close(self) -> None:
        if self.session is not None:
            self.end_share(self.session, "the room stopped")
        self._decide_pending(False)
        for reader in list(self._readers):
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self._advertiser is not None:
            await self._advertiser.close()
            self._advertiser = None
        self._publish()

    def _make_advertiser(self) -> Advertiser:
        room_info = self._bus.get("room")
        room_id = str(getattr(room_info, "id", "")) or "room"
        announcement = Announcement(
            room_name=self._room.name,
            room_id=room_id,
            port=self.web_port,
            path=SHARE_PATH,
            key_required=self.settings.require_key,
            api_port=self._api_port,
        )
        return Advertiser(
            announcement,
            interfaces=self.settings.mdns_interfaces,
            refresh_s=self.settings.mdns_refresh_s,
            addresses=self._addresses,
            on_change=lambda name: self._publish(),
        )

    async def set_web_port(self, port: int, host: str | None = None) -> None:
        """The HTTPS site's real port (known once it binds): announced and in ``share_url``.

        ``host``: the name or address people reach the site at, for ``share_url``.
        """
        self.web_port = port
        if host:
            self.web_host = host.strip("[]")
        if self._advertiser is not None:
            await self._advertiser.update(port=port)
        self._publish()

    async def set_api_address(self, host: str, port: int) -> None:
        """Where the room's API listens: in the announcement when panels can reach it."""
        reachable = api_reachable(host, self.settings.mdns_interfaces)
        self._api_port = port if reachable else 0
        if self._advertiser is not None:
            await self._advertiser.update(api_port=self._api_port)

    async def _rotate_on_time(self) -> None:
        while True:
            due = self.key.rotates_at
            self._key_changed.clear()
            wait = None if due is None else max(0.0, due - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._key_changed.wait()
            if self.key.rotate_if_due():
                logger.info("sharing key rotated on time")
            self._publish()

    async def _follow_meeting(self) -> None:
        with self._bus.subscribe() as subscription:
            async for change in subscription:
                if change.topic == "meeting":
                    self._publish()

    # -- shares

    async def begin_share(self, name: str, address: str, key: str) -> ShareSession | ShareRefused:
        """Start showing a share from ``name`` at ``address`` if ``key`` is right."""
        if not self.settings.enabled:
            return ShareRefused(Refusal.DISABLED, "Sharing is switched off in this room.")
        cleaned = _check_name(name)
        if cleaned is None:
            return ShareRefused(
                Refusal.BAD_NAME, f"The name must be 1 to {MAX_NAME_LENGTH} printable characters."
            )
        refused = self._check_key(key, address)
        if refused is not None:
            return refused
        if self.session is not None and self.settings.takeover == "confirm":
            refused = await self._await_confirmation(cleaned)
            if refused is not None:
                return refused
        if self.session is not None:
            self.end_share(self.session, f"taken over by {cleaned}")
        return self._start(cleaned, address)

    def _check_key(self, key: str, address: str) -> ShareRefused | None:
        if not self.settings.require_key:
            return None
        check = self.key.check(key, address)
        if check.verdict is Verdict.ACCEPTED:
            return None
        if check.verdict is Verdict.LOCKED_OUT:
            return ShareRefused(
                Refusal.LOCKED_OUT,
                f"Too many wrong keys from {address}: try again in {check.retry_after_s:.0f} s.",
                check.retry_after_s,
            )
        logger.info("wrong sharing key from %s", address)
        return ShareRefused(
            Refusal.WRONG_KEY,
            "That is not the sharing key shown in the room.",
            check.retry_after_s or None,
        )

    async def _await_confirmation(self, name: str) -> ShareRefused | None:
        if self._pending is not None:
            return ShareRefused(
                Refusal.BUSY, "Someone else is already waiting for the room to accept a share."
            )
        self._pending = asyncio.get_running_loop().create_future()
        self._pending_name = name
        self._publish()
        try:
            async with asyncio.timeout(self.settings.confirm_timeout_s):
                accepted = await self._pending
        except TimeoutError:
            accepted = False
        finally:
            self._pending, self._pending_name = None, None
            self._publish()
        if not accepted:
            return ShareRefused(Refusal.BUSY, "The room did not accept the share.")
        return None

    def _decide_pending(self, accept: bool) -> bool:
        if self._pending is None or self._pending.done():
            return False
        self._pending.set_result(accept)
        return True

    def _start(self, name: str, address: str) -> ShareSession:
        session = ShareSession(
            id=f"s-{secrets.token_hex(4)}",
            name=name,
            address=address,
            started_at=datetime.now(UTC),
            _service=self,
        )
        session._track = asyncio.get_running_loop().create_future()
        session._reader = asyncio.create_task(self._read(session), name=f"sharing:{session.id}")
        self._readers.add(session._reader)
        session._reader.add_done_callback(self._readers.discard)
        self.session = session
        logger.info("share %s started by %s from %s", session.id, name, address)
        self.display.share_started(session.id, name)
        self._publish()
        return session

    def end_share(self, session: ShareSession, reason: str = "the sender left") -> None:
        """End ``session`` (idempotent): the display goes home and the key rotates."""
        if session.ended.is_set():
            return
        session.end_reason = reason
        session.ended.set()
        reader = session._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if self.session is session:
            self.session = None
            self.display.share_ended(session.id)
            self.key.rotate()
            self._key_changed.set()
            # A share waiting for the panel no longer has anything to take over.
            self._decide_pending(True)
        logger.info("share %s ended: %s", session.id, reason)
        self._publish()

    async def _read(self, session: ShareSession) -> None:
        """Hand the share's frames to the display; end the share when they stop coming."""
        assert session._track is not None
        try:
            async with asyncio.timeout(self.first_frame_timeout_s):
                track = await session._track
                frame = await track.recv()
            while not session.ended.is_set():
                if isinstance(frame, av.VideoFrame) and self.session is session:
                    self.display.share_frame(frame)
                async with asyncio.timeout(self.settings.stall_timeout_s):
                    frame = await track.recv()
        except TimeoutError:
            self.end_share(session, "no picture came from the sender")
        except MediaStreamError:
            self.end_share(session, "the sender left")

    # -- snapshot

    def _publish(self) -> None:
        session = self.session
        meeting = self._bus.get("meeting")
        in_meeting = isinstance(meeting, MeetingState) and meeting.in_meeting
        advertiser = self._advertiser
        self._bus.publish(
            "sharing",
            SharingState(
                active=session is not None,
                sharer=session.name if session else None,
                address=session.address if session else None,
                since=session.started_at if session else None,
                session=session.id if session else None,
                key=self.key.value if self.settings.require_key else "",
                key_required=self.settings.require_key,
                key_rotates_at=self._key_rotates_at(),
                share_url=self.share_url,
                takeover=self.settings.takeover,
                pending_sharer=self._pending_name,
                in_meeting=session is not None and in_meeting,
                advertised_name=advertiser.name if advertiser else None,
                advertising=advertiser is not None and advertiser.name is not None,
                enabled=self.settings.enabled,
            ),
        )

    def _key_rotates_at(self) -> datetime | None:
        """Wall-clock time of the next rotation, computed once per key so it stays put."""
        key = self.key.value
        if key != self._rotation_for[0]:
            due = self.key.rotates_at
            wall = (
                None if due is None else datetime.now(UTC) + timedelta(seconds=due - self._clock())
            )
            self._rotation_for = (key, wall)
        return self._rotation_for[1]

    @property
    def share_url(self) -> str:
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            addresses = [a for a in self._addresses() if worth_announcing(a)]
            host = addresses[0] if addresses else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.web_port}{SHARE_PATH}"

    # -- commands

    def commands(self) -> list[Command]:
        return [
            Command(
                path="sharing/stop",
                summary="Stop the share the room shows now.",
                arguments=NoArguments,
                result=StopResult,
                handler=self._stop_command,
            ),
            Command(
                path="sharing/confirm",
                summary="Accept or decline a share that asks to take over (takeover = confirm).",
                arguments=_ConfirmArgs,
                result=ConfirmResult,
                handler=self._confirm_command,
            ),
            Command(
                path="sharing/rotate-key",
                summary="Make a new sharing key now.",
                arguments=NoArguments,
                result=KeyResult,
                handler=self._rotate_command,
            ),
        ]

    async def _stop_command(self, args: NoArguments) -> StopResult:
        session = self.session
        if session is None:
            return StopResult(stopped=False, sharer=None)
        self.end_share(session, "stopped from the room")
        return StopResult(stopped=True, sharer=session.name)

    async def _confirm_command(self, args: _ConfirmArgs) -> ConfirmResult:
        name = self._pending_name
        if name is None or not self._decide_pending(args.accept):
            raise CommandError(409, "no share is waiting to be accepted")
        return ConfirmResult(accepted=args.accept, sharer=name)

    async def _rotate_command(self, args: NoArguments) -> KeyResult:
        if self.key.pairing_code is not None:
            raise CommandError(409, "the room uses a fixed pairing code ([sharing] pairing_code)")
        key = self.key.rotate()
        self._key_changed.set()
        self._publish()
        return KeyResult(key=key)
