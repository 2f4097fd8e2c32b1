"""The meeting rules, one by one, and as a state machine that must keep its invariants."""

from __future__ import annotations

import dataclasses
import random
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from roomsystem.config import MeetingSettings, parse_settings
from roomsystem.errors import ConfigError
from roomsystem.meeting.policy import (
    CHAT_HISTORY,
    GUESSES,
    HOST_ID,
    LINK_TOKEN_CHARS,
    PASSCODE_ALPHABET,
    PERMISSIONS,
    Action,
    ChatTarget,
    ControlRefused,
    EventKind,
    GuessLimiter,
    Invite,
    InviteSigner,
    JoinRefused,
    JoinRequest,
    Meeting,
    Notice,
    Participant,
    Refusal,
    Role,
    Rules,
    UnknownParticipant,
    clean_name,
    link_token,
    normalize_meeting_id,
)

KEY = b"k" * 32


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    clock: Clock | None = None, seed: int = 7, limiter: GuessLimiter | None = None, **rules: object
) -> Meeting:
    return Meeting(
        dataclasses.replace(Rules(), **rules),  # type: ignore[arg-type]
        clock=clock or Clock(),
        rng=random.Random(seed),
        invite_key=KEY,
        address_limiter=limiter,
    )


def ask(
    meeting: Meeting, name: str = "Ada", address: str = "10.0.0.1", **extra: str | None
) -> JoinRequest:
    fields: dict[str, str | None] = {"passcode": meeting.passcode}
    fields.update(extra)
    return JoinRequest(meeting_id=meeting.id, name=name, address=address, **fields)


def refusal(meeting: Meeting, request: JoinRequest) -> Refusal:
    with pytest.raises(JoinRefused) as refused:
        meeting.join(request)
    return refused.value.reason


def enter(meeting: Meeting, name: str = "Ada", address: str = "10.0.0.1", **extra: str) -> str:
    """A participant who joined and was admitted."""
    participant, _ = meeting.join(ask(meeting, name, address, **extra))
    if participant.waiting:
        meeting.admit(participant.id)
    return participant.id


def kinds(notices: list[Notice]) -> list[tuple[str, EventKind]]:
    return [(n.to, n.kind) for n in notices]


# -- identifiers and secrets


@pytest.mark.parametrize("digits", [9, 10, 11])
def test_each_meeting_gets_a_new_id_of_the_configured_length(digits: int) -> None:
    ids = {make(seed=seed, id_digits=digits).id for seed in range(50)}
    assert len(ids) == 50
    assert all(len(i) == digits and i.isdigit() and i[0] != "0" for i in ids)


def test_a_personal_id_is_used_only_when_configured() -> None:
    assert make(personal_id="4412345678").id == "4412345678"
    assert make(seed=1).id != make(seed=2).id


@pytest.mark.parametrize("length", [6, 8, 10])
def test_passcodes_are_random_unambiguous_text_of_the_configured_length(length: int) -> None:
    codes = {make(seed=seed, passcode_length=length).passcode for seed in range(50)}
    assert len(codes) == 50
    assert all(len(c) == length and set(c) <= set(PASSCODE_ALPHABET) for c in codes)
    assert not set("0o1li") & set(PASSCODE_ALPHABET)


def test_a_passcode_is_required_by_default() -> None:
    meeting = make()
    assert refusal(meeting, ask(meeting, passcode=None)) is Refusal.PASSCODE_REQUIRED


def test_the_passcode_is_forgiving_of_case_and_spaces_but_not_of_content() -> None:
    meeting = make(waiting_room=False)
    participant, _ = meeting.join(ask(meeting, passcode=f"  {meeting.passcode.upper()} "))
    assert not participant.waiting
    assert refusal(meeting, ask(meeting, passcode=meeting.passcode[:-1])) is Refusal.WRONG_PASSCODE
    assert refusal(meeting, ask(meeting, passcode=meeting.passcode + "x")) is Refusal.WRONG_PASSCODE


def test_the_link_token_is_an_hmac_of_the_passcode_never_the_passcode() -> None:
    meeting = make()
    token = meeting.link_token
    assert len(token) == LINK_TOKEN_CHARS
    assert meeting.passcode not in token
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    # Same secret and id, other passcode: another token; other secret: another token.
    assert link_token(b"s" * 32, meeting.id, "aaaaaaaa") != link_token(b"s" * 32, meeting.id, "b")
    assert link_token(b"s" * 32, "1", "p") != link_token(b"t" * 32, "1", "p")
    assert link_token(b"s" * 32, "1", "p") == link_token(b"s" * 32, "1", "p")


def test_a_link_token_lets_in_and_a_wrong_one_is_a_wrong_passcode() -> None:
    meeting = make()
    participant, _ = meeting.join(ask(meeting, passcode=None, link_token=meeting.link_token))
    assert participant.waiting
    other = make(seed=99)
    wrong = ask(meeting, passcode=None, link_token=other.link_token)
    assert refusal(meeting, wrong) is Refusal.WRONG_PASSCODE


def test_meeting_ids_may_be_typed_with_spaces_and_dashes() -> None:
    assert normalize_meeting_id("123 456-7890") == "1234567890"
    meeting = make(waiting_room=False)
    spaced = f"{meeting.id[:3]} {meeting.id[3:6]}-{meeting.id[6:]}"
    participant, _ = meeting.join(dataclasses.replace(ask(meeting), meeting_id=spaced))
    assert participant.id in meeting.participants


def test_another_meeting_id_is_unknown() -> None:
    meeting = make()
    request = dataclasses.replace(ask(meeting), meeting_id="1111111111")
    assert refusal(meeting, request) is Refusal.UNKNOWN_MEETING


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "Ada\nLovelace", "\x00"])
def test_a_name_must_be_printable_and_short(name: str) -> None:
    meeting = make()
    assert refusal(meeting, ask(meeting, name=name)) is Refusal.BAD_NAME
    assert clean_name(name) is None


