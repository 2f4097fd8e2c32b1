"""The meeting service through the room's real API: start, admit, host controls, end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomsystem.bus import StateBus
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.devices.service import DevicesService
from roomsystem.lifecycle import Service
from roomsystem.meeting.policy import (
    ChatTarget,
    ControlRefused,
    EventKind,
    JoinRefused,
    JoinRequest,
    Refusal,
    Role,
    UnknownParticipant,
)
from roomsystem.meeting.service import (
    INBOX_SIZE,
    MeetingService,
    ParticipantEvent,
    ParticipantSession,
)
from roomsystem.meeting.state import MeetingState
from roomsystem.room import Room, build_services


class Recorder:
    """Stands in for the media layer's recorder: it only remembers what it was asked."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    async def start(self, meeting_id: str) -> None:
        if self.fail:
            raise OSError("disk full")
        self.calls.append(f"start {meeting_id}")

    async def stop(self) -> None:
        self.calls.append("stop")


class Room4:
    """A running daemon with just the meeting service, and an API client."""

    def __init__(self, daemon: Daemon, client: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.client = client
        service = next(s for s in daemon.room.services if s.name == "meeting")
        assert isinstance(service, MeetingService)
        self.meeting = service

    async def post(self, path: str, body: object = None) -> tuple[int, Any]:
        async with self.client.post(f"/api/v1/meeting/{path}", json=body or {}) as response:
            return response.status, await response.json()

    async def ok(self, path: str, body: object = None) -> dict[str, Any]:
        status, answer = await self.post(path, body)
        assert status == 200, answer
        return answer

    async def state(self) -> dict[str, Any]:
        async with self.client.get("/api/v1/state") as response:
            assert response.status == 200
            return (await response.json())["meeting"]

    def join(
        self, name: str = "Ada", address: str = "10.0.0.1", **extra: str | None
    ) -> ParticipantSession:
        meeting = self.meeting.meeting
        assert meeting is not None
        fields: dict[str, str | None] = {"passcode": meeting.passcode}
        fields.update(extra)
        return self.meeting.join(JoinRequest(meeting.id, name, address, **fields))

    async def admitted(self, name: str = "Ada", address: str = "10.0.0.1") -> ParticipantSession:
        session = self.join(name, address)
        await self.ok("admit", {"participant": session.id})
        assert (await next_event(session)).kind is EventKind.ADMITTED
        return session


async def next_event(session: ParticipantSession) -> ParticipantEvent:
    async with asyncio.timeout(2):
        return await session.next()


def drain(session: ParticipantSession) -> list[EventKind]:
    kinds = []
    while session.pending:
        kinds.append(session._events.popleft().kind)
    return kinds


@pytest.fixture
def recorder() -> Recorder | None:
    return None


@pytest.fixture
def loopback(settings: Settings) -> Settings:
    """The test settings with the meeting site on loopback too."""
    return settings.model_copy(
        update={"web": settings.web.model_copy(update={"listen": "127.0.0.1:0"})}
    )


@pytest.fixture
async def room(loopback: Settings, recorder: Recorder | None) -> AsyncIterator[Room4]:
    def services(settings: Settings, bus: StateBus) -> list[Service]:
        return [MeetingService(settings.meeting, bus, recorder=recorder)]

    daemon = Daemon(loopback, services)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 5)
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as client:
            yield Room4(daemon, client)
    finally:
        await daemon.stop()
        current = asyncio.current_task()
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leftover, f"tasks left running: {leftover}"


# -- starting and ending


async def test_start_returns_the_meeting_with_id_passcode_and_join_link(room: Room4) -> None:
    before = await room.state()
    assert before["in_meeting"] is False
    assert before["policy"]["waiting_room"] is True
    started = await room.ok("start", {"booking_id": "booking-42"})
    assert started["in_meeting"] is True
    assert len(started["id"]) == 10
    assert started["id"].isdigit()
    assert len(started["passcode"]) == 8
    assert started["booking_id"] == "booking-42"
    assert started["join_url"].startswith("https://127.0.0.1:")
    assert f"/join?meeting={started['id']}&token=" in started["join_url"]
    assert started["passcode"] not in started["join_url"]
    assert (started["locked"], started["recording"], started["sharing"]) == (
        False,
        False,
        "host_only",
    )
    assert await room.state() == started
    status, answer = await room.post("start")
    assert status == 409
    assert started["id"] in answer["error"]["message"]


