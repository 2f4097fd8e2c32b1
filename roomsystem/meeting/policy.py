"""The meeting rules: who gets in, who may do what, and what each participant is told.

A pure module: no I/O, no global clock, no global randomness. A `Meeting` is given a clock
(seconds since the epoch) and a random source; every operation either raises a typed
refusal or changes the meeting and returns the `Notice`s that participants must receive.
The service around it delivers those notices and publishes the snapshot.

The defaults are the ones university IT guides ask every host to keep: a new meeting id per
meeting, a passcode (a join link carries an HMAC of it, never the passcode), a waiting room,
no joining before the host, mute on entry, host-only screen sharing, and guesses of
passcodes and tokens limited per address and per meeting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from roomsystem.config import MeetingSettings

Clock = Callable[[], float]

HOST_ID = "room"
"""The room itself: the meeting's host. It is not in the participant list."""

PASSCODE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: read off a display
LINK_TOKEN_CHARS = 22  # 132 bits of the HMAC
MAX_NAME_CHARS = 64
MAX_CHAT_CHARS = 1000
MAX_TOKEN_CHARS = 1024
CHAT_HISTORY = 200
MAX_TRACKED_ADDRESSES = 10_000


class Refusal(StrEnum):
    """Why a join request was refused."""

    UNKNOWN_MEETING = "unknown_meeting"
    ENDED = "ended"
    RATE_LIMITED = "rate_limited"
    REMOVED = "removed"
    LOCKED = "locked"
    PASSCODE_REQUIRED = "passcode_required"
    WRONG_PASSCODE = "wrong_passcode"
    INVITE_REQUIRED = "invite_required"
    INVITE_INVALID = "invite_invalid"
    INVITE_EXPIRED = "invite_expired"
    HOST_ABSENT = "host_absent"
    FULL = "full"
    BAD_NAME = "bad_name"


REFUSAL_MESSAGES = {
    Refusal.UNKNOWN_MEETING: "There is no meeting with that id.",
    Refusal.ENDED: "The meeting has ended.",
    Refusal.RATE_LIMITED: "Too many wrong attempts. Try again later.",
    Refusal.REMOVED: "You were removed from this meeting and cannot rejoin it.",
    Refusal.LOCKED: "The meeting is locked: nobody new can join.",
    Refusal.PASSCODE_REQUIRED: "This meeting needs a passcode.",
    Refusal.WRONG_PASSCODE: "The passcode or link is not right.",
    Refusal.INVITE_REQUIRED: "This meeting is only for people with a personal invitation.",
    Refusal.INVITE_INVALID: "This invitation is not valid for this meeting.",
    Refusal.INVITE_EXPIRED: "This invitation has expired.",
    Refusal.HOST_ABSENT: "The meeting has not been started by its host yet.",
    Refusal.FULL: "The meeting is full.",
    Refusal.BAD_NAME: f"Give a name of 1 to {MAX_NAME_CHARS} printable characters.",
}

# Refusals that count as a guess at a secret (the meeting id, passcode, link token or invite).
GUESSES = frozenset({Refusal.UNKNOWN_MEETING, Refusal.WRONG_PASSCODE, Refusal.INVITE_INVALID})


class JoinRefused(Exception):
    """A join request that was refused; ``message`` is fit to show to the person."""

    def __init__(self, reason: Refusal, retry_after_s: float | None = None) -> None:
        super().__init__(REFUSAL_MESSAGES[reason])
        self.reason = reason
        self.message = REFUSAL_MESSAGES[reason]
        self.retry_after_s = retry_after_s


class ControlRefused(Exception):
    """A participant or host action that is not allowed now; the message says why."""


class UnknownParticipant(ControlRefused):
    """The participant named is not (or no longer) in the meeting."""


class Role(StrEnum):
    HOST = "host"
    ALTERNATIVE_HOST = "alternative_host"
    CO_HOST = "co_host"
    PARTICIPANT = "participant"


# A targeted control needs a higher rank than its target's; the room outranks everyone.
RANK = {Role.HOST: 3, Role.ALTERNATIVE_HOST: 2, Role.CO_HOST: 1, Role.PARTICIPANT: 0}