def test_names_are_trimmed() -> None:
    meeting = make()
    participant, _ = meeting.join(ask(meeting, name="  Ada  "))
    assert participant.name == "Ada"


# -- entry: waiting room, host presence, mute and video


def test_the_waiting_room_holds_newcomers_until_the_host_admits_them() -> None:
    meeting = make()
    ada, notices = meeting.join(ask(meeting, "Ada", "10.0.0.1"))
    bob, _ = meeting.join(ask(meeting, "Bob", "10.0.0.2"))
    cy, _ = meeting.join(ask(meeting, "Cy", "10.0.0.3"))
    assert notices == []
    assert [p.name for p in meeting.waiting()] == ["Ada", "Bob", "Cy"]
    assert kinds(meeting.admit(ada.id)) == [(ada.id, EventKind.ADMITTED)]
    assert [p.name for p in meeting.admitted()] == ["Ada"]
    assert kinds(meeting.admit(None)) == [(bob.id, EventKind.ADMITTED), (cy.id, EventKind.ADMITTED)]
    assert meeting.waiting() == []
    with pytest.raises(ControlRefused, match="already in the meeting"):
        meeting.admit(ada.id)
    with pytest.raises(UnknownParticipant):
        meeting.admit("p-nobody")
    assert meeting.admit(None) == []


def test_without_a_waiting_room_people_are_admitted_at_once() -> None:
    meeting = make(waiting_room=False)
    participant, notices = meeting.join(ask(meeting))
    assert not participant.waiting
    assert kinds(notices) == [(participant.id, EventKind.ADMITTED)]


def test_nobody_joins_before_the_host_unless_allowed() -> None:
    absent = Meeting(
        Rules(), clock=Clock(), rng=random.Random(1), invite_key=KEY, room_present=False
    )
    assert not absent.host_present
    assert refusal(absent, ask(absent)) is Refusal.HOST_ABSENT
    allowed = Meeting(
        Rules(join_before_host=True),
        clock=Clock(),
        rng=random.Random(1),
        invite_key=KEY,
        room_present=False,
    )
    participant, _ = allowed.join(ask(allowed))
    assert participant.waiting


def test_an_alternative_host_may_start_the_meeting_without_the_room() -> None:
    meeting = Meeting(
        Rules(), clock=Clock(), rng=random.Random(1), invite_key=KEY, room_present=False
    )
    token = meeting.issue_invite("Prof. Ng", Role.ALTERNATIVE_HOST)
    host, notices = meeting.join(ask(meeting, passcode=None, invite=token))
    assert (host.role, host.waiting, host.name) == (Role.ALTERNATIVE_HOST, False, "Prof. Ng")
    assert kinds(notices) == [(host.id, EventKind.ADMITTED)]
    assert meeting.host_present
    student, _ = meeting.join(ask(meeting, "Student", "10.0.0.9"))
    assert student.waiting
    meeting.admit(student.id, actor=host.id)
    assert not student.waiting


@pytest.mark.parametrize(("mute", "video_off"), [(True, True), (True, False), (False, True)])
def test_mute_and_video_on_entry_follow_the_settings(mute: bool, video_off: bool) -> None:
    meeting = make(mute_on_entry=mute, video_off_on_entry=video_off)
    participant, _ = meeting.join(ask(meeting))
    assert (participant.muted, participant.video) == (mute, not video_off)


def test_a_full_meeting_refuses_newcomers() -> None:
    meeting = make(max_participants=2)
    enter(meeting, "A", "10.0.0.1")
    meeting.join(ask(meeting, "B", "10.0.0.2"))
    assert refusal(meeting, ask(meeting, "C", "10.0.0.3")) is Refusal.FULL


# -- authenticated-only meetings and personal invitations


def test_an_authenticated_meeting_needs_a_personal_invitation() -> None:
    meeting = make(authenticated_only=True)
    assert refusal(meeting, ask(meeting)) is Refusal.INVITE_REQUIRED
    assert refusal(meeting, ask(meeting, passcode=None, link_token=meeting.link_token)) is (
        Refusal.INVITE_REQUIRED
    )
    token = meeting.issue_invite("Ada Lovelace")
    participant, _ = meeting.join(ask(meeting, "Someone Else", passcode=None, invite=token))
    assert participant.name == "Ada Lovelace"  # the invitation says who it is for
    assert participant.waiting  # invitees still wait to be admitted
    assert participant.role is Role.PARTICIPANT


def test_one_invitation_admits_one_person_at_a_time() -> None:
    meeting = make(authenticated_only=True)
    token = meeting.issue_invite("Ada")
    first, _ = meeting.join(ask(meeting, address="10.0.0.1", passcode=None, invite=token))
    again = ask(meeting, address="10.0.0.2", passcode=None, invite=token)
    assert refusal(meeting, again) is Refusal.INVITE_INVALID
    meeting.leave(first.id)
    second, _ = meeting.join(again)
    assert second.id != first.id


def test_each_invitation_is_distinct() -> None:
    meeting = make()
    assert meeting.issue_invite("Ada") != meeting.issue_invite("Ada")


def test_invitations_expire() -> None:
    clock = Clock()
    meeting = make(clock, authenticated_only=True, invite_valid_s=3600.0)
    token = meeting.issue_invite("Ada")
    clock.advance(3600)
    request = ask(meeting, passcode=None, invite=token)
    assert refusal(meeting, request) is Refusal.INVITE_EXPIRED