async def test_the_join_link_follows_the_site_address_and_lets_people_in(room: Room4) -> None:
    await room.ok("start")
    room.meeting.set_join_base_url("https://127.0.0.1:8443/join")
    url = (await room.state())["join_url"]
    assert url.startswith("https://127.0.0.1:8443/join?meeting=")
    token = url.rpartition("&token=")[2]
    session = room.join(passcode=None, link_token=token)
    assert session.waiting


async def test_end_tells_everyone_and_a_new_meeting_has_a_new_id(room: Room4) -> None:
    first = (await room.ok("start"))["id"]
    inside = await room.admitted("Ada", "10.0.0.1")
    waiting = room.join("Bob", "10.0.0.2")
    ended = await room.ok("end")
    assert ended["in_meeting"] is False
    assert ended["participants"] == []
    for session in (inside, waiting):
        assert (await next_event(session)).kind is EventKind.ENDED
        with pytest.raises(EOFError):
            await next_event(session)
    with pytest.raises(JoinRefused) as refused:
        room.meeting.join(JoinRequest(first, "Late", "10.0.0.3", passcode="whatever"))
    assert refused.value.reason is Refusal.ENDED
    second = (await room.ok("start"))["id"]
    assert second != first


async def test_commands_without_a_meeting_are_refused(room: Room4) -> None:
    for path, body in [
        ("end", {}),
        ("lock", {"on": True}),
        ("admit", {"all": True}),
        ("mute-all", {}),
        ("chat", {"text": "hello"}),
        ("invite", {"name": "Ada"}),
    ]:
        status, answer = await room.post(path, body)
        assert status == 409, path
        assert answer["error"]["message"] == "no meeting is running"
    with pytest.raises(JoinRefused) as refused:
        room.meeting.join(JoinRequest("1234567890", "Ada", "10.0.0.1", passcode="x"))
    assert refused.value.reason is Refusal.UNKNOWN_MEETING


async def test_guesses_are_counted_across_meetings(room: Room4) -> None:
    for _ in range(5):  # the default limit per address
        with pytest.raises(JoinRefused):
            room.meeting.join(JoinRequest("1234567890", "Eve", "10.6.6.6", passcode="x"))
    await room.ok("start")
    with pytest.raises(JoinRefused) as refused:
        room.join("Eve", "10.6.6.6")  # the right passcode, but too many guesses first
    assert refused.value.reason is Refusal.RATE_LIMITED
    assert refused.value.retry_after_s is not None
    assert refused.value.retry_after_s > 0
    assert room.join("Ada", "10.0.0.1").waiting


# -- the waiting room and host controls


async def test_the_panel_sees_the_waiting_room_and_admits_one_or_all(room: Room4) -> None:
    await room.ok("start")
    ada = room.join("Ada", "10.0.0.1")
    bob = room.join("Bob", "10.0.0.2")
    cy = room.join("Cy", "10.0.0.3")
    state = await room.state()
    assert state["waiting_count"] == 3
    assert [(p["name"], p["waiting"], p["muted"], p["video"]) for p in state["participants"]] == [
        ("Ada", True, True, False),
        ("Bob", True, True, False),
        ("Cy", True, True, False),
    ]
    state = await room.ok("admit", {"participant": ada.id})
    assert [p["waiting"] for p in state["participants"]] == [False, True, True]
    event = await next_event(ada)
    assert event.kind is EventKind.ADMITTED
    assert event.message == "The host let you in."
    assert [entry.name for entry in event.view.roster] == ["Room", "Ada"]
    assert room.meeting.is_admitted(ada.id)
    assert not room.meeting.is_admitted(bob.id)
    state = await room.ok("admit", {"all": True})
    assert state["waiting_count"] == 0
    assert (await next_event(bob)).kind is EventKind.ADMITTED
    assert (await next_event(cy)).kind is EventKind.ADMITTED
    roster = await next_event(ada)  # Ada sees the others come in
    assert roster.kind is EventKind.ROSTER
    assert [entry.name for entry in roster.view.roster] == ["Room", "Ada", "Bob", "Cy"]
    status, answer = await room.post("admit", {"participant": ada.id})
    assert status == 409
    assert "already in the meeting" in answer["error"]["message"]


