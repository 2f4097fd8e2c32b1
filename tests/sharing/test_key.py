"""The sharing key and the limit on guessing it, with a clock the tests move."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsystem.sharing.key import (
    ALPHABET,
    KEY_LENGTH,
    GuessLimiter,
    KeyCheck,
    SharingKey,
    Verdict,
    generate_key,
    normalize,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_key(
    clock: FakeClock, rotate_every_s: float = 0.0, pairing_code: str | None = None, **limits: float
) -> SharingKey:
    limiter = GuessLimiter(clock, **limits)  # type: ignore[arg-type]
    return SharingKey(limiter, clock, rotate_every_s=rotate_every_s, pairing_code=pairing_code)


def wrong_for(key: SharingKey) -> str:
    return "ZZZZZZ" if key.value != "ZZZZZZ" else "YYYYYY"


def test_the_alphabet_has_no_look_alikes() -> None:
    assert not set(ALPHABET) & set("0O1IL")
    assert len(set(ALPHABET)) == len(ALPHABET)


@given(st.randoms(use_true_random=False))
def test_a_key_is_six_characters_of_the_alphabet(rng: random.Random) -> None:
    key = generate_key(rng.choice)
    assert len(key) == KEY_LENGTH
    assert set(key) <= set(ALPHABET)


def test_typed_keys_ignore_case_and_separators() -> None:
    clock = FakeClock()
    key = make_key(clock)
    typed = f" {key.value[:3].lower()}-{key.value[3:]} "
    assert key.check(typed, "10.0.0.1").verdict is Verdict.ACCEPTED
    assert normalize("ab c-d_e.f") == "ABCDEF"


def test_the_key_rotates_on_request_and_on_time() -> None:
    clock = FakeClock()
    key = make_key(clock, rotate_every_s=60)
    first = key.value
    assert key.rotates_at == clock.now + 60
    clock.advance(59.9)
    assert key.value == first
    clock.advance(0.1)
    second = key.value
    assert second != first
    assert key.rotates_at == clock.now + 60
    assert key.rotate() != second


def test_an_old_key_is_refused_after_rotation() -> None:
    clock = FakeClock()
    key = make_key(clock)
    old = key.value
    key.rotate()
    assert key.check(old, "10.0.0.1").verdict is Verdict.WRONG


def test_a_pairing_code_is_fixed() -> None:
    clock = FakeClock()
    key = make_key(clock, rotate_every_s=60, pairing_code="room412")
    assert key.value == "ROOM412"
    assert key.rotates_at is None
    clock.advance(3600)
    key.rotate()
    assert key.value == "ROOM412"
    assert key.check("Room412", "10.0.0.1").accepted


def test_wrong_keys_lock_an_address_out_for_growing_times() -> None:
    clock = FakeClock()
    key = make_key(clock, free_attempts=3, lockout_initial_s=5, lockout_max_s=40)
    wrong = wrong_for(key)
    for _ in range(3):
        assert key.check(wrong, "10.0.0.9") == KeyCheck(Verdict.WRONG, 0.0)
        assert key._limiter.locked_for("10.0.0.9") == 0.0
    lockouts = []
    for _ in range(5):
        check = key.check(wrong, "10.0.0.9")
        assert check.verdict is Verdict.WRONG
        lockouts.append(check.retry_after_s)
        # While locked out, even the right key waits.
        refused = key.check(key.value, "10.0.0.9")
        assert refused.verdict is Verdict.LOCKED_OUT
        assert refused.retry_after_s == pytest.approx(check.retry_after_s)
        clock.advance(check.retry_after_s)
    assert lockouts == [5, 10, 20, 40, 40]


def test_the_right_key_after_a_lockout_gets_in_and_clears_the_record() -> None:
    clock = FakeClock()
    key = make_key(clock, free_attempts=1, lockout_initial_s=5, lockout_max_s=40)
    wrong = wrong_for(key)
    key.check(wrong, "10.0.0.9")
    assert key.check(wrong, "10.0.0.9").retry_after_s == 5
    clock.advance(4.9)
    assert key.check(key.value, "10.0.0.9").verdict is Verdict.LOCKED_OUT
    clock.advance(0.1)
    assert key.check(key.value, "10.0.0.9").accepted
    key.check(wrong, "10.0.0.9")
    assert key.check(wrong, "10.0.0.9").retry_after_s == 5, "the count started again"


def test_one_address_locked_out_does_not_lock_out_another() -> None:
    clock = FakeClock()
    key = make_key(clock, free_attempts=0)
    key.check(wrong_for(key), "10.0.0.9")
    assert key.check(key.value, "10.0.0.9").verdict is Verdict.LOCKED_OUT
    assert key.check(key.value, "10.0.0.10").accepted


def test_a_quiet_address_is_forgotten_and_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = GuessLimiter(clock, free_attempts=0, forget_after_s=100, max_addresses=10)
    for n in range(50):
        limiter.wrong(f"10.0.1.{n}")
    assert limiter.tracked == 10
    assert limiter.locked_for("10.0.1.49") > 0
    assert limiter.locked_for("10.0.1.0") == 0.0
    clock.advance(400)
    assert limiter.locked_for("10.0.1.49") == 0.0
    assert limiter.tracked == 9


@settings(max_examples=200, deadline=None)
@given(
    attempts=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.booleans(),
            st.floats(min_value=0, max_value=500),
        ),
        max_size=60,
    ),
    free=st.integers(min_value=0, max_value=5),
)
def test_no_address_gets_in_while_locked_and_lockouts_never_shrink(
    attempts: list[tuple[str, bool, float]], free: int
) -> None:
    clock = FakeClock()
    key = make_key(clock, free_attempts=free, lockout_initial_s=5, lockout_max_s=300)
    last_lockout: dict[str, float] = {}
    for address, right, wait in attempts:
        clock.advance(wait)
        waiting = key._limiter.locked_for(address)
        typed = key.value if right else wrong_for(key)
        check = key.check(typed, address)
        if waiting > 0:
            assert check.verdict is Verdict.LOCKED_OUT
            assert 0 < check.retry_after_s <= 300
        elif right:
            assert check.accepted
            last_lockout.pop(address, None)
        else:
            assert check.verdict is Verdict.WRONG
            assert 0 <= check.retry_after_s <= 300
            if check.retry_after_s and address in last_lockout:
                previous = last_lockout[address]
                assert check.retry_after_s in (min(previous * 2, 300), 5)
            if check.retry_after_s:
                last_lockout[address] = check.retry_after_s


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_typed_text_is_checked_without_error(typed: str) -> None:
    clock = FakeClock()
    key = make_key(clock)
    check = key.check(typed, "10.0.0.1")
    assert check.verdict in (Verdict.ACCEPTED, Verdict.WRONG)
    assert check.accepted == (normalize(typed) == key.value)