def test_an_invitation_for_another_meeting_or_forged_is_invalid() -> None:
    meeting = make(authenticated_only=True)
    other = make(seed=8)
    elsewhere = other.issue_invite("Ada")
    assert refusal(meeting, ask(meeting, passcode=None, invite=elsewhere)) is Refusal.INVITE_INVALID
    payload, _, signature = meeting.issue_invite("Ada").partition(".")
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    for forged in [f"{payload}.{forged_signature}", payload, "", "." * 2000, "a.b"]:
        request = ask(meeting, passcode=None, invite=forged)
        assert refusal(meeting, request) is Refusal.INVITE_INVALID
        meeting._address_limiter = GuessLimiter(100, 1)  # keep this loop from the rate limit
        meeting._meeting_limiter = GuessLimiter(100, 1)


def test_an_invitation_signed_with_another_key_is_invalid() -> None:
    meeting = make()
    invite = Invite(meeting.id, "i-1", "Eve", Role.ALTERNATIVE_HOST, 2e9)
    forged = InviteSigner(b"x" * 32).issue(invite)
    assert refusal(meeting, ask(meeting, passcode=None, invite=forged)) is Refusal.INVITE_INVALID
    with pytest.raises(ValueError, match="16 bytes"):
        InviteSigner(b"short")


def test_a_correctly_signed_but_malformed_invitation_is_invalid() -> None:
    signer = InviteSigner(KEY)
    payload = "bm90IGpzb24"  # "not json"
    token = f"{payload}.{signer._sign(payload)}"
    with pytest.raises(JoinRefused) as refused:
        signer.verify(token, "1", 0)
    assert refused.value.reason is Refusal.INVITE_INVALID


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_no_made_up_invitation_gets_in(token: str) -> None:
    meeting = make(
        authenticated_only=True, guess_limit_per_address=10**2, guess_limit_per_meeting=10**3
    )
    with pytest.raises(JoinRefused) as refused:
        meeting.join(ask(meeting, passcode=None, invite=token))
    assert refused.value.reason in {Refusal.INVITE_INVALID, Refusal.INVITE_EXPIRED}


def test_invitations_only_name_participants_or_alternative_hosts() -> None:
    meeting = make()
    with pytest.raises(ControlRefused, match="alternative host"):
        meeting.issue_invite("Ada", Role.CO_HOST)
    with pytest.raises(ControlRefused, match="name"):
        meeting.issue_invite("  ")
    participant = enter(meeting)
    with pytest.raises(ControlRefused, match="may not invite"):
        meeting.issue_invite("Bob", actor=participant)


# -- removing, locking


def test_a_removed_participant_cannot_rejoin() -> None:
    meeting = make()
    troll = enter(meeting, "Troll", "10.0.0.66", client_key="browser-1")
    assert kinds(meeting.remove(troll)) == [(troll, EventKind.REMOVED)]
    assert troll not in meeting.participants
    assert meeting.was_removed(troll)
    assert refusal(meeting, ask(meeting, "Troll", "10.0.0.66")) is Refusal.REMOVED
    other_address = ask(meeting, "Nice Person", "10.0.0.67", client_key="browser-1")
    assert refusal(meeting, other_address) is Refusal.REMOVED
    assert meeting.join(ask(meeting, "Bystander", "10.0.0.68"))[0].id != troll


def test_address_bans_can_be_turned_off_for_shared_addresses() -> None:
    meeting = make(remove_bans_address=False)
    troll = enter(meeting, "Troll", "10.0.0.1", client_key="browser-1")
    meeting.remove(troll)
    colleague, _ = meeting.join(ask(meeting, "Colleague", "10.0.0.1", client_key="browser-2"))
    assert colleague.waiting
    again = ask(meeting, "Troll", "10.0.0.1", client_key="browser-1")
    assert refusal(meeting, again) is Refusal.REMOVED


def test_a_removed_invitee_cannot_come_back_with_the_invitation() -> None:
    meeting = make(authenticated_only=True, remove_bans_address=False)
    token = meeting.issue_invite("Ada")
    ada, _ = meeting.join(ask(meeting, passcode=None, invite=token))
    meeting.remove(ada.id)
    again = ask(meeting, address="10.9.9.9", passcode=None, invite=token)
    assert refusal(meeting, again) is Refusal.REMOVED


def test_someone_can_be_removed_from_the_waiting_room() -> None:
    meeting = make()
    waiting, _ = meeting.join(ask(meeting))
    assert kinds(meeting.remove(waiting.id)) == [(waiting.id, EventKind.REMOVED)]
    assert refusal(meeting, ask(meeting)) is Refusal.REMOVED


def test_a_locked_meeting_admits_nobody_new_even_with_the_right_passcode() -> None:
    meeting = make()
    inside = enter(meeting, "Inside", "10.0.0.1")
    meeting.lock(True)
    assert refusal(meeting, ask(meeting, "Late", "10.0.0.2")) is Refusal.LOCKED
    token = meeting.issue_invite("Invited")
    assert refusal(meeting, ask(meeting, "X", "10.0.0.3", passcode=None, invite=token)) is (
        Refusal.LOCKED
    )
    assert inside in meeting.participants  # those inside stay
    for _ in range(20):  # refusals at a locked door are not guesses
        assert refusal(meeting, ask(meeting, "Late", "10.0.0.2")) is Refusal.LOCKED
    meeting.lock(False)
    late, _ = meeting.join(ask(meeting, "Late", "10.0.0.2"))
    assert late.waiting


# -- roles and host controls