async def test_a_removed_participant_is_told_and_cannot_rejoin(room: Room4) -> None:
    await room.ok("start")
    troll = await room.admitted("Troll", "10.0.0.66")
    state = await room.ok("remove", {"participant": troll.id})
    assert state["participants"] == []
    event = await next_event(troll)
    assert event.kind is EventKind.REMOVED
    assert not event.view.can_share
    assert troll.closed
    with pytest.raises(JoinRefused) as refused:
        room.join("Troll again", "10.0.0.66")
    assert refused.value.reason is Refusal.REMOVED
    status, _ = await room.post("remove", {"participant": troll.id})
    assert status == 404


async def test_a_locked_meeting_refuses_a_newcomer_with_the_right_passcode(room: Room4) -> None:
    await room.ok("start")
    inside = await room.admitted()
    assert (await room.ok("lock", {"on": True}))["locked"] is True
    with pytest.raises(JoinRefused) as refused:
        room.join("Late", "10.0.0.9")
    assert refused.value.reason is Refusal.LOCKED
    assert room.meeting.view(inside.id).locked
    await room.ok("lock", {"on": False})
    assert room.join("Late", "10.0.0.9").waiting


async def test_mute_ask_to_unmute_stop_video_and_lower_hand(room: Room4) -> None:
    await room.ok("start")
    ada = await room.admitted("Ada", "10.0.0.1")
    bob = await room.admitted("Bob", "10.0.0.2")
    drain(ada)
    room.meeting.set_muted(ada.id, False)
    room.meeting.set_video(ada.id, True)
    room.meeting.raise_hand(ada.id, True)
    assert drain(bob) == [EventKind.ROSTER] * 3  # Bob sees each change of Ada's
    assert drain(ada) == []  # Ada knows what she did herself
    state = await room.state()
    assert (state["participants"][0]["muted"], state["participants"][0]["video"]) == (False, True)
    assert state["participants"][0]["hand"] is True

    await room.ok("mute", {"participant": ada.id})
    event = await next_event(ada)
    assert (event.kind, event.view.muted) == (EventKind.MUTED, True)
    await room.ok("ask-unmute", {"participant": ada.id})
    assert (await next_event(ada)).kind is EventKind.ASK_UNMUTE
    room.meeting.set_muted(ada.id, False)
    status, answer = await room.post("ask-unmute", {"participant": ada.id})
    assert status == 409
    assert answer["error"]["message"] == "Ada is not muted"
    state = await room.ok("stop-video", {"participant": ada.id})
    assert state["participants"][0]["video"] is False
    assert (await next_event(ada)).kind is EventKind.VIDEO_STOPPED
    state = await room.ok("lower-hand", {"participant": ada.id})
    assert state["participants"][0]["hand"] is False
    assert (await next_event(ada)).kind is EventKind.HAND_LOWERED
    room.meeting.set_muted(bob.id, False)
    drain(ada)
    drain(bob)
    state = await room.ok("mute-all")
    assert all(p["muted"] for p in state["participants"])
    assert (await next_event(ada)).kind is EventKind.MUTED
    assert (await next_event(bob)).kind is EventKind.MUTED


