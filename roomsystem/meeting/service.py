"""The meeting service: the room's current meeting, its host controls and its participants.

The rules live in `roomsystem.meeting.policy`; this service owns the one running meeting,
turns the policy's notices into per-participant inboxes (what the signalling layer reads to
tell a browser what happened to it), publishes the ``meeting`` topic and offers the host
controls as API commands. Media is not here: the signalling and media layers ask this
service who is admitted, muted or allowed to share.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from pydantic import BaseModel, Field, model_validator

from roomsystem.bus import StateBus
from roomsystem.commands import Arguments, Command, CommandError, NoArguments
from roomsystem.config import MeetingSettings
from roomsystem.devices.state import DevicesState
from roomsystem.lifecycle import Service
from roomsystem.meeting.policy import (
    EVENT_MESSAGES,
    FINAL_EVENTS,
    HOST_ID,
    MAX_CHAT_CHARS,
    MAX_NAME_CHARS,
    Action,
    ChatMessage,
    ChatTarget,
    Clock,
    ControlRefused,
    EventKind,
    GuessLimiter,
    JoinRefused,
    JoinRequest,
    Meeting,
    Notice,
    Participant,
    Refusal,
    Role,
    Rules,
    UnknownParticipant,
    normalize_meeting_id,
)
from roomsystem.meeting.state import (
    CHAT_IN_SNAPSHOT,
    ChatEntry,
    MeetingPolicy,
    MeetingState,
    ParticipantInfo,
)

logger = logging.getLogger(__name__)

INBOX_SIZE = 256
# Speakerphone buttons as the profiles name them (KEY_PICKUP_PHONE, KEY_HANGUP_PHONE).
PICK_UP = "hook"
HANG_UP = "end_call"
DEFAULT_JOIN_PATH = "/join"


class Recorder(Protocol):
    """What the media layer provides to record the meeting."""

    async def start(self, meeting_id: str) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RosterEntry:
    id: str
    name: str
    role: Role
    muted: bool
    video: bool
    hand: bool


@dataclass(frozen=True, slots=True)
class ParticipantView:
    """What one participant knows: their own state, who else is there, the meeting's flags."""

    id: str
    name: str
    role: Role
    waiting: bool
    muted: bool
    video: bool
    hand: bool
    can_share: bool
    recording: bool
    locked: bool
    meeting_id: str
    roster: tuple[RosterEntry, ...]


@dataclass(frozen=True, slots=True)
class ParticipantEvent:
    kind: EventKind
    message: str
    view: ParticipantView
    chat: ChatMessage | None = None


class ParticipantSession:
    """One remote participant's inbox: iterate it, or ``await next()``, until it closes.

    It closes after a final event (left, removed, meeting ended). A reader that falls behind
    loses the oldest events (``dropped`` counts them); every event carries a complete view.
    """

    def __init__(self, participant: Participant, view: ParticipantView) -> None:
        self.id = participant.id
        self.role = participant.role
        self.waiting = participant.waiting
        self.view = view
        self.dropped = 0
        self.closed = False
        self._events: deque[ParticipantEvent] = deque()
        self._wakeup = asyncio.Event()

    def _put(self, event: ParticipantEvent) -> None:
        if self.closed:
            return
        if len(self._events) >= INBOX_SIZE:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)
        self.view = event.view
        self.role = event.view.role
        self.waiting = event.view.waiting
        if event.kind in FINAL_EVENTS:
            self.closed = True
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._events)

    async def next(self) -> ParticipantEvent:
        """The oldest event not read yet; waits for one. `EOFError` once closed and read."""
        while not self._events:
            if self.closed:
                raise EOFError("the participant has left the meeting")
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._events.popleft()

    async def __aiter__(self) -> AsyncIterator[ParticipantEvent]:
        while True:
            try:
                yield await self.next()
            except EOFError:
                return


# -- command arguments


ParticipantId = Field(min_length=1, max_length=64, description="a participant id")


class StartArgs(Arguments):
    booking_id: str | None = Field(
        default=None, min_length=1, max_length=256, description="the booking this meeting is for"
    )
    authenticated_only: bool | None = Field(
        default=None, description="only personal invitations get in; default: the setting"
    )


class AdmitArgs(Arguments):
    participant: str | None = Field(
        default=None, min_length=1, max_length=64, description="a waiting participant's id"
    )
    all: bool = Field(default=False, description="admit everyone who is waiting")

    @model_validator(mode="after")
    def _one_or_all(self) -> AdmitArgs:
        if (self.participant is None) == (not self.all):
            raise ValueError("give either participant (an id) or all = true")
        return self