HOST_CONTROLS = {
    Action.ADMIT: lambda m, actor, target: m.admit(None, actor),
    Action.REMOVE: lambda m, actor, target: m.remove(target, actor),
    Action.MUTE: lambda m, actor, target: m.mute(target, actor),
    Action.ASK_UNMUTE: lambda m, actor, target: m.ask_unmute(target, actor),
    Action.STOP_VIDEO: lambda m, actor, target: m.stop_video(target, actor),
    Action.LOWER_HAND: lambda m, actor, target: m.lower_hand(target, actor),
    Action.LOCK: lambda m, actor, target: m.lock(True, actor),
    Action.SHARING: lambda m, actor, target: m.allow_sharing(True, actor),
    Action.COHOST: lambda m, actor, target: m.make_cohost(target, True, actor),
    Action.RECORDING: lambda m, actor, target: m.set_recording(True, actor),
    Action.INVITE: lambda m, actor, target: m.issue_invite("New", Role.PARTICIPANT, actor),
    Action.END: lambda m, actor, target: m.end(actor),
}


def test_every_action_has_a_control_in_this_table() -> None:
    assert set(HOST_CONTROLS) == set(Action)


def actor_with(meeting: Meeting, role: Role) -> str:
    if role is Role.HOST:
        return HOST_ID
    if role is Role.ALTERNATIVE_HOST:
        token = meeting.issue_invite("Alt", Role.ALTERNATIVE_HOST)
        return meeting.join(ask(meeting, "Alt", "10.0.1.1", passcode=None, invite=token))[0].id
    actor = enter(meeting, "Actor", "10.0.1.2")
    if role is Role.CO_HOST:
        meeting.make_cohost(actor, True)
    return actor


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_only_permitted_roles_use_host_controls(role: Role, action: Action) -> None:
    meeting = make(video_off_on_entry=False)
    actor = actor_with(meeting, role)
    target = enter(meeting, "Target", "10.0.2.1")
    meeting.raise_hand(target, True)
    meeting.join(ask(meeting, "Waiting", "10.0.2.2"))
    if action in PERMISSIONS[role]:
        HOST_CONTROLS[action](meeting, actor, target)
    else:
        with pytest.raises(ControlRefused, match="may not"):
            HOST_CONTROLS[action](meeting, actor, target)
        assert not meeting.ended
        assert target in meeting.participants
        assert not meeting.participants[target].waiting


def test_the_permission_table() -> None:
    assert PERMISSIONS[Role.PARTICIPANT] == frozenset()
    assert PERMISSIONS[Role.HOST] == PERMISSIONS[Role.ALTERNATIVE_HOST] == frozenset(Action)
    assert {Action.COHOST, Action.END, Action.RECORDING, Action.INVITE}.isdisjoint(
        PERMISSIONS[Role.CO_HOST]
    )


def test_a_waiting_cohost_candidate_cannot_be_made_cohost() -> None:
    meeting = make()
    waiting, _ = meeting.join(ask(meeting))
    with pytest.raises(ControlRefused, match="waiting room"):
        meeting.make_cohost(waiting.id, True)


def test_making_and_unmaking_a_cohost_tells_them_and_changes_sharing() -> None:
    meeting = make()
    ada = enter(meeting)
    assert not meeting.can_share(ada)
    assert kinds(meeting.make_cohost(ada, True)) == [
        (ada, EventKind.ROLE_CHANGED),
        (ada, EventKind.SHARE_ALLOWED),
    ]
    assert meeting.role_of(ada) is Role.CO_HOST
    assert meeting.can_share(ada)
    assert meeting.make_cohost(ada, True) == []
    assert kinds(meeting.make_cohost(ada, False)) == [
        (ada, EventKind.ROLE_CHANGED),
        (ada, EventKind.SHARE_DENIED),
    ]
    assert meeting.role_of(ada) is Role.PARTICIPANT


def test_an_alternative_host_stays_one() -> None:
    meeting = make()
    alt = actor_with(meeting, Role.ALTERNATIVE_HOST)
    with pytest.raises(ControlRefused, match="alternative host"):
        meeting.make_cohost(alt, True)


def test_a_cohost_acts_on_participants_but_not_on_other_hosts() -> None:
    meeting = make()
    first = actor_with(meeting, Role.CO_HOST)
    second = enter(meeting, "Second", "10.0.0.5")
    meeting.make_cohost(second, True)
    alt = actor_with(meeting, Role.ALTERNATIVE_HOST)
    plain = enter(meeting, "Plain", "10.0.0.6")
    for target in (second, alt):
        with pytest.raises(ControlRefused, match="may not remove"):
            meeting.remove(target, actor=first)
    with pytest.raises(ControlRefused, match="yourself"):
        meeting.mute(first, actor=first)
    meeting.remove(plain, actor=first)
    meeting.remove(second, actor=alt)  # an alternative host outranks a co-host
    meeting.remove(alt)  # and the room outranks everyone


def test_mute_one_and_all_and_ask_to_unmute() -> None:
    meeting = make(mute_on_entry=False)
    ada = enter(meeting, "Ada", "10.0.0.1")
    bob = enter(meeting, "Bob", "10.0.0.2")
    cohost = enter(meeting, "Co", "10.0.0.3")
    meeting.make_cohost(cohost, True)
    with pytest.raises(ControlRefused, match="not muted"):
        meeting.ask_unmute(ada)
    assert kinds(meeting.mute(ada)) == [(ada, EventKind.MUTED)]
    assert meeting.mute(ada) == []  # already muted: nothing to tell
    assert kinds(meeting.ask_unmute(ada)) == [(ada, EventKind.ASK_UNMUTE)]
    assert meeting.participants[ada].muted  # asking never unmutes
    assert kinds(meeting.mute_all(actor=cohost)) == [(bob, EventKind.MUTED)]
    assert not meeting.participants[cohost].muted  # a co-host's mute-all spares themself
    assert kinds(meeting.mute_all()) == [(cohost, EventKind.MUTED)]
    meeting.set_muted(ada, False)  # only a participant unmutes themself
    assert not meeting.participants[ada].muted