async def test_cohosts_and_screen_sharing(room: Room4) -> None:
    await room.ok("start")
    ada = await room.admitted("Ada", "10.0.0.1")
    bob = await room.admitted("Bob", "10.0.0.2")
    waiting = room.join("Wait", "10.0.0.3")
    drain(ada)
    assert not room.meeting.may_share(ada.id)
    state = await room.ok("cohost", {"participant": ada.id, "on": True})
    assert state["participants"][0]["role"] == "co_host"
    assert state["participants"][0]["can_share"] is True
    assert [(await next_event(ada)).kind for _ in range(2)] == [
        EventKind.ROLE_CHANGED,
        EventKind.SHARE_ALLOWED,
    ]
    assert ada.role is Role.CO_HOST
    assert room.meeting.may_share(ada.id)
    room.meeting.admit(waiting.id, actor=ada.id)  # a co-host may admit
    assert (await next_event(waiting)).kind is EventKind.ADMITTED
    with pytest.raises(ControlRefused, match="may not cohost"):
        room.meeting.make_cohost(bob.id, True, actor=ada.id)
    with pytest.raises(ControlRefused, match="may not end"):
        await room.meeting.end(actor=ada.id)
    drain(bob)
    state = await room.ok("sharing", {"allow": True})
    assert state["sharing"] == "everyone"
    assert (await next_event(bob)).kind is EventKind.SHARE_ALLOWED
    assert room.meeting.may_share(bob.id)
    await room.ok("sharing", {"allow": False})
    assert (await next_event(bob)).kind is EventKind.SHARE_DENIED
    assert not room.meeting.may_share(bob.id)
    assert not room.meeting.may_share("p-nobody")


async def test_chat_to_everyone_privately_to_the_host_and_from_the_room(room: Room4) -> None:
    await room.ok("start")
    ada = await room.admitted("Ada", "10.0.0.1")
    bob = await room.admitted("Bob", "10.0.0.2")
    drain(ada)
    room.meeting.chat(ada.id, "hello all")
    event = await next_event(bob)
    assert event.kind is EventKind.CHAT
    assert event.chat is not None
    assert (event.chat.sender_name, event.chat.text, event.chat.to) == (
        "Ada",
        "hello all",
        "everyone",
    )
    room.meeting.chat(bob.id, "can you turn the camera?", ChatTarget.HOST)
    assert ada.pending == 0  # private to the host: Ada does not see it
    state = await room.ok("chat", {"text": "sure", "to": bob.id})
    assert (await next_event(bob)).chat.text == "sure"  # type: ignore[union-attr]
    assert ada.pending == 0
    await room.ok("chat", {"text": "welcome everyone"})
    assert (await next_event(ada)).chat.sender_name == "Room"  # type: ignore[union-attr]
    state = await room.state()
    assert state["chat_count"] == 4
    assert [(c["sender_name"], c["to"], c["text"]) for c in state["chat"]] == [
        ("Ada", "everyone", "hello all"),
        ("Bob", "host", "can you turn the camera?"),
        ("Room", bob.id, "sure"),
        ("Room", "everyone", "welcome everyone"),
    ]
    with pytest.raises(ControlRefused, match="1 to 1000"):
        room.meeting.chat(ada.id, " ")
    status, _ = await room.post("chat", {"text": "hi", "to": "p-nobody"})
    assert status == 404


async def test_leaving_closes_the_inbox_and_tells_the_others(room: Room4) -> None:
    await room.ok("start")
    ada = await room.admitted("Ada", "10.0.0.1")
    bob = await room.admitted("Bob", "10.0.0.2")
    drain(ada)
    room.meeting.leave(bob.id)
    kinds = [event.kind async for event in bob]
    assert kinds == [EventKind.LEFT]
    roster = await next_event(ada)
    assert roster.kind is EventKind.ROSTER
    assert [entry.name for entry in roster.view.roster] == ["Room", "Ada"]
    room.meeting.leave(bob.id)  # again: nothing happens
    assert room.meeting.session(bob.id) is None
    with pytest.raises(UnknownParticipant):
        room.meeting.view(bob.id)
    with pytest.raises(UnknownParticipant):
        room.meeting.set_muted(bob.id, True)


