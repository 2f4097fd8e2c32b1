"""Pairing's pure core (the desk, on a fake clock), the panel registry and the room glue."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from roomsystem.bus import StateBus
from roomsystem.pairing.codes import (
    ATTEMPTS_PER_REQUEST,
    FREE_WRONG_CODES,
    LOCKOUT_INITIAL_S,
    LOCKOUT_MAX_S,
    REQUEST_TTL_S,
    Accepted,
    PairingDesk,
    PendingRequest,
    Refusal,
    Refused,
    random_code,
)
from roomsystem.pairing.panels import AmbiguousPanel, PanelRegistry, token_digest
from roomsystem.pairing.service import Pairing, PairingError, PairingGranted, PairingTicket
from roomsystem.pairing.state import PairingState
from roomsystem.statedir import PANELS_FILE, StateDir

LAN = "192.0.2.10"
OTHER = "192.0.2.20"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Codes:
    """Codes and ids in order, so a test knows the code without reading the desk."""

    def __init__(self) -> None:
        self.made = 0

    def code(self) -> str:
        self.made += 1
        return f"{self.made:06d}"

    def request_id(self) -> str:
        return f"pr-{self.made + 1}"


def make_desk(clock: FakeClock, codes: Codes | None = None) -> PairingDesk:
    codes = codes or Codes()
    return PairingDesk(clock, new_code=codes.code, new_id=codes.request_id)


def opened(desk: PairingDesk, name: str = "Panel", address: str = LAN) -> PendingRequest:
    request = desk.open(name, address)
    assert isinstance(request, PendingRequest), request
    return request


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# -- the desk


def test_a_random_code_is_six_digits() -> None:
    codes = {random_code() for _ in range(200)}
    assert all(len(code) == 6 and code.isdigit() for code in codes)
    assert len(codes) > 150


def test_the_right_code_pairs_once_and_the_code_is_never_in_repr() -> None:
    desk = make_desk(FakeClock())
    request = opened(desk, "Lobby")
    assert request.code not in repr(request)
    assert desk.current() == request
    accepted = desk.complete(request.id, request.code)
    assert isinstance(accepted, Accepted)
    assert accepted.request.panel_name == "Lobby"
    assert desk.current() is None
    assert desk.complete(request.id, request.code) == Refused(Refusal.NO_REQUEST)


def test_a_request_expires_after_its_time() -> None:
    clock = FakeClock()
    desk = make_desk(clock)
    request = opened(desk)
    assert request.expires_at == clock.now + REQUEST_TTL_S
    clock.advance(REQUEST_TTL_S - 0.01)
    assert desk.current() == request
    clock.advance(0.01)
    assert desk.current() is None
    assert desk.complete(request.id, request.code) == Refused(Refusal.NO_REQUEST)


def test_the_last_wrong_code_voids_the_request() -> None:
    desk = make_desk(FakeClock())
    request = opened(desk)
    outcomes = [desk.complete(request.id, wrong(request.code)) for _ in range(3)]
    assert outcomes == [
        Refused(Refusal.WRONG_CODE, attempts_left=2),
        Refused(Refusal.WRONG_CODE, attempts_left=1),
        Refused(Refusal.LAST_ATTEMPT),
    ]
    assert desk.current() is None
    assert desk.complete(request.id, request.code) == Refused(Refusal.NO_REQUEST)


def test_a_wrong_request_id_with_the_right_code_does_not_pair() -> None:
    desk = make_desk(FakeClock())
    request = opened(desk)
    assert desk.complete("pr-other", request.code) == Refused(Refusal.NO_REQUEST)
    assert desk.current() == request  # and costs the real request nothing


def test_another_address_waits_and_the_same_address_asks_again() -> None:
    clock = FakeClock()
    desk = make_desk(clock)
    first = opened(desk, "A", LAN)
    clock.advance(20)
    busy = desk.open("B", OTHER)
    assert busy == Refused(Refusal.BUSY, REQUEST_TTL_S - 20, other_panel="A")
    again = opened(desk, "A again", LAN)
    assert (again.id, again.code) != (first.id, first.code)
    assert desk.complete(first.id, first.code) == Refused(Refusal.NO_REQUEST)
    assert desk.cancel() == again
    assert opened(desk, "B", OTHER).panel_name == "B"


def test_wrong_codes_across_requests_lock_pairing_out_with_a_doubling_wait() -> None:
    clock = FakeClock()
    desk = make_desk(clock)
    for _ in range(FREE_WRONG_CODES):
        request = opened(desk)
        outcome = desk.complete(request.id, wrong(request.code))
        assert isinstance(outcome, Refused)
        assert outcome.retry_after_s == 0
    request = opened(desk)
    assert desk.complete(request.id, wrong(request.code)).retry_after_s == LOCKOUT_INITIAL_S  # type: ignore[union-attr]
    # Locked out: even the right code is refused, and no new request is opened.
    assert desk.complete(request.id, request.code) == Refused(Refusal.LOCKED_OUT, LOCKOUT_INITIAL_S)
    assert desk.open("Panel", OTHER) == Refused(Refusal.LOCKED_OUT, LOCKOUT_INITIAL_S)
    clock.advance(LOCKOUT_INITIAL_S)
    request = opened(desk)
    assert desk.complete(request.id, wrong(request.code)).retry_after_s == 2 * LOCKOUT_INITIAL_S  # type: ignore[union-attr]
    clock.advance(2 * LOCKOUT_INITIAL_S)
    request = opened(desk)
    assert isinstance(desk.complete(request.id, request.code), Accepted)
    # The right code forgave the earlier mistakes.
    request = opened(desk)
    outcome = desk.complete(request.id, wrong(request.code))
    assert outcome == Refused(Refusal.WRONG_CODE, attempts_left=2)


def test_cancelling_lifts_a_lockout() -> None:
    desk = make_desk(FakeClock())
    for _ in range(FREE_WRONG_CODES + 1):
        request = opened(desk)
        desk.complete(request.id, wrong(request.code))
    assert desk.open("Panel", OTHER) == Refused(Refusal.LOCKED_OUT, LOCKOUT_INITIAL_S)
    desk.cancel()  # with the main token: whoever guessed no longer blocks pairing
    request = opened(desk)
    assert isinstance(desk.complete(request.id, request.code), Accepted)


def test_the_lockout_stops_growing_at_its_maximum() -> None:
    clock = FakeClock()
    desk = make_desk(clock)
    waits = []
    for _ in range(FREE_WRONG_CODES + 12):
        clock.advance(desk.locked_for())
        request = opened(desk)
        outcome = desk.complete(request.id, wrong(request.code))
        assert isinstance(outcome, Refused)
        waits.append(outcome.retry_after_s)
    assert max(waits) == LOCKOUT_MAX_S
    assert waits[-1] == LOCKOUT_MAX_S


class GuessingAtTheDesk(RuleBasedStateMachine):
    """Any mix of requests, guesses, cancels and waiting, checked against the limits."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.desk = PairingDesk(self.clock)
        self.request: PendingRequest | None = None
        self.evaluated_wrong: list[float] = []
        self.evaluations: dict[str, int] = {}
        self.pairings = 0

    @rule(address=st.sampled_from([LAN, OTHER]))
    def ask(self, address: str) -> None:
        outcome = self.desk.open("Panel", address)
        if isinstance(outcome, PendingRequest):
            self.request = outcome
            assert outcome.attempts_left == ATTEMPTS_PER_REQUEST

    @precondition(lambda self: self.request is not None)
    @rule(offset=st.integers(min_value=1, max_value=999_999))
    def guess_wrong(self, offset: int) -> None:
        assert self.request is not None
        guess = f"{(int(self.request.code) + offset) % 1_000_000:06d}"
        outcome = self.desk.complete(self.request.id, guess)
        assert not isinstance(outcome, Accepted)
        if outcome.reason in (Refusal.WRONG_CODE, Refusal.LAST_ATTEMPT):
            self.evaluated_wrong.append(self.clock.now)
            self.evaluations[self.request.id] = self.evaluations.get(self.request.id, 0) + 1

    @precondition(lambda self: self.request is not None)
    @rule()
    def guess_right(self) -> None:
        assert self.request is not None
        outcome = self.desk.complete(self.request.id, self.request.code)
        if isinstance(outcome, Accepted):
            self.pairings += 1
            # Forgiven: the count of free wrong codes starts again.
            self.evaluated_wrong.clear()
            self.request = None

    @rule()
    def cancel(self) -> None:
        self.desk.cancel()
        self.evaluated_wrong.clear()  # the main token lifts the lockout

    @rule(seconds=st.floats(min_value=0, max_value=90))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def pending_is_live_and_within_its_attempts(self) -> None:
        current = self.desk.current()
        if current is not None:
            assert self.clock.now < current.expires_at
            assert 1 <= current.attempts_left <= ATTEMPTS_PER_REQUEST
            assert current.attempts_left == ATTEMPTS_PER_REQUEST - self.evaluations.get(
                current.id, 0
            )

    @invariant()
    def guesses_beyond_the_free_ones_are_spaced_by_the_lockout(self) -> None:
        # The first free wrong codes cost nothing; from the next on each earns a lockout.
        limited = self.evaluated_wrong[FREE_WRONG_CODES:]
        gaps = [later - earlier for earlier, later in itertools.pairwise(limited)]
        assert all(gap >= LOCKOUT_INITIAL_S for gap in gaps), gaps

    @invariant()
    def no_request_is_checked_more_often_than_it_allows(self) -> None:
        assert all(count <= ATTEMPTS_PER_REQUEST for count in self.evaluations.values())