class Action(StrEnum):
    ADMIT = "admit"
    REMOVE = "remove"
    MUTE = "mute"
    ASK_UNMUTE = "ask_unmute"
    STOP_VIDEO = "stop_video"
    LOWER_HAND = "lower_hand"
    LOCK = "lock"
    SHARING = "sharing"
    COHOST = "cohost"
    RECORDING = "recording"
    INVITE = "invite"
    END = "end"


_COHOST_ACTIONS = frozenset(
    {
        Action.ADMIT,
        Action.REMOVE,
        Action.MUTE,
        Action.ASK_UNMUTE,
        Action.STOP_VIDEO,
        Action.LOWER_HAND,
        Action.LOCK,
        Action.SHARING,
    }
)
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.HOST: frozenset(Action),
    Role.ALTERNATIVE_HOST: frozenset(Action),
    Role.CO_HOST: _COHOST_ACTIONS,
    Role.PARTICIPANT: frozenset(),
}


class ChatTarget(StrEnum):
    EVERYONE = "everyone"
    HOST = "host"


class EventKind(StrEnum):
    """What a participant is told."""

    ADMITTED = "admitted"
    REMOVED = "removed"
    ENDED = "ended"
    LEFT = "left"
    MUTED = "muted"
    ASK_UNMUTE = "ask_unmute"
    VIDEO_STOPPED = "video_stopped"
    SHARE_ALLOWED = "share_allowed"
    SHARE_DENIED = "share_denied"
    ROLE_CHANGED = "role_changed"
    HAND_LOWERED = "hand_lowered"
    CHAT = "chat"
    RECORDING_STARTED = "recording_started"
    RECORDING_STOPPED = "recording_stopped"
    ROSTER = "roster"


FINAL_EVENTS = frozenset({EventKind.REMOVED, EventKind.ENDED, EventKind.LEFT})

EVENT_MESSAGES = {
    EventKind.ADMITTED: "The host let you in.",
    EventKind.REMOVED: "The host removed you from the meeting.",
    EventKind.ENDED: "The meeting has ended.",
    EventKind.LEFT: "You left the meeting.",
    EventKind.MUTED: "The host muted you.",
    EventKind.ASK_UNMUTE: "The host asks you to unmute.",
    EventKind.VIDEO_STOPPED: "The host stopped your video.",
    EventKind.SHARE_ALLOWED: "You may share your screen.",
    EventKind.SHARE_DENIED: "Screen sharing is not allowed for you now.",
    EventKind.ROLE_CHANGED: "Your role in the meeting changed.",
    EventKind.HAND_LOWERED: "The host lowered your hand.",
    EventKind.CHAT: "New chat message.",
    EventKind.RECORDING_STARTED: "This meeting is being recorded.",
    EventKind.RECORDING_STOPPED: "Recording has stopped.",
    EventKind.ROSTER: "Participants changed.",
}


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a remote person sends to join; exactly one credential is normally given."""

    meeting_id: str
    name: str
    address: str
    passcode: str | None = None
    link_token: str | None = None
    invite: str | None = None
    client_key: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    at: float
    sender_id: str
    sender_name: str
    to: str  # "everyone", "host" or a participant id (from the host, privately)
    text: str


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing one participant must be told."""

    to: str
    kind: EventKind
    chat: ChatMessage | None = None

    @property
    def message(self) -> str:
        return EVENT_MESSAGES[self.kind]


@dataclass(slots=True)
class Participant:
    id: str
    name: str
    address: str
    client_key: str | None
    invite_id: str | None
    role: Role
    waiting: bool
    muted: bool
    video: bool
    joined_at: float
    hand: bool = False


@dataclass(frozen=True, slots=True)
class Invite:
    """A personal invitation: signed, expiring, for one attendee of one meeting."""

    meeting_id: str
    invite_id: str
    name: str
    role: Role
    expires_at: float