async def test_an_inbox_that_is_not_read_keeps_only_the_newest_events(room: Room4) -> None:
    await room.ok("start")
    ada = await room.admitted("Ada", "10.0.0.1")
    bob = await room.admitted("Bob", "10.0.0.2")
    drain(ada)
    for index in range(INBOX_SIZE + 10):
        room.meeting.chat(bob.id, f"message {index}")
    assert ada.pending == INBOX_SIZE
    assert ada.dropped == 10
    assert (await next_event(ada)).chat.text == "message 10"  # type: ignore[union-attr]


async def test_invitations_through_the_api(room: Room4) -> None:
    await room.ok("start", {"authenticated_only": True})
    assert (await room.state())["authenticated_only"] is True
    with pytest.raises(JoinRefused) as refused:
        room.join()
    assert refused.value.reason is Refusal.INVITE_REQUIRED
    async with room.client.post("/api/v1/meeting/invite", json={"name": "Prof. Ng"}) as response:
        assert response.status == 200
        invitation = await response.json()
    assert f"&invite={invitation['token']}" in invitation["join_url"]
    session = room.join("Anyone", passcode=None, invite=invitation["token"])
    assert room.meeting.view(session.id).name == "Prof. Ng"
    async with room.client.post(
        "/api/v1/meeting/invite", json={"name": "Alt", "alternative_host": True}
    ) as response:
        alternative = await response.json()
    host = room.join("Alt", "10.0.0.7", passcode=None, invite=alternative["token"])
    assert host.role is Role.ALTERNATIVE_HOST
    assert not host.waiting


# -- recording


async def test_recording_needs_a_recorder(room: Room4) -> None:
    await room.ok("start")
    status, answer = await room.post("recording", {"on": True})
    assert status == 409
    assert answer["error"]["message"] == "this room has no recorder"


@pytest.mark.parametrize("recorder", [Recorder()])
async def test_recording_is_shown_to_everyone_and_stops_with_the_meeting(
    room: Room4, recorder: Recorder
) -> None:
    meeting_id = (await room.ok("start"))["id"]
    ada = await room.admitted()
    state = await room.ok("recording", {"on": True})
    assert state["recording"] is True
    assert recorder.calls == [f"start {meeting_id}"]
    event = await next_event(ada)
    assert event.kind is EventKind.RECORDING_STARTED
    assert event.view.recording
    late = await room.admitted("Late", "10.0.0.2")
    assert (await next_event(late)).kind is EventKind.RECORDING_STARTED
    assert drain(ada) == [EventKind.ROSTER]
    assert (await room.ok("recording", {"on": False}))["recording"] is False
    assert (await next_event(ada)).kind is EventKind.RECORDING_STOPPED
    await room.ok("recording", {"on": True})
    await room.ok("end")
    assert recorder.calls == [f"start {meeting_id}", "stop", f"start {meeting_id}", "stop"]


@pytest.mark.parametrize("recorder", [Recorder(fail=True)])
async def test_a_recorder_that_fails_leaves_the_flag_off(room: Room4, recorder: Recorder) -> None:
    await room.ok("start")
    status, answer = await room.post("recording", {"on": True})
    assert status == 409
    assert answer["error"]["message"] == "recording could not start: disk full"
    assert (await room.state())["recording"] is False


# -- bad input


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("admit", {}),
        ("admit", {"participant": "p-1", "all": True}),
        ("admit", {"all": False}),
        ("remove", {}),
        ("remove", {"participant": ""}),
        ("lock", {"on": "yes"}),
        ("mute", {"participant": 7}),
        ("cohost", {"participant": "p-1"}),
        ("sharing", {"allow": 1}),
        ("chat", {"text": ""}),
        ("chat", {"text": "x" * 1001}),
        ("start", {"booking_id": ""}),
        ("start", {"surprise": True}),
        ("recording", {}),
    ],
)
async def test_bad_arguments_are_named(room: Room4, path: str, body: dict[str, object]) -> None:
    await room.ok("start") if path != "start" else None
    status, answer = await room.post(path, body)
    assert status == 422
    assert answer["error"]["problems"]