TestGuessingAtTheDesk = GuessingAtTheDesk.TestCase
TestGuessingAtTheDesk.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- the registry


class WallClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    directory = StateDir(tmp_path / "state")
    directory.ensure()
    return directory


def test_the_registry_keeps_only_token_hashes_and_survives_a_reload(state_dir: StateDir) -> None:
    registry = PanelRegistry(state_dir)
    registry.load()
    record, token = registry.add("Lobby", LAN)
    assert registry.find(token) == record
    assert registry.find(token + "x") is None
    kept = (state_dir.path / PANELS_FILE).read_text()
    assert token not in kept
    assert token_digest(token) in kept
    assert (state_dir.path / PANELS_FILE).stat().st_mode & 0o777 == 0o600

    again = PanelRegistry(state_dir)
    again.load()
    assert again.find(token) == record
    assert again.revoke("lobby") == record
    reloaded = PanelRegistry(state_dir)
    reloaded.load()
    assert reloaded.find(token) is None
    assert reloaded.records() == []


def test_revoking_by_name_needs_a_unique_name(state_dir: StateDir) -> None:
    registry = PanelRegistry(state_dir)
    first, _ = registry.add("Panel", LAN)
    second, _ = registry.add("Panel", OTHER)
    with pytest.raises(AmbiguousPanel, match=first.id):
        registry.revoke("Panel")
    with pytest.raises(LookupError, match="no panel 'Desk'"):
        registry.revoke("Desk")
    assert registry.revoke(second.id) == second
    assert registry.revoke("Panel") == first