def test_stop_video_and_lower_hand() -> None:
    meeting = make(video_off_on_entry=False)
    ada = enter(meeting)
    meeting.raise_hand(ada, True)
    assert kinds(meeting.stop_video(ada)) == [(ada, EventKind.VIDEO_STOPPED)]
    assert meeting.stop_video(ada) == []
    assert kinds(meeting.lower_hand(ada)) == [(ada, EventKind.HAND_LOWERED)]
    assert meeting.lower_hand(ada) == []
    meeting.set_video(ada, True)
    assert meeting.participants[ada].video


def test_host_controls_act_only_on_admitted_people_for_media() -> None:
    meeting = make()
    waiting, _ = meeting.join(ask(meeting))
    for control in (meeting.mute, meeting.stop_video, meeting.ask_unmute, meeting.lower_hand):
        with pytest.raises(ControlRefused, match="waiting room"):
            control(waiting.id)
    with pytest.raises(UnknownParticipant):
        meeting.mute("p-gone")


def test_waiting_people_can_do_nothing_but_leave() -> None:
    meeting = make()
    waiting, _ = meeting.join(ask(meeting))
    with pytest.raises(ControlRefused):
        meeting.set_muted(waiting.id, False)
    with pytest.raises(ControlRefused):
        meeting.set_video(waiting.id, True)
    with pytest.raises(ControlRefused):
        meeting.raise_hand(waiting.id, True)
    with pytest.raises(ControlRefused):
        meeting.chat(waiting.id, "let me in")
    assert not meeting.may(waiting.id, Action.ADMIT)
    assert kinds(meeting.leave(waiting.id)) == [(waiting.id, EventKind.LEFT)]
    assert meeting.leave(waiting.id) == []
    assert not meeting.may("p-gone", Action.ADMIT)


def test_a_waiting_alternative_host_cannot_use_controls() -> None:
    meeting = make()
    alt = actor_with(meeting, Role.ALTERNATIVE_HOST)
    meeting.participants[alt].waiting = True  # as if still waiting
    with pytest.raises(ControlRefused, match="may not"):
        meeting.lock(True, actor=alt)


# -- sharing


def test_sharing_is_host_only_by_default_and_can_be_opened_to_all() -> None:
    meeting = make()
    ada = enter(meeting, "Ada", "10.0.0.1")
    co = enter(meeting, "Co", "10.0.0.2")
    meeting.make_cohost(co, True)
    waiting, _ = meeting.join(ask(meeting, "Wait", "10.0.0.3"))
    assert (meeting.can_share(ada), meeting.can_share(co), meeting.can_share(waiting.id)) == (
        False,
        True,
        False,
    )
    assert kinds(meeting.allow_sharing(True)) == [(ada, EventKind.SHARE_ALLOWED)]
    assert meeting.can_share(ada)
    assert not meeting.can_share(waiting.id)
    assert meeting.allow_sharing(True) == []
    assert kinds(meeting.allow_sharing(False)) == [(ada, EventKind.SHARE_DENIED)]
    assert not meeting.can_share("p-nobody")


def test_sharing_for_all_can_be_the_default() -> None:
    meeting = make(host_only_sharing=False)
    assert meeting.can_share(enter(meeting))


# -- chat


def test_chat_to_everyone_reaches_every_admitted_participant_but_the_sender() -> None:
    clock = Clock()
    meeting = make(clock)
    ada = enter(meeting, "Ada", "10.0.0.1")
    bob = enter(meeting, "Bob", "10.0.0.2")
    meeting.join(ask(meeting, "Waiting", "10.0.0.3"))
    notices = meeting.chat(ada, "  hello  ")
    assert kinds(notices) == [(bob, EventKind.CHAT)]
    message = notices[0].chat
    assert message is not None
    assert (message.sender_id, message.sender_name, message.to, message.text, message.at) == (
        ada,
        "Ada",
        "everyone",
        "hello",
        clock.now,
    )
    assert kinds(meeting.chat(HOST_ID, "welcome")) == [(ada, EventKind.CHAT), (bob, EventKind.CHAT)]
    assert meeting.chat_count == 2
    assert list(meeting.chat_log)[-1].sender_name == "Room"


def test_chat_privately_to_the_host_reaches_only_hosts() -> None:
    meeting = make()
    ada = enter(meeting, "Ada", "10.0.0.1")
    bob = enter(meeting, "Bob", "10.0.0.2")
    co = enter(meeting, "Co", "10.0.0.3")
    meeting.make_cohost(co, True)
    notices = meeting.chat(ada, "psst", ChatTarget.HOST)
    assert kinds(notices) == [(co, EventKind.CHAT)]  # and the room, through the log
    assert meeting.chat_log[-1].to == "host"
    assert bob not in {n.to for n in notices}


def test_only_hosts_chat_privately_to_one_participant() -> None:
    meeting = make()
    ada = enter(meeting, "Ada", "10.0.0.1")
    bob = enter(meeting, "Bob", "10.0.0.2")
    assert kinds(meeting.chat(HOST_ID, "just you", bob)) == [(bob, EventKind.CHAT)]
    with pytest.raises(ControlRefused, match="privately to the host"):
        meeting.chat(ada, "just you", bob)
    with pytest.raises(UnknownParticipant):
        meeting.chat(HOST_ID, "hi", "p-nobody")


@pytest.mark.parametrize("text", ["", "   ", "x" * 1001])
def test_chat_messages_must_have_sensible_length(text: str) -> None:
    meeting = make()
    with pytest.raises(ControlRefused, match="1 to 1000"):
        meeting.chat(enter(meeting), text)