@dataclass(frozen=True, slots=True)
class Rules:
    """The meeting settings the policy needs, taken from the `[meeting]` section."""

    id_digits: int = 10
    passcode_length: int = 8
    waiting_room: bool = True
    join_before_host: bool = False
    mute_on_entry: bool = True
    video_off_on_entry: bool = True
    host_only_sharing: bool = True
    personal_id: str | None = None
    authenticated_only: bool = False
    invite_valid_s: float = 12 * 3600.0
    guess_limit_per_address: int = 5
    guess_limit_per_meeting: int = 30
    guess_window_s: float = 300.0
    max_participants: int = 50
    remove_bans_address: bool = True

    @classmethod
    def from_settings(cls, settings: MeetingSettings) -> Rules:
        return cls(
            id_digits=settings.id_digits,
            passcode_length=settings.passcode_length,
            waiting_room=settings.waiting_room,
            join_before_host=settings.join_before_host,
            mute_on_entry=settings.mute_on_entry,
            video_off_on_entry=settings.video_off_on_entry,
            host_only_sharing=settings.host_only_sharing,
            personal_id=settings.personal_id,
            authenticated_only=settings.authenticated_only,
            invite_valid_s=settings.invite_valid_h * 3600.0,
            guess_limit_per_address=settings.guess_limit_per_address,
            guess_limit_per_meeting=settings.guess_limit_per_meeting,
            guess_window_s=settings.guess_window_s,
            max_participants=settings.max_participants,
            remove_bans_address=settings.remove_bans_address,
        )


class GuessLimiter:
    """Counts failed guesses per key in a sliding window; a key at its limit is blocked.

    Memory is bounded: old failures are forgotten, and past ``max_keys`` keys the key that
    failed longest ago is dropped first.
    """

    def __init__(self, limit: int, window_s: float, max_keys: int = MAX_TRACKED_ADDRESSES) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may guess again, or None if it may now."""
        failures = self._recent(key, now)
        if len(failures) < self.limit:
            return None
        return failures[-self.limit] + self.window_s - now

    def record(self, key: str, now: float) -> None:
        failures = self._recent(key, now)
        self._failures.pop(key, None)  # re-insert: the dict's order is least recent first
        failures.append(now)
        self._failures[key] = failures
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        while len(failures) > self.limit:
            failures.popleft()
        return failures


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def normalize_meeting_id(text: str) -> str:
    """``"123 456-7890"`` as ``"1234567890"``: people type ids with spaces and dashes."""
    return "".join(ch for ch in text if ch not in " -")


def generate_meeting_id(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def generate_passcode(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(PASSCODE_ALPHABET) for _ in range(length))


def link_token(secret: bytes, meeting_id: str, passcode: str) -> str:
    """The join link's token: an HMAC of the passcode, so the link never carries it."""
    digest = hmac.new(secret, f"{meeting_id}:{passcode}".encode(), hashlib.sha256).digest()
    return _b64(digest)[:LINK_TOKEN_CHARS]


def same_secret(given: str, secret: str) -> bool:
    """Compare in constant time; our secrets are ASCII, so other text is simply wrong."""
    return given.isascii() and hmac.compare_digest(given.encode(), secret.encode())