@pytest.mark.parametrize("path", ["remove", "mute", "ask-unmute", "stop-video", "lower-hand"])
async def test_an_unknown_participant_is_not_found(room: Room4, path: str) -> None:
    await room.ok("start")
    status, answer = await room.post(path, {"participant": "p-00000000"})
    assert status == 404
    assert answer["error"]["message"] == "no participant 'p-00000000' in the meeting"


MEETING_COMMANDS = [
    "start", "end", "admit", "remove", "lock", "mute", "mute-all", "ask-unmute", "stop-video",
    "lower-hand", "cohost", "sharing", "chat", "recording", "invite",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
bodies = st.dictionaries(
    st.sampled_from(["participant", "all", "on", "allow", "text", "to", "booking_id", "name", "x"]),
    json_values | st.just("p-00000000"),
    max_size=3,
)


async def test_no_meeting_command_body_gets_a_server_error(room: Room4) -> None:
    """Random bodies at every meeting command, with and without a meeting and people in it."""
    loop = asyncio.get_running_loop()
    await room.ok("start")
    room.join("Ada", "10.0.0.1")

    async def call(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await room.post(path, body)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(path=st.sampled_from(MEETING_COMMANDS), body=bodies)
    def fuzz(path: str, body: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(call(path, body), loop)
        status, answer = future.result(timeout=10)
        assert status in {200, 404, 409, 422}, (path, body, status, answer)
        if status != 200:
            assert answer["error"]["message"]
        json.dumps(answer)

    await asyncio.to_thread(fuzz)
    assert room.daemon.room.lifecycle.services[0].state == "running"


# -- the room


async def test_participants_see_when_the_room_mutes_its_microphone(loopback: Settings) -> None:
    def services(settings: Settings, bus: StateBus) -> list[Service]:
        devices = settings.devices.model_copy(update={"discover_usb": False, "discover_cec": False})
        return [
            DevicesService(devices, settings.lifecycle, bus),
            MeetingService(settings.meeting, bus),
        ]

    daemon = Daemon(loopback, services)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 5)
        headers = {"Authorization": f"Bearer {daemon.room.api_token}"}
        async with aiohttp.ClientSession(daemon.url, headers=headers) as client:
            room = Room4(daemon, client)
            await room.ok("start")
            ada = await room.admitted()
            async with client.post("/api/v1/devices/audio/mute", json={"on": True}) as response:
                assert response.status == 200
            event = await next_event(ada)
            assert event.kind is EventKind.ROSTER
            assert event.view.roster[0].id == "room"
            assert event.view.roster[0].muted is True
            async with client.post("/api/v1/devices/audio/mute", json={"on": False}) as response:
                assert response.status == 200
            assert (await next_event(ada)).view.roster[0].muted is False
    finally:
        await daemon.stop()


async def test_the_snapshot_is_the_room_s_meeting_topic(room: Room4) -> None:
    started = await room.ok("start")
    bus_state = room.daemon.room.bus.get("meeting")
    assert isinstance(bus_state, MeetingState)
    assert bus_state.model_dump(mode="json") == started


async def test_stopping_the_room_ends_the_meeting_for_everyone(loopback: Settings) -> None:
    def services(settings: Settings, bus: StateBus) -> list[Service]:
        return [MeetingService(settings.meeting, bus)]

    daemon = Daemon(loopback, services)
    await daemon.start()
    service = daemon.room.services[0]
    assert isinstance(service, MeetingService)
    meeting = service.start()
    session = service.join(JoinRequest(meeting.id, "Ada", "10.0.0.1", passcode=meeting.passcode))
    await daemon.stop()
    assert [event.kind async for event in session] == [EventKind.ENDED]


def test_the_room_runs_a_meeting_service(tmp_path: Path) -> None:
    settings = Settings().model_copy(update={"state_dir": tmp_path})
    room = Room(settings, build_services)
    assert "meeting" in [service.name for service in room.services]