def test_the_chat_history_is_bounded() -> None:
    meeting = make()
    for index in range(CHAT_HISTORY + 5):
        meeting.chat(HOST_ID, f"m{index}")
    assert len(meeting.chat_log) == CHAT_HISTORY
    assert meeting.chat_count == CHAT_HISTORY + 5
    assert meeting.chat_log[0].text == "m5"


# -- recording and ending


def test_everyone_in_a_recorded_meeting_is_told_including_latecomers() -> None:
    meeting = make()
    ada = enter(meeting, "Ada", "10.0.0.1")
    waiting, _ = meeting.join(ask(meeting, "Wait", "10.0.0.2"))
    assert kinds(meeting.set_recording(True)) == [(ada, EventKind.RECORDING_STARTED)]
    assert meeting.set_recording(True) == []
    assert kinds(meeting.admit(waiting.id)) == [
        (waiting.id, EventKind.ADMITTED),
        (waiting.id, EventKind.RECORDING_STARTED),
    ]
    direct = make(waiting_room=False)
    direct.set_recording(True)
    late, notices = direct.join(ask(direct))
    assert kinds(notices) == [(late.id, EventKind.ADMITTED), (late.id, EventKind.RECORDING_STARTED)]
    assert EventKind.RECORDING_STOPPED in {n.kind for n in meeting.set_recording(False)}


def test_ending_tells_everyone_and_closes_the_door() -> None:
    meeting = make()
    ada = enter(meeting, "Ada", "10.0.0.1")
    waiting, _ = meeting.join(ask(meeting, "Wait", "10.0.0.2"))
    meeting.set_recording(True)
    assert set(kinds(meeting.end())) == {(ada, EventKind.ENDED), (waiting.id, EventKind.ENDED)}
    assert meeting.ended
    assert not meeting.recording
    assert meeting.participants == {}
    assert refusal(meeting, ask(meeting, "Late", "10.0.0.3")) is Refusal.ENDED
    with pytest.raises(ControlRefused, match="ended"):
        meeting.lock(True)
    with pytest.raises(ControlRefused, match="ended"):
        meeting.chat(HOST_ID, "anyone?")
    assert not meeting.can_share(ada)


# -- guesses


def test_wrong_passcodes_from_one_address_are_rate_limited() -> None:
    clock = Clock()
    meeting = make(clock, guess_limit_per_address=5, guess_window_s=300.0)
    for _ in range(5):
        assert refusal(meeting, ask(meeting, passcode="wrong")) is Refusal.WRONG_PASSCODE
        clock.advance(10)
    with pytest.raises(JoinRefused) as refused:
        meeting.join(ask(meeting))  # even the right passcode: no oracle for a guesser
    assert refused.value.reason is Refusal.RATE_LIMITED
    assert refused.value.retry_after_s == pytest.approx(300 - 50)
    other, _ = meeting.join(ask(meeting, address="10.0.0.2"))  # others are not affected
    assert other.waiting
    clock.advance(250)
    participant, _ = meeting.join(ask(meeting))
    assert participant.waiting


def test_wrong_guesses_from_many_addresses_are_rate_limited_per_meeting() -> None:
    clock = Clock()
    limiter = GuessLimiter(5, 300.0)
    meeting = make(clock, limiter=limiter, guess_limit_per_meeting=30, guess_window_s=300.0)
    for index in range(30):
        wrong = ask(meeting, address=f"10.1.{index}.1", passcode="wrong")
        assert refusal(meeting, wrong) is Refusal.WRONG_PASSCODE
    assert refusal(meeting, ask(meeting, address="10.2.0.1")) is Refusal.RATE_LIMITED
    elsewhere = make(clock, limiter=limiter, seed=99)  # another meeting has its own allowance
    assert elsewhere.join(ask(elsewhere, address="10.2.0.1"))[0].waiting
    clock.advance(300)
    assert meeting.join(ask(meeting, address="10.2.0.1"))[0].waiting


def test_unknown_meeting_ids_count_against_the_address_only() -> None:
    limiter = GuessLimiter(3, 60.0)
    meeting = make(limiter=limiter, guess_limit_per_meeting=2)
    for _ in range(3):
        assert refusal(meeting, dataclasses.replace(ask(meeting), meeting_id="1")) is (
            Refusal.UNKNOWN_MEETING
        )
    assert refusal(meeting, ask(meeting)) is Refusal.RATE_LIMITED
    assert meeting.join(ask(meeting, address="10.0.0.2"))[0].waiting


def test_only_wrong_secrets_are_guesses() -> None:
    assert {Refusal.UNKNOWN_MEETING, Refusal.WRONG_PASSCODE, Refusal.INVITE_INVALID} == GUESSES
    meeting = make(guess_limit_per_address=1)
    for _ in range(5):
        assert refusal(meeting, ask(meeting, passcode=None)) is Refusal.PASSCODE_REQUIRED
        assert refusal(meeting, ask(meeting, name="")) is Refusal.BAD_NAME


def test_the_guess_limiter_forgets_and_stays_bounded() -> None:
    limiter = GuessLimiter(2, 10.0, max_keys=3)
    limiter.record("a", 0)
    assert limiter.retry_after("a", 0) is None
    limiter.record("a", 1)
    assert limiter.retry_after("a", 1) == pytest.approx(9)
    assert limiter.retry_after("a", 10) is None  # the first failure left the window
    assert limiter.retry_after("a", 11) is None
    for key in "bcd":
        limiter.record(key, 20)
        limiter.record(key, 20)
    assert "a" not in limiter._failures
    assert len(limiter._failures) == 3
    for _ in range(100):
        limiter.record("b", 21)
    assert len(limiter._failures["b"]) <= 3