class InviteSigner:
    """Issues and checks personal invite tokens: ``base64url(json).base64url(hmac)``."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("an invite key needs at least 16 bytes")
        self._key = key

    def issue(self, invite: Invite) -> str:
        body = {
            "m": invite.meeting_id,
            "i": invite.invite_id,
            "n": invite.name,
            "r": invite.role.value,
            "e": invite.expires_at,
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, meeting_id: str, now: float) -> Invite:
        """The invite in ``token``; raises `JoinRefused` (INVITE_INVALID or INVITE_EXPIRED)."""
        payload, dot, signature = token.partition(".")
        if len(token) > MAX_TOKEN_CHARS or not dot:
            raise JoinRefused(Refusal.INVITE_INVALID)
        if not same_secret(signature, self._sign(payload)):
            raise JoinRefused(Refusal.INVITE_INVALID)
        invite = self._decode(payload)
        if invite.meeting_id != meeting_id:
            raise JoinRefused(Refusal.INVITE_INVALID)
        if now >= invite.expires_at:
            raise JoinRefused(Refusal.INVITE_EXPIRED)
        return invite

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    @staticmethod
    def _decode(payload: str) -> Invite:
        # Signed by us, so well formed unless the key leaked; checked all the same.
        try:
            body = json.loads(_unb64(payload))
            return Invite(
                meeting_id=str(body["m"]),
                invite_id=str(body["i"]),
                name=str(body["n"]),
                role=Role(body["r"]),
                expires_at=float(body["e"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise JoinRefused(Refusal.INVITE_INVALID) from None


def clean_name(name: str) -> str | None:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        return None
    return name


@dataclass(slots=True)
class _Bans:
    """What identifies a removed participant: any match keeps a newcomer out."""

    ids: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    client_keys: set[str] = field(default_factory=set)
    invite_ids: set[str] = field(default_factory=set)

    def add(self, participant: Participant, by_address: bool) -> None:
        self.ids.add(participant.id)
        if by_address:
            self.addresses.add(participant.address)
        if participant.client_key:
            self.client_keys.add(participant.client_key)
        if participant.invite_id:
            self.invite_ids.add(participant.invite_id)

    def match(self, request: JoinRequest) -> bool:
        return request.address in self.addresses or (
            request.client_key is not None and request.client_key in self.client_keys
        )


class Meeting:
    """One meeting hosted by the room: its secrets, its participants and its state."""

    def __init__(
        self,
        rules: Rules,
        *,
        clock: Clock,
        rng: random.Random,
        invite_key: bytes,
        address_limiter: GuessLimiter | None = None,
        booking_id: str | None = None,
        authenticated_only: bool | None = None,
        room_present: bool = True,
    ) -> None:
        self.rules = rules
        self._clock = clock
        self._rng = rng
        self.id = rules.personal_id or generate_meeting_id(rng, rules.id_digits)
        self.passcode = generate_passcode(rng, rules.passcode_length)
        self._secret = rng.getrandbits(256).to_bytes(32, "big")
        self.link_token = link_token(self._secret, self.id, self.passcode)
        self._invites = InviteSigner(invite_key)
        self._address_limiter = address_limiter or GuessLimiter(
            rules.guess_limit_per_address, rules.guess_window_s
        )
        self._meeting_limiter = GuessLimiter(rules.guess_limit_per_meeting, rules.guess_window_s)
        self.booking_id = booking_id
        self.authenticated_only = (
            rules.authenticated_only if authenticated_only is None else authenticated_only
        )
        self.room_present = room_present
        self.started_at = clock()
        self.participants: dict[str, Participant] = {}
        self.locked = False
        self.sharing_for_all = not rules.host_only_sharing
        self.recording = False
        self.ended = False
        self.chat_log: deque[ChatMessage] = deque(maxlen=CHAT_HISTORY)
        self.chat_count = 0
        self._bans = _Bans()

    # -- reading

    @property
    def host_present(self) -> bool:
        return self.room_present or any(
            p.role is Role.ALTERNATIVE_HOST and not p.waiting for p in self.participants.values()
        )

    def admitted(self) -> list[Participant]:
        return [p for p in self.participants.values() if not p.waiting]

    def waiting(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.waiting]

    def was_removed(self, participant_id: str) -> bool:
        return participant_id in self._bans.ids

    def can_share(self, participant_id: str) -> bool:
        participant = self.participants.get(participant_id)
        if participant is None or participant.waiting or self.ended:
            return False
        return self.sharing_for_all or participant.role is not Role.PARTICIPANT

    def role_of(self, actor: str) -> Role:
        if actor == HOST_ID:
            return Role.HOST
        return self._present(actor).role

    def may(self, actor: str, action: Action) -> bool:
        try:
            return action in PERMISSIONS[self.role_of(actor)] and self._acting(actor)
        except ControlRefused:
            return False

    # -- joining

    def join(self, request: JoinRequest) -> tuple[Participant, list[Notice]]:
        """Let ``request`` in (admitted or waiting) or raise `JoinRefused`."""
        now = self._clock()
        try:
            return self._join(request, now)
        except JoinRefused as refused:
            if refused.reason in GUESSES:
                self._address_limiter.record(request.address, now)
            if refused.reason in GUESSES - {Refusal.UNKNOWN_MEETING}:
                self._meeting_limiter.record(self.id, now)
            raise

    def _join(self, request: JoinRequest, now: float) -> tuple[Participant, list[Notice]]:
        if self.ended:
            raise JoinRefused(Refusal.ENDED)
        self._check_rate(request.address, now)
        if normalize_meeting_id(request.meeting_id) != self.id:
            raise JoinRefused(Refusal.UNKNOWN_MEETING)
        if self._bans.match(request):
            raise JoinRefused(Refusal.REMOVED)
        if self.locked:
            raise JoinRefused(Refusal.LOCKED)
        invite = self._credentials(request, now)
        name = invite.name if invite is not None else clean_name(request.name)
        if name is None:
            raise JoinRefused(Refusal.BAD_NAME)
        role = invite.role if invite is not None else Role.PARTICIPANT
        host_needed = not self.host_present and not self.rules.join_before_host
        if host_needed and role is not Role.ALTERNATIVE_HOST:
            raise JoinRefused(Refusal.HOST_ABSENT)
        if len(self.participants) >= self.rules.max_participants:
            raise JoinRefused(Refusal.FULL)
        waiting = self.rules.waiting_room and role is Role.PARTICIPANT
        participant = Participant(
            id=self._new_participant_id(),
            name=name,
            address=request.address,
            client_key=request.client_key,
            invite_id=invite.invite_id if invite is not None else None,
            role=role,
            waiting=waiting,
            muted=self.rules.mute_on_entry,
            video=not self.rules.video_off_on_entry,
            joined_at=now,
        )
        self.participants[participant.id] = participant
        notices = [] if waiting else [Notice(participant.id, EventKind.ADMITTED)]
        return participant, notices + self._recording_notice([participant])

    def _check_rate(self, address: str, now: float) -> None:
        waits = [
            self._address_limiter.retry_after(address, now),
            self._meeting_limiter.retry_after(self.id, now),
        ]
        longest = max((w for w in waits if w is not None), default=None)
        if longest is not None:
            raise JoinRefused(Refusal.RATE_LIMITED, retry_after_s=longest)

    def _credentials(self, request: JoinRequest, now: float) -> Invite | None:
        """The invite that lets ``request`` in, None for a passcode; or raise."""
        if request.invite is not None:
            invite = self._invites.verify(request.invite, self.id, now)
            if invite.invite_id in self._bans.invite_ids:
                raise JoinRefused(Refusal.REMOVED)
            if any(p.invite_id == invite.invite_id for p in self.participants.values()):
                raise JoinRefused(Refusal.INVITE_INVALID)  # one attendee per invitation
            return invite
        if self.authenticated_only:
            raise JoinRefused(Refusal.INVITE_REQUIRED)
        if request.passcode is not None:
            if not same_secret(request.passcode.strip().lower(), self.passcode):
                raise JoinRefused(Refusal.WRONG_PASSCODE)
            return None
        if request.link_token is not None:
            if not same_secret(request.link_token, self.link_token):
                raise JoinRefused(Refusal.WRONG_PASSCODE)
            return None
        raise JoinRefused(Refusal.PASSCODE_REQUIRED)

    def _new_participant_id(self) -> str:
        while True:
            candidate = f"p-{self._rng.getrandbits(32):08x}"
            if candidate not in self.participants and candidate not in self._bans.ids:
                return candidate

    def issue_invite(self, name: str, role: Role = Role.PARTICIPANT, actor: str = HOST_ID) -> str:
        """A personal invite token for one attendee (or an alternative host)."""
        self.require(actor, Action.INVITE)
        cleaned = clean_name(name)
        if cleaned is None:
            raise ControlRefused(REFUSAL_MESSAGES[Refusal.BAD_NAME])
        if role not in (Role.PARTICIPANT, Role.ALTERNATIVE_HOST):
            raise ControlRefused(
                f"an invitation is for a participant or an alternative host, not {role}"
            )
        invite = Invite(
            meeting_id=self.id,
            invite_id=f"i-{self._rng.getrandbits(64):016x}",
            name=cleaned,
            role=role,
            expires_at=self._clock() + self.rules.invite_valid_s,
        )
        return self._invites.issue(invite)

    # -- what participants do themselves

    def leave(self, participant_id: str) -> list[Notice]:
        if self.participants.pop(participant_id, None) is None:
            return []
        return [Notice(participant_id, EventKind.LEFT)]

    def set_muted(self, participant_id: str, muted: bool) -> list[Notice]:
        self._admitted(participant_id).muted = muted
        return []

    def set_video(self, participant_id: str, on: bool) -> list[Notice]:
        self._admitted(participant_id).video = on
        return []

    def raise_hand(self, participant_id: str, raised: bool) -> list[Notice]:
        self._admitted(participant_id).hand = raised
        return []

    def chat(self, sender: str, text: str, to: str = ChatTarget.EVERYONE) -> list[Notice]:
        """Send ``text`` to everyone, privately to the host(s), or (hosts only) to one person."""
        self._live()
        text = text.strip()
        if not 1 <= len(text) <= MAX_CHAT_CHARS:
            raise ControlRefused(f"a chat message has 1 to {MAX_CHAT_CHARS} characters")
        sender_name = "Room" if sender == HOST_ID else self._admitted(sender).name
        recipients = self._chat_recipients(sender, to)
        message = ChatMessage(self._clock(), sender, sender_name, str(to), text)
        self.chat_log.append(message)
        self.chat_count += 1
        return [Notice(pid, EventKind.CHAT, message) for pid in recipients if pid != sender]

    def _chat_recipients(self, sender: str, to: str) -> list[str]:
        if to == ChatTarget.EVERYONE:
            return [p.id for p in self.admitted()]
        if to == ChatTarget.HOST:
            return [p.id for p in self.admitted() if p.role is not Role.PARTICIPANT]
        if RANK[self.role_of(sender)] == RANK[Role.PARTICIPANT]:
            raise ControlRefused("participants can chat to everyone or privately to the host")
        self._admitted(to)
        return [to]

    # -- host controls (the room, an alternative host, or a co-host where allowed)

    def admit(self, participant_id: str | None, actor: str = HOST_ID) -> list[Notice]:
        """Admit one waiting participant, or everyone waiting when ``participant_id`` is None."""
        self.require(actor, Action.ADMIT)
        if participant_id is None:
            targets = self.waiting()
        else:
            target = self._present(participant_id)
            if not target.waiting:
                raise ControlRefused(f"{target.name} is already in the meeting")
            targets = [target]
        for target in targets:
            target.waiting = False
        return [Notice(t.id, EventKind.ADMITTED) for t in targets] + self._recording_notice(targets)

    def remove(self, participant_id: str, actor: str = HOST_ID) -> list[Notice]:
        """Remove a participant (waiting or not); they cannot rejoin this meeting."""
        target = self._target(actor, Action.REMOVE, participant_id, admitted=False)
        del self.participants[target.id]
        self._bans.add(target, self.rules.remove_bans_address)
        return [Notice(target.id, EventKind.REMOVED)]

    def mute(self, participant_id: str, actor: str = HOST_ID) -> list[Notice]:
        target = self._target(actor, Action.MUTE, participant_id)
        return self._mute([target])

    def mute_all(self, actor: str = HOST_ID) -> list[Notice]:
        self.require(actor, Action.MUTE)
        rank = RANK[self.role_of(actor)]
        return self._mute([p for p in self.admitted() if p.id != actor and RANK[p.role] < rank])

    def _mute(self, targets: Iterable[Participant]) -> list[Notice]:
        notices = []
        for target in targets:
            if not target.muted:
                target.muted = True
                notices.append(Notice(target.id, EventKind.MUTED))
        return notices

    def ask_unmute(self, participant_id: str, actor: str = HOST_ID) -> list[Notice]:
        """Ask, never force: only a participant unmutes their own microphone."""
        target = self._target(actor, Action.ASK_UNMUTE, participant_id)
        if not target.muted:
            raise ControlRefused(f"{target.name} is not muted")
        return [Notice(target.id, EventKind.ASK_UNMUTE)]

    def stop_video(self, participant_id: str, actor: str = HOST_ID) -> list[Notice]:
        target = self._target(actor, Action.STOP_VIDEO, participant_id)
        if not target.video:
            return []
        target.video = False
        return [Notice(target.id, EventKind.VIDEO_STOPPED)]

    def lower_hand(self, participant_id: str, actor: str = HOST_ID) -> list[Notice]:
        target = self._target(actor, Action.LOWER_HAND, participant_id)
        if not target.hand:
            return []
        target.hand = False
        return [Notice(target.id, EventKind.HAND_LOWERED)]

    def lock(self, locked: bool, actor: str = HOST_ID) -> list[Notice]:
        self.require(actor, Action.LOCK)
        self.locked = locked
        return []

    def allow_sharing(self, allowed: bool, actor: str = HOST_ID) -> list[Notice]:
        """Let every participant share (True) or only hosts and co-hosts (False)."""
        self.require(actor, Action.SHARING)
        return self._sharing_changes(lambda: setattr(self, "sharing_for_all", allowed))

    def make_cohost(self, participant_id: str, on: bool, actor: str = HOST_ID) -> list[Notice]:
        target = self._target(actor, Action.COHOST, participant_id, rank_of_target=False)
        if target.role is Role.ALTERNATIVE_HOST:
            raise ControlRefused(f"{target.name} is an alternative host")
        role = Role.CO_HOST if on else Role.PARTICIPANT
        if target.role is role:
            return []
        notices = self._sharing_changes(lambda: setattr(target, "role", role))
        return [Notice(target.id, EventKind.ROLE_CHANGED), *notices]

    def set_recording(self, on: bool, actor: str = HOST_ID) -> list[Notice]:
        self.require(actor, Action.RECORDING)
        if self.recording == on:
            return []
        self.recording = on
        kind = EventKind.RECORDING_STARTED if on else EventKind.RECORDING_STOPPED
        return [Notice(p.id, kind) for p in self.admitted()]

    def end(self, actor: str = HOST_ID) -> list[Notice]:
        """End the meeting for everyone, waiting room included."""
        self.require(actor, Action.END)
        self.ended = True
        self.recording = False
        notices = [Notice(pid, EventKind.ENDED) for pid in self.participants]
        self.participants.clear()
        return notices

    # -- helpers

    def _recording_notice(self, joined: Iterable[Participant]) -> list[Notice]:
        # Everyone in a recorded meeting is told, including those who come in later.
        if not self.recording:
            return []
        return [Notice(p.id, EventKind.RECORDING_STARTED) for p in joined if not p.waiting]

    def _sharing_changes(self, change: Callable[[], None]) -> list[Notice]:
        before = {pid: self.can_share(pid) for pid in self.participants}
        change()
        notices = []
        for pid, could in before.items():
            can = self.can_share(pid)
            if can != could:
                kind = EventKind.SHARE_ALLOWED if can else EventKind.SHARE_DENIED
                notices.append(Notice(pid, kind))
        return notices

    def _live(self) -> None:
        if self.ended:
            raise ControlRefused("the meeting has ended")

    def _present(self, participant_id: str) -> Participant:
        self._live()
        participant = self.participants.get(participant_id)
        if participant is None:
            raise UnknownParticipant(f"no participant {participant_id!r} in the meeting")
        return participant

    def _admitted(self, participant_id: str) -> Participant:
        participant = self._present(participant_id)
        if participant.waiting:
            raise ControlRefused(f"{participant.name} is still in the waiting room")
        return participant

    def _acting(self, actor: str) -> bool:
        return actor == HOST_ID or not self._present(actor).waiting

    def require(self, actor: str, action: Action) -> None:
        """Raise `ControlRefused` unless ``actor`` may do ``action`` now."""
        self._live()
        role = self.role_of(actor)
        if action not in PERMISSIONS[role] or not self._acting(actor):
            raise ControlRefused(f"a {role.value.replace('_', '-')} may not {action.value}")

    def _target(
        self,
        actor: str,
        action: Action,
        participant_id: str,
        admitted: bool = True,
        rank_of_target: bool = True,
    ) -> Participant:
        self.require(actor, action)
        target = self._admitted(participant_id) if admitted else self._present(participant_id)
        if target.id == actor:
            raise ControlRefused(f"cannot {action.value} yourself")
        if rank_of_target and RANK[target.role] >= RANK[self.role_of(actor)]:
            raise ControlRefused(
                f"a {self.role_of(actor).value} may not {action.value} a {target.role.value}"
            )
        return target