class ParticipantArgs(Arguments):
    participant: str = ParticipantId


class CohostArgs(Arguments):
    participant: str = ParticipantId
    on: bool


class OnArgs(Arguments):
    on: bool


class SharingArgs(Arguments):
    allow: bool = Field(description="true: every participant may share; false: hosts only")


class ChatArgs(Arguments):
    text: str = Field(min_length=1, max_length=MAX_CHAT_CHARS)
    to: str | None = Field(
        default=None, min_length=1, max_length=64, description="a participant id; default: all"
    )


class InviteArgs(Arguments):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    alternative_host: bool = False


class InviteResult(BaseModel):
    token: str
    join_url: str


class MeetingService(Service):
    """Owns the room's current meeting and publishes the ``meeting`` topic."""

    name = "meeting"

    def __init__(
        self,
        settings: MeetingSettings,
        bus: StateBus,
        *,
        recorder: Recorder | None = None,
        join_base_url: str | None = None,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.rules = Rules.from_settings(settings)
        self.recorder = recorder
        self.join_base_url = join_base_url or DEFAULT_JOIN_PATH
        self._bus = bus
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._invite_key = secrets.token_bytes(32)
        # One per room, not per meeting: a guesser must not get a fresh allowance per meeting.
        self._address_limiter = GuessLimiter(
            self.rules.guess_limit_per_address, self.rules.guess_window_s
        )
        self.meeting: Meeting | None = None
        self._ended_ids: deque[str] = deque(maxlen=16)
        self._sessions: dict[str, ParticipantSession] = {}
        self._room_muted = False

    async def run(self) -> None:
        """Follow the room's microphone, so participants see when the room is muted, and
        the speakerphone's call buttons, which start and end meetings."""
        with self._bus.subscribe() as subscription:
            devices = subscription.snapshot.topics.get("devices")
            self._follow_room_mic(devices)
            # A press from before this service started is not a request to it.
            pressed = devices.audio.last_button if isinstance(devices, DevicesState) else None
            async for change in subscription:
                if change.topic == "devices" and isinstance(change.value, DevicesState):
                    self._follow_room_mic(change.value)
                    button = change.value.audio.last_button
                    if button is not None and button != pressed and not button.repeat:
                        pressed = button
                        await self._call_button(button.action)

    async def _call_button(self, action: str) -> None:
        """Pick up starts a meeting now (as *Meet now* does), hang up ends the meeting."""
        try:
            if action == PICK_UP and self.meeting is None:
                logger.info("the speakerphone was picked up: meeting now")
                self.start()
            elif action == HANG_UP and self.meeting is not None:
                logger.info("the speakerphone hung up: meeting %s ends", self.meeting.id)
                await self.end()
        except ControlRefused as exc:
            logger.warning("the speakerphone's %s button: %s", action, exc)

    def _follow_room_mic(self, devices: BaseModel | None) -> None:
        if not isinstance(devices, DevicesState) or devices.audio.mic_muted == self._room_muted:
            return
        meeting = self.meeting
        roster = self._roster(meeting) if meeting is not None else ()
        self._room_muted = devices.audio.mic_muted
        if meeting is not None:
            self._deliver(meeting, [], roster)

    async def close(self) -> None:
        if self.meeting is not None:
            await self.end()

    # -- the meeting as a whole

    def start(
        self, booking_id: str | None = None, authenticated_only: bool | None = None
    ) -> Meeting:
        """Start a meeting with a new id and passcode (the booked one when given its id)."""
        if self.meeting is not None:
            raise ControlRefused(f"meeting {self.meeting.id} is already running")
        self.meeting = Meeting(
            self.rules,
            clock=self._clock,
            rng=self._rng,
            invite_key=self._invite_key,
            address_limiter=self._address_limiter,
            booking_id=booking_id,
            authenticated_only=authenticated_only,
        )
        logger.info("meeting %s started", self.meeting.id)
        self._publish()
        return self.meeting

    async def end(self, actor: str = HOST_ID) -> None:
        """End the meeting for everyone and stop a recording."""
        meeting = self._current()
        recording = meeting.recording
        self._apply(lambda: meeting.end(actor))
        self.meeting = None
        self._ended_ids.append(meeting.id)
        self._sessions.clear()
        logger.info("meeting %s ended", meeting.id)
        self._publish()
        if recording and self.recorder is not None:
            await self._stop_recorder()

    async def set_recording(self, on: bool, actor: str = HOST_ID) -> None:
        meeting = self._current()
        meeting.require(actor, Action.RECORDING)
        if self.recorder is None:
            raise ControlRefused("this room has no recorder")
        if on == meeting.recording:
            return
        if on:
            try:
                await self.recorder.start(meeting.id)
            except Exception as exc:
                logger.exception("the recorder did not start")
                raise ControlRefused(f"recording could not start: {exc}") from None
        else:
            await self._stop_recorder()
        if self.meeting is meeting:
            self._apply(lambda: meeting.set_recording(on, actor))
        elif on:  # the meeting ended while the recorder was starting
            await self._stop_recorder()

    async def _stop_recorder(self) -> None:
        assert self.recorder is not None
        try:
            await self.recorder.stop()
        except Exception:
            logger.exception("the recorder did not stop cleanly")

    def set_join_base_url(self, url: str) -> None:
        """Where the join page is served (``https://HOST:PORT/join``), once that is known."""
        self.join_base_url = url.rstrip("?")
        self._publish()

    def join_url(self, meeting: Meeting) -> str:
        return f"{self.join_base_url}?meeting={meeting.id}&token={meeting.link_token}"

    def invite(self, name: str, alternative_host: bool = False, actor: str = HOST_ID) -> str:
        """A personal invite token for one attendee."""
        role = Role.ALTERNATIVE_HOST if alternative_host else Role.PARTICIPANT
        return self._current().issue_invite(name, role, actor)

    # -- what remote participants do

    def join(self, request: JoinRequest) -> ParticipantSession:
        """Let a remote person in (admitted or waiting), or raise `JoinRefused`."""
        meeting = self.meeting
        if meeting is None or normalize_meeting_id(request.meeting_id) != meeting.id:
            self._refuse_unknown(request)
        assert meeting is not None
        roster = self._roster(meeting)
        participant, notices = meeting.join(request)
        session = ParticipantSession(participant, self._view(meeting, participant))
        self._sessions[participant.id] = session
        logger.info(
            "%s joined meeting %s (%s)",
            participant.name,
            meeting.id,
            "waiting" if participant.waiting else "admitted",
        )
        self._deliver(meeting, notices, roster)
        return session

    def _refuse_unknown(self, request: JoinRequest) -> None:
        # Unknown ids are guesses too; the policy counts them when a meeting runs.
        if self.meeting is not None:
            self.meeting.join(request)  # raises UNKNOWN_MEETING or RATE_LIMITED, and counts
        now = self._clock()
        wait = self._address_limiter.retry_after(request.address, now)
        if wait is not None:
            raise JoinRefused(Refusal.RATE_LIMITED, retry_after_s=wait)
        if normalize_meeting_id(request.meeting_id) in self._ended_ids:
            raise JoinRefused(Refusal.ENDED)
        self._address_limiter.record(request.address, now)
        raise JoinRefused(Refusal.UNKNOWN_MEETING)

    def leave(self, participant_id: str) -> None:
        meeting = self.meeting
        if meeting is not None:
            self._apply(lambda: meeting.leave(participant_id))

    def set_muted(self, participant_id: str, muted: bool) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.set_muted(participant_id, muted), quiet_to=participant_id)

    def set_video(self, participant_id: str, on: bool) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.set_video(participant_id, on), quiet_to=participant_id)

    def raise_hand(self, participant_id: str, raised: bool) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.raise_hand(participant_id, raised), quiet_to=participant_id)

    def chat(self, sender: str, text: str, to: str = ChatTarget.EVERYONE) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.chat(sender, text, to))

    def may_share(self, participant_id: str) -> bool:
        return self.meeting is not None and self.meeting.can_share(participant_id)

    def is_admitted(self, participant_id: str) -> bool:
        meeting = self.meeting
        if meeting is None:
            return False
        participant = meeting.participants.get(participant_id)
        return participant is not None and not participant.waiting

    def view(self, participant_id: str) -> ParticipantView:
        meeting = self._current()
        participant = meeting.participants.get(participant_id)
        if participant is None:
            raise UnknownParticipant(f"no participant {participant_id!r} in the meeting")
        return self._view(meeting, participant)

    def session(self, participant_id: str) -> ParticipantSession | None:
        return self._sessions.get(participant_id)

    # -- host controls (the room by default; co-hosts and alternative hosts pass actor=)

    def admit(self, participant_id: str | None, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.admit(participant_id, actor))

    def remove(self, participant_id: str, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.remove(participant_id, actor))

    def mute(self, participant_id: str, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.mute(participant_id, actor))

    def mute_all(self, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.mute_all(actor))

    def ask_unmute(self, participant_id: str, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.ask_unmute(participant_id, actor))

    def stop_video(self, participant_id: str, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.stop_video(participant_id, actor))

    def lower_hand(self, participant_id: str, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.lower_hand(participant_id, actor))

    def lock(self, locked: bool, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.lock(locked, actor))

    def allow_sharing(self, allowed: bool, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.allow_sharing(allowed, actor))

    def make_cohost(self, participant_id: str, on: bool, actor: str = HOST_ID) -> None:
        meeting = self._current()
        self._apply(lambda: meeting.make_cohost(participant_id, on, actor))

    # -- delivery and publishing

    def _current(self) -> Meeting:
        if self.meeting is None:
            raise ControlRefused("no meeting is running")
        return self.meeting

    def _apply(self, operation: Callable[[], list[Notice]], quiet_to: str | None = None) -> None:
        """Run ``operation`` and tell everyone concerned; ``quiet_to`` made the change."""
        meeting = self._current()
        roster = self._roster(meeting)
        # Views of those who leave are taken before they are gone.
        before = {pid: self._view(meeting, p) for pid, p in meeting.participants.items()}
        notices = operation()
        self._deliver(meeting, notices, roster, before, quiet_to)

    def _deliver(
        self,
        meeting: Meeting,
        notices: list[Notice],
        roster_before: tuple[RosterEntry, ...],
        views_before: dict[str, ParticipantView] | None = None,
        quiet_to: str | None = None,
    ) -> None:
        told = {quiet_to}
        for notice in notices:
            session = self._sessions.get(notice.to)
            if session is None:
                continue
            participant = meeting.participants.get(notice.to)
            if participant is not None:
                view = self._view(meeting, participant)
            else:
                view = (views_before or {}).get(notice.to, session.view)
                view = _gone(view)
            session._put(ParticipantEvent(notice.kind, notice.message, view, notice.chat))
            told.add(notice.to)
            if session.closed:
                del self._sessions[notice.to]
        if self._roster(meeting) != roster_before:
            for participant in meeting.admitted():
                session = self._sessions.get(participant.id)
                if session is not None and participant.id not in told:
                    view = self._view(meeting, participant)
                    message = EVENT_MESSAGES[EventKind.ROSTER]
                    session._put(ParticipantEvent(EventKind.ROSTER, message, view))
        self._publish()

    def _roster(self, meeting: Meeting) -> tuple[RosterEntry, ...]:
        room = RosterEntry(HOST_ID, "Room", Role.HOST, self._room_muted, True, False)
        others = (
            RosterEntry(p.id, p.name, p.role, p.muted, p.video, p.hand) for p in meeting.admitted()
        )
        return (room, *others)

    def _view(self, meeting: Meeting, participant: Participant) -> ParticipantView:
        return ParticipantView(
            id=participant.id,
            name=participant.name,
            role=participant.role,
            waiting=participant.waiting,
            muted=participant.muted,
            video=participant.video,
            hand=participant.hand,
            can_share=meeting.can_share(participant.id),
            recording=meeting.recording,
            locked=meeting.locked,
            meeting_id=meeting.id,
            roster=() if participant.waiting else self._roster(meeting),
        )

    def _publish(self) -> None:
        self._bus.publish("meeting", self.snapshot())

    def snapshot(self) -> MeetingState:
        meeting = self.meeting
        policy = policy_of(self.settings)
        if meeting is None:
            return MeetingState(policy=policy)
        return MeetingState(
            in_meeting=True,
            id=meeting.id,
            passcode=meeting.passcode,
            join_url=self.join_url(meeting),
            booking_id=meeting.booking_id,
            started_at=_utc(meeting.started_at),
            locked=meeting.locked,
            recording=meeting.recording,
            sharing="everyone" if meeting.sharing_for_all else "host_only",
            authenticated_only=meeting.authenticated_only,
            policy=policy,
            participants=tuple(_info(meeting, p) for p in meeting.participants.values()),
            waiting_count=len(meeting.waiting()),
            chat_count=meeting.chat_count,
            chat=tuple(_entry(m) for m in list(meeting.chat_log)[-CHAT_IN_SNAPSHOT:]),
        )

    # -- API

    def commands(self) -> list[Command]:
        def command(
            path: str, summary: str, arguments: type[Arguments], handler: Callable[..., object]
        ) -> Command:
            return Command(f"meeting/{path}", summary, arguments, MeetingState, _api(self, handler))

        return [
            command(
                "start", "Start a meeting now (or the booked one).", StartArgs, self._api_start
            ),
            command("end", "End the meeting for everyone.", NoArguments, self._api_end),
            command("admit", "Admit one waiting participant, or all.", AdmitArgs, self._api_admit),
            command(
                "remove",
                "Remove a participant; they cannot rejoin this meeting.",
                ParticipantArgs,
                lambda a: self.remove(a.participant),
            ),
            command(
                "lock",
                "Lock (nobody new gets in) or unlock the meeting.",
                OnArgs,
                lambda a: self.lock(a.on),
            ),
            command(
                "mute", "Mute a participant.", ParticipantArgs, lambda a: self.mute(a.participant)
            ),
            command("mute-all", "Mute every participant.", NoArguments, lambda a: self.mute_all()),
            command(
                "ask-unmute",
                "Ask a muted participant to unmute.",
                ParticipantArgs,
                lambda a: self.ask_unmute(a.participant),
            ),
            command(
                "stop-video",
                "Stop a participant's video.",
                ParticipantArgs,
                lambda a: self.stop_video(a.participant),
            ),
            command(
                "lower-hand",
                "Lower a participant's raised hand.",
                ParticipantArgs,
                lambda a: self.lower_hand(a.participant),
            ),
            command(
                "cohost",
                "Make a participant co-host, or no longer.",
                CohostArgs,
                lambda a: self.make_cohost(a.participant, a.on),
            ),
            command(
                "sharing",
                "Allow every participant to share, or hosts only.",
                SharingArgs,
                lambda a: self.allow_sharing(a.allow),
            ),
            command(
                "chat",
                "Send a chat message to everyone, or privately to one participant.",
                ChatArgs,
                lambda a: self.chat(HOST_ID, a.text, a.to or ChatTarget.EVERYONE),
            ),
            command(
                "recording", "Start or stop recording.", OnArgs, lambda a: self.set_recording(a.on)
            ),
            Command(
                "meeting/invite",
                "A personal invitation link for one attendee.",
                InviteArgs,
                InviteResult,
                self._api_invite,
            ),
        ]

    def _api_start(self, args: StartArgs) -> None:
        self.start(args.booking_id, args.authenticated_only)

    async def _api_end(self, args: NoArguments) -> None:
        await self.end()

    def _api_admit(self, args: AdmitArgs) -> None:
        self.admit(None if args.all else args.participant)

    async def _api_invite(self, args: InviteArgs) -> InviteResult:
        try:
            token = self.invite(args.name, args.alternative_host)
        except ControlRefused as exc:
            raise _command_error(exc) from None
        meeting = self._current()
        return InviteResult(
            token=token, join_url=f"{self.join_base_url}?meeting={meeting.id}&invite={token}"
        )


