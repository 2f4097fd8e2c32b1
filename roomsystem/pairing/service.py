"""The room's side of pairing: the desk and the registry, published on the bus for the API.

The room owns one `Pairing` (it is part of every room, like the lifecycle, not a service
that may fail): it publishes the ``pairing`` topic, declares the management commands, and
answers the API server's calls: a pairing request, a code to check, a token to recognise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, Field

from roomsystem.bus import StateBus
from roomsystem.commands import Arguments, Command, CommandError, NoArguments
from roomsystem.config import Name
from roomsystem.pairing.codes import (
    CODE_DIGITS,
    Accepted,
    PairingDesk,
    PendingRequest,
    Refusal,
    Refused,
)
from roomsystem.pairing.panels import AmbiguousPanel, PanelRegistry, WallClock, utc_now
from roomsystem.pairing.state import PairingState, PanelInfo
from roomsystem.sharing.key import Clock
from roomsystem.statedir import StateDir

logger = logging.getLogger(__name__)

PAIRING_TOPIC = "pairing"
REQUEST_PATH = "pairing/request"
COMPLETE_PATH = "pairing/complete"
CANCEL_PATH = "pairing/cancel"
PANELS_PATH = "panels"
REVOKE_PATH = "panels/revoke"
# Deciding which panels are paired needs the room's main token, never a panel's own.
MAIN_TOKEN_ONLY = frozenset({PANELS_PATH, REVOKE_PATH, CANCEL_PATH})
# Loop timers may fire a little early; the expiry callback looks again after this.
_EXPIRY_SLACK_S = 0.05

PanelListener = Callable[[str], Awaitable[None]]


class PairingRequestArgs(Arguments):
    name: Name


class PairingCompleteArgs(Arguments):
    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    code: Annotated[str, Field(pattern=rf"^[0-9]{{{CODE_DIGITS}}}$")]


class PairingTicket(BaseModel):
    """The answer to a pairing request: the code is on the room display now."""

    request_id: str
    panel_name: str
    expires_at: datetime
    code_digits: int
    attempts: int


class PairingGranted(BaseModel):
    """The right code: the panel's own token (shown this once) and how the room lists it."""

    token: str
    panel: PanelInfo


class PanelList(BaseModel):
    panels: list[PanelInfo]


class RevokeArgs(Arguments):
    panel: Annotated[str, Field(min_length=1, max_length=64)]


class RevokeResult(BaseModel):
    revoked: PanelInfo


class CancelResult(BaseModel):
    cancelled: bool
    panel_name: str | None = None


@dataclass(frozen=True, slots=True)
class PairingError:
    """A refusal: the HTTP status, a sentence for people, and what a client can act on."""

    status: int
    message: str
    retry_after_s: float | None = None
    attempts_left: int | None = None

    def details(self) -> dict[str, float | int]:
        found: dict[str, float | int] = {}
        if self.retry_after_s:
            found["retry_after_s"] = round(self.retry_after_s, 1)
        if self.attempts_left is not None:
            found["attempts_left"] = self.attempts_left
        return found