def test_rules_come_from_the_meeting_settings() -> None:
    settings = MeetingSettings(
        id_digits=11,
        passcode_length=10,
        waiting_room=False,
        join_before_host=True,
        mute_on_entry=False,
        video_off_on_entry=False,
        host_only_sharing=False,
        personal_id="12345678901",
        authenticated_only=True,
        invite_valid_h=2.0,
        guess_limit_per_address=7,
        guess_limit_per_meeting=70,
        guess_window_s=77.0,
        max_participants=9,
        remove_bans_address=False,
    )
    assert Rules.from_settings(settings) == Rules(
        id_digits=11,
        passcode_length=10,
        waiting_room=False,
        join_before_host=True,
        mute_on_entry=False,
        video_off_on_entry=False,
        host_only_sharing=False,
        personal_id="12345678901",
        authenticated_only=True,
        invite_valid_s=7200.0,
        guess_limit_per_address=7,
        guess_limit_per_meeting=70,
        guess_window_s=77.0,
        max_participants=9,
        remove_bans_address=False,
    )
    assert Rules.from_settings(MeetingSettings()) == Rules()


@settings(max_examples=300, deadline=None)
@given(
    meeting_id=st.text(max_size=20),
    name=st.text(max_size=80),
    passcode=st.none() | st.text(max_size=20),
    token=st.none() | st.text(max_size=40),
)
def test_any_join_request_is_let_in_or_refused_with_a_reason(
    meeting_id: str, name: str, passcode: str | None, token: str | None
) -> None:
    meeting = make(guess_limit_per_address=10**2, guess_limit_per_meeting=10**3)
    request = JoinRequest(meeting_id, name, "10.0.0.1", passcode, token)
    try:
        participant, _ = meeting.join(request)
    except JoinRefused as refused:
        assert refused.message
        return
    # Made-up text got in: only possible with the real secrets.
    assert normalize_meeting_id(meeting_id) == meeting.id
    assert passcode is not None or token == meeting.link_token
    assert participant.name == name.strip()


# -- the invariants, under any sequence of operations


# The specification, written out independently of the policy's own table.
COHOST_MAY = {
    "admit",
    "remove",
    "mute",
    "ask_unmute",
    "stop_video",
    "lower_hand",
    "lock",
    "sharing",
}
ALLOWED = {
    Role.HOST: set(Action),
    Role.ALTERNATIVE_HOST: set(Action),
    Role.CO_HOST: {Action(a) for a in COHOST_MAY},
    Role.PARTICIPANT: set(),
}


# Who outranks whom: a targeted control only reaches those lower in this list.
ORDER = [Role.PARTICIPANT, Role.CO_HOST, Role.ALTERNATIVE_HOST, Role.HOST]
TARGETED = {Action.REMOVE, Action.MUTE, Action.ASK_UNMUTE, Action.STOP_VIDEO, Action.LOWER_HAND}


def test_the_permission_table_is_the_specification() -> None:
    assert {role: set(actions) for role, actions in PERMISSIONS.items()} == ALLOWED


ADDRESSES = [f"10.0.0.{n}" for n in range(1, 6)]
KEYS = ["k1", "k2", "k3", None]