def test_an_unreadable_registry_pairs_nobody(state_dir: StateDir) -> None:
    registry = PanelRegistry(state_dir)
    _, token = registry.add("Lobby", LAN)
    (state_dir.path / PANELS_FILE).write_text('{"schema_version": 1, "panels": [{"id": 3}]}')
    reloaded = PanelRegistry(state_dir)
    reloaded.load()
    assert reloaded.find(token) is None
    assert list(state_dir.path.glob(f"{PANELS_FILE}.corrupt-*"))


def test_last_seen_is_written_once_a_minute_and_on_flush(state_dir: StateDir) -> None:
    wall = WallClock()
    registry = PanelRegistry(state_dir, wall)
    record, token = registry.add("Lobby", LAN)

    def on_disk() -> str | None:
        panels = json.loads((state_dir.path / PANELS_FILE).read_text())["panels"]
        return panels[0]["last_seen"]

    paired = on_disk()
    wall.now += timedelta(seconds=10)
    seen = registry.seen(record)
    assert seen.last_seen == wall.now
    assert registry.find(token) == seen
    assert on_disk() == paired
    wall.now += timedelta(seconds=55)
    registry.seen(seen)
    assert on_disk() == wall.now.isoformat().replace("+00:00", "Z")
    wall.now += timedelta(seconds=5)
    registry.seen(seen)
    registry.flush()
    assert on_disk() == wall.now.isoformat().replace("+00:00", "Z")


