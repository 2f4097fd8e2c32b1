"""The pairing desk: one pending request at a time, its code, its expiry, the guessing limit.

Pure: time comes from an injected monotonic clock and codes and ids from injected sources,
so expiry and the attempt limits are tested without sleeping.

A request lives ``ttl_s`` seconds and allows ``attempts`` wrong codes; the last one voids it.
Wrong codes also count for the whole room (`GuessLimiter` with one key): after a few, every
further wrong code locks pairing out for a time that doubles, so asking for a fresh code
again and again cannot turn three guesses a request into a brute force of the code space.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from roomsystem.sharing.key import Clock, GuessLimiter

CODE_DIGITS = 6
REQUEST_TTL_S = 120.0
ATTEMPTS_PER_REQUEST = 3
FREE_WRONG_CODES = 5
LOCKOUT_INITIAL_S = 30.0
LOCKOUT_MAX_S = 900.0
# The limiter's only key: wrong codes count for the room, whatever address sends them.
_THE_ROOM = "pairing"

CodeSource = Callable[[], str]
IdSource = Callable[[], str]


def random_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def random_request_id() -> str:
    return f"pr-{secrets.token_urlsafe(12)}"


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A panel waiting for its code; ``expires_at`` is on the desk's clock."""

    id: str
    panel_name: str
    address: str
    # Kept out of repr so that no log line or traceback ever shows it.
    code: str = field(repr=False)
    expires_at: float
    attempts_left: int


class Refusal(StrEnum):
    BUSY = "busy"
    LOCKED_OUT = "locked_out"
    NO_REQUEST = "no_request"
    WRONG_CODE = "wrong_code"
    LAST_ATTEMPT = "last_attempt"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why the desk said no; ``retry_after_s`` is the lockout or the wait for a busy desk."""

    reason: Refusal
    retry_after_s: float = 0.0
    attempts_left: int = 0
    other_panel: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The right code: ``request`` is done and the panel may be paired."""

    request: PendingRequest


class PairingDesk:
    """Hands out pairing codes and checks them (see the module docstring for the limits)."""

    def __init__(
        self,
        clock: Clock,
        new_code: CodeSource = random_code,
        new_id: IdSource = random_request_id,
        ttl_s: float = REQUEST_TTL_S,
        attempts: int = ATTEMPTS_PER_REQUEST,
        limiter: GuessLimiter | None = None,
    ) -> None:
        if ttl_s <= 0 or attempts < 1:
            raise ValueError("need ttl_s > 0 and attempts >= 1")
        self._clock = clock
        self._new_code = new_code
        self._new_id = new_id
        self.ttl_s = ttl_s
        self.attempts = attempts
        self.limiter = limiter or GuessLimiter(
            clock,
            free_attempts=FREE_WRONG_CODES,
            lockout_initial_s=LOCKOUT_INITIAL_S,
            lockout_max_s=LOCKOUT_MAX_S,
        )
        self._pending: PendingRequest | None = None

    def current(self) -> PendingRequest | None:
        """The pending request, if it has not expired (an expired one is dropped)."""
        pending = self._pending
        if pending is not None and self._clock() >= pending.expires_at:
            self._pending = pending = None
        return pending

    def locked_for(self) -> float:
        """Seconds until pairing may be tried again after too many wrong codes (0.0: now)."""
        return self.limiter.locked_for(_THE_ROOM)

    def open(self, panel_name: str, address: str) -> PendingRequest | Refused:
        """A new request for ``panel_name``, unless another panel's request is pending.

        The same address may ask again (a panel that restarted): its new request replaces
        the old one, with a new code.
        """
        waiting = self.locked_for()
        if waiting > 0:
            return Refused(Refusal.LOCKED_OUT, waiting)
        current = self.current()
        if current is not None and current.address != address:
            wait = current.expires_at - self._clock()
            return Refused(Refusal.BUSY, wait, other_panel=current.panel_name)
        self._pending = PendingRequest(
            id=self._new_id(),
            panel_name=panel_name,
            address=address,
            code=self._new_code(),
            expires_at=self._clock() + self.ttl_s,
            attempts_left=self.attempts,
        )
        return self._pending

    def complete(self, request_id: str, code: str) -> Accepted | Refused:
        """Check ``code`` for the request ``request_id`` (both compared in constant time)."""
        waiting = self.locked_for()
        if waiting > 0:
            return Refused(Refusal.LOCKED_OUT, waiting)
        current = self.current()
        if current is None or not _same(current.id, request_id):
            return Refused(Refusal.NO_REQUEST)
        if _same(current.code, code):
            self._pending = None
            self.limiter.forgive(_THE_ROOM)
            return Accepted(current)
        lockout = self.limiter.wrong(_THE_ROOM)
        left = current.attempts_left - 1
        if left <= 0:
            self._pending = None
            return Refused(Refusal.LAST_ATTEMPT, lockout)
        self._pending = replace(current, attempts_left=left)
        return Refused(Refusal.WRONG_CODE, lockout, attempts_left=left)

    def cancel(self) -> PendingRequest | None:
        """Drop the pending request and lift a lockout (someone with the main token asks:
        pairing must not stay blocked by whoever guessed); the request dropped, if any."""
        current, self._pending = self.current(), None
        self.limiter.forgive(_THE_ROOM)
        return current


def _same(expected: str, offered: str) -> bool:
    return secrets.compare_digest(expected.encode(), offered.encode("utf-8", "replace"))