class Pairing:
    """Pairs panels with the room and knows their tokens; publishes ``pairing``."""

    def __init__(
        self,
        bus: StateBus,
        state_dir: StateDir,
        clock: Clock = time.monotonic,
        wall: WallClock = utc_now,
        desk: PairingDesk | None = None,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._wall = wall
        self.desk = desk or PairingDesk(clock)
        self.registry = PanelRegistry(state_dir, wall)
        self._expiry: asyncio.TimerHandle | None = None
        self._expires_at: tuple[str, datetime] | None = None
        self._revoke_listeners: list[PanelListener] = []

    def load(self) -> None:
        """Read the paired panels from the state directory (the room holds its lock)."""
        self.registry.load()

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.registry.flush()

    # -- panels' tokens

    def authenticate(self, token: str) -> PanelInfo | None:
        """The paired panel whose token this is (and note that it was seen), else None."""
        record = self.registry.find(token)
        return None if record is None else self.registry.seen(record).info()

    def touch(self, panel_id: str) -> None:
        """Note that the panel was there just now (its event stream ended, say)."""
        for record in self.registry.records():
            if record.id == panel_id:
                self.registry.seen(record)

    def panels(self) -> list[PanelInfo]:
        return [record.info() for record in self.registry.records()]

    def add_revoke_listener(self, listener: PanelListener) -> None:
        """Await ``listener(panel_id)`` when a panel is unpaired (to close its streams)."""
        self._revoke_listeners.append(listener)

    # -- pairing

    def request(self, panel_name: str, address: str) -> PairingTicket | PairingError:
        """Open a pairing request: its code goes to the room display, not to the caller."""
        name = " ".join(panel_name.split())
        opened = self.desk.open(name, address)
        if isinstance(opened, Refused):
            return _refusal(opened)
        logger.info("panel %r asks to pair from %s", name, address)
        self._changed()
        return PairingTicket(
            request_id=opened.id,
            panel_name=name,
            expires_at=self._wall_expiry(opened),
            code_digits=CODE_DIGITS,
            attempts=opened.attempts_left,
        )

    def complete(self, request_id: str, code: str, address: str) -> PairingGranted | PairingError:
        """Pair the panel if ``code`` is the one on the display; never logs the code."""
        pending = self.desk.current()
        checked = self.desk.complete(request_id, code)
        self._changed()
        if isinstance(checked, Refused):
            if checked.reason in (Refusal.WRONG_CODE, Refusal.LAST_ATTEMPT) and pending:
                logger.warning(
                    "wrong pairing code for panel %r from %s (%d attempts left)",
                    pending.panel_name,
                    address,
                    checked.attempts_left,
                )
            return _refusal(checked)
        return self._pair(checked, address)

    def _pair(self, accepted: Accepted, address: str) -> PairingGranted | PairingError:
        try:
            record, token = self.registry.add(accepted.request.panel_name, address)
        except OSError as exc:
            logger.error("panel %r could not be paired: %s", accepted.request.panel_name, exc)
            return PairingError(503, f"the room cannot save the pairing now ({exc}): try again")
        logger.info("panel %r paired from %s as %s", record.name, address, record.id)
        return PairingGranted(token=token, panel=record.info())

    # -- commands

    def commands(self) -> list[Command]:
        return [
            Command(
                path=REVOKE_PATH,
                summary=(
                    "Unpair a panel (its id, or its name if no other panel has it): its token "
                    "stops working at once and its event stream is closed. Main token only."
                ),
                arguments=RevokeArgs,
                result=RevokeResult,
                handler=self._revoke,
            ),
            Command(
                path=CANCEL_PATH,
                summary="Drop the pending pairing request; main token only.",
                arguments=NoArguments,
                result=CancelResult,
                handler=self._cancel,
            ),
        ]

    async def _revoke(self, args: RevokeArgs) -> RevokeResult:
        try:
            record = self.registry.revoke(args.panel)
        except AmbiguousPanel as exc:
            raise CommandError(409, str(exc)) from None
        except LookupError as exc:
            raise CommandError(404, str(exc)) from None
        except OSError as exc:
            raise CommandError(
                409, f"the panel stays paired: cannot save the panels: {exc}"
            ) from None
        logger.info("panel %r (%s) unpaired", record.name, record.id)
        for listener in self._revoke_listeners:
            await listener(record.id)
        return RevokeResult(revoked=record.info())

    async def _cancel(self, args: NoArguments) -> CancelResult:
        dropped = self.desk.cancel()
        self._changed()
        return CancelResult(
            cancelled=dropped is not None, panel_name=dropped.panel_name if dropped else None
        )

    # -- the topic

    def _changed(self) -> None:
        self._publish()
        self._schedule_expiry()

    def _publish(self) -> None:
        pending = self.desk.current()
        state = PairingState()
        if pending is not None:
            state = PairingState(
                pending=True,
                code=pending.code,
                panel_name=pending.panel_name,
                address=pending.address,
                expires_at=self._wall_expiry(pending),
                attempts_left=pending.attempts_left,
            )
        self._bus.publish(PAIRING_TOPIC, state)

    def _wall_expiry(self, pending: PendingRequest) -> datetime:
        """The request's expiry in wall time, computed once so the topic does not jitter."""
        if self._expires_at is None or self._expires_at[0] != pending.id:
            left = timedelta(seconds=pending.expires_at - self._clock())
            self._expires_at = (pending.id, self._wall() + left)
        return self._expires_at[1]

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        pending = self.desk.current()
        if pending is None:
            return
        delay = max(0.0, pending.expires_at - self._clock()) + _EXPIRY_SLACK_S
        self._expiry = asyncio.get_running_loop().call_later(delay, self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry = None
        self._changed()


def _refusal(refused: Refused) -> PairingError:
    wait = refused.retry_after_s
    if refused.reason is Refusal.BUSY:
        return PairingError(
            409,
            f"another panel ({refused.other_panel}) is pairing now: try again in {wait:.0f} s,"
            " or cancel its request from the room (pairing/cancel)",
            retry_after_s=wait,
        )
    if refused.reason is Refusal.LOCKED_OUT:
        return PairingError(
            429, f"too many wrong pairing codes: try again in {wait:.0f} s", retry_after_s=wait
        )
    if refused.reason is Refusal.NO_REQUEST:
        return PairingError(
            404,
            "that pairing request is not pending (it expired, was used or was cancelled):"
            " ask for a new code",
        )
    if refused.reason is Refusal.LAST_ATTEMPT:
        return PairingError(
            403,
            "wrong pairing code, and that was the last attempt: ask for a new code",
            retry_after_s=wait or None,
            attempts_left=0,
        )
    return PairingError(
        403,
        f"wrong pairing code: {refused.attempts_left} attempts left",
        retry_after_s=wait or None,
        attempts_left=refused.attempts_left,
    )