class MeetingMachine(RuleBasedStateMachine):
    """Random joins, leaves and controls by random actors; the rules must always hold."""

    people = Bundle("people")

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.meeting = make(
            self.clock, guess_limit_per_address=3, guess_limit_per_meeting=8, guess_window_s=60.0
        )
        self.removed: dict[str, tuple[str, str | None]] = {}  # id -> (address, key)
        self.ever_joined: set[str] = set()
        self.failures: list[tuple[float, str]] = []  # guesses refused as guesses

    @initialize(
        waiting_room=st.booleans(), mute=st.booleans(), video_off=st.booleans(), bans=st.booleans()
    )
    def configure(self, waiting_room: bool, mute: bool, video_off: bool, bans: bool) -> None:
        self.meeting.rules = dataclasses.replace(
            self.meeting.rules,
            waiting_room=waiting_room,
            mute_on_entry=mute,
            video_off_on_entry=video_off,
            remove_bans_address=bans,
        )

    def _banned(self, address: str, key: str | None) -> bool:
        return any(
            (self.meeting.rules.remove_bans_address and address == banned_address)
            or (key is not None and key == banned_key)
            for banned_address, banned_key in self.removed.values()
        )

    @rule(
        target=people,
        address=st.sampled_from(ADDRESSES),
        key=st.sampled_from(KEYS),
        credential=st.sampled_from(["passcode", "token", "wrong", "none", "invite"]),
    )
    def join(self, address: str, key: str | None, credential: str) -> str:
        meeting = self.meeting
        before = set(meeting.participants)
        locked, ended = meeting.locked, meeting.ended
        fields: dict[str, str | None] = {
            "passcode": meeting.passcode if credential == "passcode" else None,
            "link_token": meeting.link_token if credential == "token" else None,
            "invite": None,
        }
        if credential == "wrong":
            fields["passcode"] = "wrongpass"
        if credential == "invite" and not meeting.ended:
            fields["invite"] = meeting.issue_invite("Invitee")
        request = JoinRequest(meeting.id, "Someone", address, client_key=key, **fields)
        try:
            participant, notices = meeting.join(request)
        except JoinRefused as refused:
            if refused.reason in GUESSES:
                self.failures.append((self.clock.now, address))
            assert set(meeting.participants) == before
            return "refused"
        assert not locked, "a locked meeting let someone in"
        assert not ended, "an ended meeting let someone in"
        assert credential != "wrong"
        assert credential != "none"
        assert not self._banned(address, key), "a removed participant got back in"
        assert participant.waiting == meeting.rules.waiting_room
        assert participant.muted == meeting.rules.mute_on_entry
        assert participant.video != meeting.rules.video_off_on_entry
        assert (not notices) == participant.waiting
        self.ever_joined.add(participant.id)
        return participant.id

    @rule(person=people, action=st.sampled_from(list(Action)), actor=people | st.just(HOST_ID))
    def control(self, person: str, action: Action, actor: str) -> None:
        meeting = self.meeting
        role = meeting.participants[actor].role if actor in meeting.participants else None
        waiting = actor in meeting.participants and meeting.participants[actor].waiting
        snapshot = self._state()
        target = meeting.participants.get(person)
        try:
            notices = HOST_CONTROLS[action](meeting, actor, person)
        except ControlRefused:
            assert self._state() == snapshot, "a refused control changed the meeting"
            return
        if actor != HOST_ID:
            assert role is not None
            assert not waiting
            assert action in ALLOWED[role], f"a {role} did {action}"
            if action in TARGETED and target is not None:
                assert ORDER.index(target.role) < ORDER.index(role), f"{role} on {target.role}"
        if action is Action.REMOVE and target is not None:
            self.removed[person] = (target.address, target.client_key)
            assert person not in meeting.participants
        if isinstance(notices, list):
            assert all(notice.to in self.ever_joined for notice in notices)

    def _state(self) -> tuple[object, ...]:
        m = self.meeting
        people = tuple(
            (p.id, p.role, p.waiting, p.muted, p.video, p.hand) for p in m.participants.values()
        )
        return (people, m.locked, m.sharing_for_all, m.ended)

    @rule(person=consumes(people))
    def leave(self, person: str) -> None:
        self.meeting.leave(person)
        assert person not in self.meeting.participants

    @rule(person=people, muted=st.booleans(), video=st.booleans(), hand=st.booleans())
    def self_service(self, person: str, muted: bool, video: bool, hand: bool) -> None:
        participant = self.meeting.participants.get(person)
        try:
            self.meeting.set_muted(person, muted)
            self.meeting.set_video(person, video)
            self.meeting.raise_hand(person, hand)
        except ControlRefused:
            assert participant is None or participant.waiting or self.meeting.ended
            return
        assert participant is not None
        assert not participant.waiting
        assert (participant.muted, participant.video, participant.hand) == (muted, video, hand)

    @rule(address=st.sampled_from(ADDRESSES))
    def guess_wrong(self, address: str) -> None:
        request = JoinRequest(self.meeting.id, "Guesser", address, passcode="notit")
        with pytest.raises(JoinRefused) as refused:
            self.meeting.join(request)
        if refused.value.reason in GUESSES:
            self.failures.append((self.clock.now, address))
        if self.meeting.ended:
            assert refused.value.reason is Refusal.ENDED

    @rule(person=people, on=st.booleans())
    def promote(self, person: str, on: bool) -> None:
        participant = self.meeting.participants.get(person)
        try:
            self.meeting.make_cohost(person, on)
        except ControlRefused:
            assert (
                participant is None
                or participant.waiting
                or self.meeting.ended
                or (participant.role is Role.ALTERNATIVE_HOST)
            )
            return
        assert participant is not None
        assert participant.role is (Role.CO_HOST if on else Role.PARTICIPANT)

    @rule(locked=st.booleans())
    def lock(self, locked: bool) -> None:
        if not self.meeting.ended:
            self.meeting.lock(locked)

    @rule(seconds=st.sampled_from([1.0, 30.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: not self.meeting.ended)
    @rule()
    def admit_all(self) -> None:
        self.meeting.admit(None)
        assert self.meeting.waiting() == []

    @invariant()
    def removed_people_are_gone(self) -> None:
        assert not set(self.removed) & set(self.meeting.participants)

    @invariant()
    def guesses_stay_within_the_limits(self) -> None:
        window = self.meeting.rules.guess_window_s
        recent = [a for t, a in self.failures if t > self.clock.now - window]
        for address in ADDRESSES:
            assert recent.count(address) <= self.meeting.rules.guess_limit_per_address
        assert len(recent) <= self.meeting.rules.guess_limit_per_meeting

    @invariant()
    def sharing_follows_roles(self) -> None:
        for participant in self.meeting.participants.values():
            expected = not participant.waiting and (
                self.meeting.sharing_for_all or participant.role is not Role.PARTICIPANT
            )
            assert self.meeting.can_share(participant.id) == expected

    @invariant()
    def an_ended_meeting_is_empty(self) -> None:
        if self.meeting.ended:
            assert self.meeting.participants == {}
            assert not self.meeting.recording


MeetingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_meeting_state_machine = MeetingMachine.TestCase


def test_participant_records_are_plain_data() -> None:
    participant = Participant(
        "p-1", "Ada", "10.0.0.1", None, None, Role.PARTICIPANT, True, True, False, 0.0
    )
    assert participant.hand is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('personal_id = "123456789"', "personal_id must have id_digits (10) digits, got 9"),
        ('personal_id = "0123456789"', "meeting.personal_id: string should match pattern"),
        ("guess_limit_per_address = 0", "meeting.guess_limit_per_address"),
        ("invite_valid_h = 0.0", "meeting.invite_valid_h"),
        ("max_participants = 501", "meeting.max_participants"),
        ('remove_bans_address = "no"', "meeting.remove_bans_address"),
    ],
)
def test_bad_meeting_settings_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings(f"[meeting]\n{text}\n")


def test_a_personal_id_of_the_right_length_is_accepted() -> None:
    settings = parse_settings('[meeting]\nid_digits = 9\npersonal_id = "123456789"\n')
    assert make(personal_id=settings.meeting.personal_id).id == "123456789"
