"""The sharing key: a short code shown only inside the room, and the limit on guessing it.

The key proves that a laptop is in the room: only people who can see the room's display or
panel know it. It is 6 characters from an alphabet without look-alikes (no 0/O, 1/I/L), so
it can be read across a room and typed without doubt. It changes after every share and on a
timer, unless the room has a fixed pairing code. Wrong keys are counted per address; after a
few, that address is locked out for a time that doubles with each further wrong key, and a
locked-out address is refused even with the right key, so guessing cannot race the lockout.

Everything here is pure: time comes from an injected clock, randomness from an injected
source, so the behaviour is tested without sleeping.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
KEY_LENGTH = 6
# Characters people put between groups when they copy a key; not part of it.
_SEPARATORS = str.maketrans("", "", " -_.\t")

Clock = Callable[[], float]
Chooser = Callable[[str], str]


def normalize(text: str) -> str:
    """A typed key as compared: upper case, separators dropped."""
    return text.translate(_SEPARATORS).upper()


def generate_key(choose: Chooser = secrets.choice) -> str:
    return "".join(choose(ALPHABET) for _ in range(KEY_LENGTH))


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    verdict: Verdict
    # LOCKED_OUT: seconds until the address may try again; WRONG: the lockout it just earned.
    retry_after_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


@dataclass(slots=True)
class _Strikes:
    wrong: int = 0
    locked_until: float = 0.0
    last_wrong_at: float = 0.0


class GuessLimiter:
    """Wrong attempts per address, with a lockout that doubles from ``lockout_initial_s``.

    ``free_attempts`` wrong keys cost nothing; each one after that locks the address out for
    ``lockout_initial_s * 2**n`` seconds, at most ``lockout_max_s``. An address that stays
    quiet for ``forget_after_s`` after its lockout starts afresh. At most ``max_addresses``
    addresses are remembered (the oldest is forgotten first) so a flood cannot grow memory.
    """

    def __init__(
        self,
        clock: Clock,
        free_attempts: int = 3,
        lockout_initial_s: float = 5.0,
        lockout_max_s: float = 300.0,
        forget_after_s: float = 3600.0,
        max_addresses: int = 4096,
    ) -> None:
        if free_attempts < 0 or lockout_initial_s <= 0 or lockout_max_s < lockout_initial_s:
            raise ValueError("need free_attempts >= 0 and 0 < lockout_initial_s <= lockout_max_s")
        self._clock = clock
        self.free_attempts = free_attempts
        self.lockout_initial_s = lockout_initial_s
        self.lockout_max_s = lockout_max_s
        self.forget_after_s = forget_after_s
        self.max_addresses = max_addresses
        self._strikes: OrderedDict[str, _Strikes] = OrderedDict()

    def locked_for(self, address: str) -> float:
        """Seconds ``address`` must still wait (0.0: it may try now)."""
        strikes = self._current(address)
        if strikes is None:
            return 0.0
        return max(0.0, strikes.locked_until - self._clock())

    def wrong(self, address: str) -> float:
        """Count a wrong key from ``address``; the lockout it earned (0.0: none yet)."""
        now = self._clock()
        strikes = self._current(address) or _Strikes()
        strikes.wrong += 1
        strikes.last_wrong_at = now
        over = strikes.wrong - self.free_attempts
        lockout = 0.0
        if over > 0:
            # Cap the exponent first: 2**over for a huge count would overflow a float.
            lockout = min(self.lockout_initial_s * 2 ** min(over - 1, 64), self.lockout_max_s)
            strikes.locked_until = now + lockout
        self._strikes[address] = strikes
        self._strikes.move_to_end(address)
        while len(self._strikes) > self.max_addresses:
            self._strikes.popitem(last=False)
        return lockout

    def forgive(self, address: str) -> None:
        """The address got in: its earlier mistakes no longer count."""
        self._strikes.pop(address, None)

    def _current(self, address: str) -> _Strikes | None:
        strikes = self._strikes.get(address)
        if strikes is None:
            return None
        quiet_since = max(strikes.locked_until, strikes.last_wrong_at)
        if self._clock() - quiet_since >= self.forget_after_s:
            del self._strikes[address]
            return None
        return strikes

    @property
    def tracked(self) -> int:
        return len(self._strikes)


class SharingKey:
    """The room's current key, when it changes, and the check of a typed key.

    ``pairing_code`` fixes the key (it never rotates); otherwise a new random key is made on
    `rotate` and whenever ``rotate_every_s`` (0: never) has passed since the last one.
    """

    def __init__(
        self,
        limiter: GuessLimiter,
        clock: Clock,
        rotate_every_s: float = 0.0,
        pairing_code: str | None = None,
        choose: Chooser = secrets.choice,
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self.rotate_every_s = rotate_every_s
        self.pairing_code = normalize(pairing_code) if pairing_code else None
        self._choose = choose
        self._key = ""
        self._made_at = 0.0
        self.rotate()

    @property
    def value(self) -> str:
        """The key to show in the room (rotated first if its time has come)."""
        self.rotate_if_due()
        return self._key

    @property
    def rotates_at(self) -> float | None:
        """Clock time of the next timed rotation, or None if the key does not rotate on time."""
        if self.pairing_code is not None or self.rotate_every_s <= 0:
            return None
        return self._made_at + self.rotate_every_s

    def rotate(self) -> str:
        """A new key now (the pairing code stays as it is)."""
        self._made_at = self._clock()
        if self.pairing_code is not None:
            self._key = self.pairing_code
        else:
            previous = self._key
            self._key = generate_key(self._choose)
            # The same key twice would look like no rotation at all to people in the room.
            for _ in range(8):
                if self._key != previous:
                    break
                self._key = generate_key(self._choose)
        return self._key

    def rotate_if_due(self) -> bool:
        due = self.rotates_at
        if due is None or self._clock() < due:
            return False
        self.rotate()
        return True

    def check(self, typed: str, address: str) -> KeyCheck:
        """Check ``typed`` from ``address``: accepted, wrong, or refused while locked out."""
        waiting = self._limiter.locked_for(address)
        if waiting > 0:
            return KeyCheck(Verdict.LOCKED_OUT, waiting)
        if secrets.compare_digest(normalize(typed).encode(), self.value.encode()):
            self._limiter.forgive(address)
            return KeyCheck(Verdict.ACCEPTED)
        return KeyCheck(Verdict.WRONG, self._limiter.wrong(address))


def monotonic_clock() -> float:
    return time.monotonic()