# -- the room's pairing, on a real bus


def pairing_bus() -> StateBus:
    return StateBus({"pairing": PairingState()})


async def test_the_topic_shows_the_code_until_the_panel_is_paired(state_dir: StateDir) -> None:
    bus = pairing_bus()
    pairing = Pairing(bus, state_dir)
    pairing.load()
    ticket = pairing.request("  Lobby   panel ", LAN)
    assert isinstance(ticket, PairingTicket)
    shown = bus.get("pairing")
    assert isinstance(shown, PairingState)
    assert (shown.pending, shown.panel_name, shown.address) == (True, "Lobby panel", LAN)
    assert shown.expires_at == ticket.expires_at
    assert shown.expires_at is not None
    left = (shown.expires_at - datetime.now(UTC)).total_seconds()
    assert REQUEST_TTL_S - 5 < left <= REQUEST_TTL_S
    assert shown.code is not None

    refused = pairing.complete(ticket.request_id, wrong(shown.code), LAN)
    assert isinstance(refused, PairingError)
    assert (refused.status, refused.attempts_left) == (403, 2)
    assert bus.get("pairing").attempts_left == 2  # type: ignore[attr-defined]

    granted = pairing.complete(ticket.request_id, shown.code, LAN)
    assert isinstance(granted, PairingGranted)
    assert bus.get("pairing") == PairingState()
    assert pairing.authenticate(granted.token) == pairing.panels()[0]
    pairing.close()


async def test_the_topic_clears_when_the_request_expires(state_dir: StateDir) -> None:
    bus = pairing_bus()
    pairing = Pairing(bus, state_dir, desk=PairingDesk(time.monotonic, ttl_s=0.2))
    assert isinstance(pairing.request("Panel", LAN), PairingTicket)
    with bus.subscribe() as subscription:
        async with asyncio.timeout(2):
            while bus.get("pairing").pending:  # type: ignore[attr-defined]
                await subscription.next()
    pairing.close()


async def test_revoking_tells_the_listeners_and_close_stops_the_timer(state_dir: StateDir) -> None:
    pairing = Pairing(pairing_bus(), state_dir)
    told: list[str] = []

    async def listener(panel_id: str) -> None:
        told.append(panel_id)

    pairing.add_revoke_listener(listener)
    ticket = pairing.request("Panel", LAN)
    assert isinstance(ticket, PairingTicket)
    code = pairing.desk.current().code  # type: ignore[union-attr]
    granted = pairing.complete(ticket.request_id, code, LAN)
    assert isinstance(granted, PairingGranted)
    (revoke, _cancel) = pairing.commands()
    result = await revoke.handler(revoke.arguments.model_validate({"panel": "Panel"}))
    assert told == [granted.panel.id]
    assert result.revoked.id == granted.panel.id  # type: ignore[attr-defined]
    assert pairing.authenticate(granted.token) is None

    assert isinstance(pairing.request("Another", LAN), PairingTicket)
    pairing.close()
    assert pairing._expiry is None