def _api(service: MeetingService, handler: Callable[..., object]) -> Callable[[Arguments], Any]:
    """A command handler: run ``handler``, answer with the meeting, map refusals to errors."""

    async def run(args: Arguments) -> MeetingState:
        try:
            result = handler(args)
            if asyncio.iscoroutine(result):
                await result
        except ControlRefused as exc:
            raise _command_error(exc) from None
        return service.snapshot()

    return run


def _command_error(exc: ControlRefused) -> CommandError:
    return CommandError(404 if isinstance(exc, UnknownParticipant) else 409, str(exc))


def policy_of(settings: MeetingSettings) -> MeetingPolicy:
    return MeetingPolicy(
        waiting_room=settings.waiting_room,
        join_before_host=settings.join_before_host,
        mute_on_entry=settings.mute_on_entry,
        video_off_on_entry=settings.video_off_on_entry,
        host_only_sharing=settings.host_only_sharing,
    )


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _info(meeting: Meeting, participant: Participant) -> ParticipantInfo:
    return ParticipantInfo(
        id=participant.id,
        name=participant.name,
        role=cast(Any, participant.role.value),  # never "host": the room is not a participant
        waiting=participant.waiting,
        muted=participant.muted,
        video=participant.video,
        hand=participant.hand,
        can_share=meeting.can_share(participant.id),
        joined_at=_utc(participant.joined_at),
    )


def _entry(message: ChatMessage) -> ChatEntry:
    return ChatEntry(
        at=_utc(message.at),
        sender_id=message.sender_id,
        sender_name=message.sender_name,
        to=message.to,
        text=message.text,
    )


def _gone(view: ParticipantView) -> ParticipantView:
    """The last view of someone who is no longer in the meeting."""
    return replace(view, can_share=False, recording=False, roster=())
