"""Signalling: the message parser under fuzzing, and bad peers that must disturb nobody else.

The socket tests run the real daemon and HTTPS site; a well-behaved participant is an aiortc
peer on loopback that keeps counting the room's video frames while others misbehave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomsystem.bus import StateBus
from roomsystem.config import Settings, parse_settings
from roomsystem.daemon import Daemon
from roomsystem.errors import ConfigError
from roomsystem.lifecycle import Service
from roomsystem.media.ice import host_addresses, rtc_configuration
from roomsystem.meeting.peers import ParticipantPeer, PeerError, SyntheticMedia
from roomsystem.meeting.service import MeetingService
from roomsystem.meeting.signalling import (
    MAX_MESSAGE_BYTES,
    Answer,
    BadMessage,
    Chat,
    Join,
    parse_client_message,
)
from roomsystem.meeting.site import SOCKET_MAX_BYTES, WebSite
from roomsystem.meeting.tls import CertificateFiles, ensure_self_signed, server_context
from roomsystem.sharing.service import SharingService
from roomsystem.statedir import StateDir

from .conftest import Api, until

# -- the parser

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["join", "answer", "media", "chat", "hand", "share", "leave", "x"])},
    optional={
        "meeting_id": json_values,
        "name": json_values,
        "passcode": json_values,
        "token": json_values,
        "sdp": json_values,
        "mic": json_values,
        "camera": json_values,
        "text": json_values,
        "to": json_values,
        "up": json_values,
        "on": json_values,
        "extra": json_values,
    },
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), json_values.map(json.dumps)))
def test_any_text_parses_or_is_a_bad_message(raw: str | bytes) -> None:
    try:
        parse_client_message(raw)
    except BadMessage as exc:
        assert str(exc)


@settings(max_examples=500, deadline=None)
@given(message_like)
def test_message_shaped_input_parses_or_says_which_field_is_wrong(data: dict[str, Any]) -> None:
    try:
        message = parse_client_message(json.dumps(data))
    except BadMessage as exc:
        assert str(exc).startswith("invalid message: ")
    else:
        assert message.type == data["type"]
        assert set(data) <= set(type(message).model_fields)


def test_valid_messages_parse_into_their_models() -> None:
    join = parse_client_message(
        '{"type": "join", "meeting_id": "123 456 789", "name": "Ada", "passcode": "x1"}'
    )
    assert join == Join(type="join", meeting_id="123 456 789", name="Ada", passcode="x1")
    chat = parse_client_message(b'{"type": "chat", "text": "hi", "to": "host"}')
    assert chat == Chat(type="chat", text="hi", to="host")
    assert isinstance(parse_client_message('{"type": "answer", "sdp": "v=0\\r\\n"}'), Answer)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("{", "message is not valid JSON"),
        ("[1]", "message must be a JSON object with a 'type'"),
        ('{"type": "dance"}', "does not match any of the expected tags"),
        ('{"type": "hand", "up": "yes"}', "hand.up: Input should be a valid boolean"),
        (
            '{"type": "hand", "up": true, "down": false}',
            "hand.down: Extra inputs are not permitted",
        ),
        (
            '{"type": "answer", "sdp": "hello"}',
            "answer.sdp: Value error, an SDP description starts with 'v=0'",
        ),
        (
            '{"type": "join", "meeting_id": "12; DROP", "name": "a"}',
            "join.meeting_id: String should match pattern",
        ),
        ("x" * (MAX_MESSAGE_BYTES + 1), f"message too large: {MAX_MESSAGE_BYTES + 1} bytes"),
    ],
)
def test_bad_messages_say_what_is_wrong(raw: str, said: str) -> None:
    with pytest.raises(BadMessage) as caught:
        parse_client_message(raw)
    assert said in str(caught.value)


# -- bad peers on a live room


class Participant:
    """A signalling client; with ``answer=True`` an aiortc peer that answers the room's offer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pc: RTCPeerConnection | None = None
        self.room_video_frames = 0
        self._readers: list[asyncio.Task[None]] = []

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        elif isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_json(message)

    async def receive(self, kind: str) -> dict[str, Any]:
        """The next message of type ``kind``, skipping events and the like."""
        async with asyncio.timeout(10):
            while True:
                received = await self.ws.receive()
                assert received.type is aiohttp.WSMsgType.TEXT, received
                message: dict[str, Any] = json.loads(received.data)
                if message["type"] == kind:
                    return message

    async def answer(self, offer: dict[str, Any]) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.pc.on("track", self._on_track)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.send({"type": "answer", "sdp": self.pc.localDescription.sdp})

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None
        if track.kind == "video" and self.pc.getTransceivers()[1].receiver.track is track:
            self._readers.append(asyncio.create_task(self._count(track)))

    async def _count(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.room_video_frames += 1

    async def frames_grow(self, by: int) -> None:
        start = self.room_video_frames
        await until(lambda: self.room_video_frames >= start + by, f"{by} more room frames")

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.ws.close()


@pytest.fixture
async def connect(site: WebSite) -> AsyncIterator[Any]:
    context = ssl.create_default_context(cafile=str(site.certificate().cert))
    opened: list[Participant] = []
    async with aiohttp.ClientSession() as session:

        async def open_socket() -> Participant:
            ws = await session.ws_connect(f"{site.url}/ws", ssl=context, max_msg_size=0)
            participant = Participant(ws)
            opened.append(participant)
            return participant

        yield open_socket
        for participant in opened:
            await participant.close()


async def joined(connect: Any, api: Api, meeting: dict[str, Any], name: str) -> Participant:
    participant: Participant = await connect()
    await participant.send(
        {"type": "join", "meeting_id": meeting["id"], "name": name, "passcode": meeting["passcode"]}
    )
    pid = (await participant.receive("joined"))["participant_id"]
    await api.command("meeting/admit", participant=pid)
    return participant


async def test_the_certificate_is_self_signed_for_loopback_and_verifies(
    site: WebSite, connect: Any
) -> None:
    files = site.certificate()
    assert files.self_signed
    assert files.key.stat().st_mode & 0o777 == 0o600
    participant = await connect()  # verified against the certificate, host name included
    await participant.send({"type": "leave"})
    error = await participant.receive("error")
    assert (error["code"], error["message"]) == ("bad_message", "join the meeting first")


async def test_bad_messages_get_an_error_and_disturb_nobody(
    site: WebSite, api: Api, connect: Any
) -> None:
    meeting = await api.command("meeting/start")
    good = await joined(connect, api, meeting, "Good")
    await good.answer(await good.receive("offer"))
    await good.frames_grow(by=10)

    bad = await joined(connect, api, meeting, "Bad")
    await bad.receive("offer")
    bad_input: list[tuple[str | bytes, str]] = [
        ("not json", "message is not valid JSON"),
        (b"\x00\x01", "send JSON text messages"),
        ('{"type": "answer", "sdp": "v=0\\r\\nm=garbage"}', "the answer was refused"),
        ('{"type": "share", "on": true}', "The host has not allowed you to share your screen."),
        ("x" * (MAX_MESSAGE_BYTES + 10), "message too large"),
        ('{"type": "join", "meeting_id": "1", "name": "again"}', "already joined"),
    ]
    for raw, said in bad_input:
        await bad.send(raw)
        error = await bad.receive("error")
        assert said in error["message"], error
        assert not error["fatal"]
    assert len((await api.meeting())["participants"]) == 2
    await good.frames_grow(by=10)

    # Larger than the socket takes at all: the socket is closed (1009), the participant leaves.
    await bad.send("x" * (SOCKET_MAX_BYTES + 1))
    closing = await bad.ws.receive()
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await until(lambda: len(site.hub.peers) == 1, "the closed peer is gone")
    assert [p["name"] for p in (await api.meeting())["participants"]] == ["Good"]
    await good.frames_grow(by=10)


async def test_a_peer_that_vanishes_mid_negotiation_is_cleaned_up(
    site: WebSite, api: Api, connect: Any
) -> None:
    meeting = await api.command("meeting/start")
    good = await joined(connect, api, meeting, "Good")
    await good.answer(await good.receive("offer"))
    await good.frames_grow(by=5)

    for name in ("Gone before the offer", "Gone after the offer"):
        vanishing = await joined(connect, api, meeting, name)
        if name.endswith("after the offer"):
            await vanishing.receive("offer")
        await vanishing.ws.close()

        async def only_good_left() -> bool:
            return len(site.hub.peers) <= 1 and len((await api.meeting())["participants"]) == 1

        await until(only_good_left, f"{name} is gone")
    await good.frames_grow(by=10)
    assert list(site.hub.peers) == [p["id"] for p in (await api.meeting())["participants"]]


async def test_a_refused_join_is_a_fatal_error_and_the_socket_closes(
    api: Api, connect: Any
) -> None:
    meeting = await api.command("meeting/start")
    participant = await connect()
    await participant.send(
        {"type": "join", "meeting_id": meeting["id"], "name": "X", "passcode": "nope"}
    )
    error = await participant.receive("error")
    assert error == {
        "type": "error",
        "code": "wrong_passcode",
        "message": "The passcode or link is not right.",
        "fatal": True,
        "retry_after_s": None,
    }
    assert (await participant.ws.receive()).type is aiohttp.WSMsgType.CLOSE


async def test_another_sites_page_may_not_open_the_signalling_socket(site: WebSite) -> None:
    context = ssl.create_default_context(cafile=str(site.certificate().cert))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                f"{site.url}/ws", ssl=context, headers={"Origin": "https://evil.example"}
            )
        assert refused.value.status == 403
        async with session.get(f"{site.url}/join", ssl=context) as page:
            assert page.status == 200
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            assert page.headers["Referrer-Policy"] == "no-referrer"


async def test_malformed_answers_are_refused_as_peer_errors() -> None:
    """Truncated and scrambled answers: each is a clear PeerError or a working answer."""
    media = SyntheticMedia(size="160x90", rate=5)
    with host_addresses(["127.0.0.1"]):
        browser = RTCPeerConnection(rtc_configuration())
        first = ParticipantPeer("p-1", "First", rtc_configuration(), media.room_tracks("p-1"))
        await browser.setRemoteDescription(RTCSessionDescription(await first.offer(), "offer"))
        await browser.setLocalDescription(await browser.createAnswer())
        answer = browser.localDescription.sdp
        lines = answer.splitlines(keepends=True)
        variants = [answer[:cut] for cut in range(3, len(answer), len(answer) // 12)]
        variants += ["".join(lines[:i] + lines[i + 1 :]) for i in range(1, len(lines), 7)]
        variants += [
            answer.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-256 zz"),
            "v=0\r\n",
        ]
        outcomes = []
        try:
            for variant in variants:
                peer = ParticipantPeer(
                    "p-2", "Second", rtc_configuration(), media.room_tracks("p-2")
                )
                await peer.offer()
                try:
                    await peer.accept_answer(variant)
                    outcomes.append("accepted")
                except PeerError as exc:
                    assert str(exc).startswith("the answer was refused: ")
                    outcomes.append("refused")
                finally:
                    await peer.close()
        finally:
            await first.close()
            await browser.close()
            await media.close()
    # Most cuts and deletions break the answer; some only drop lines aiortc does not need.
    assert outcomes[0] == outcomes[-1] == "refused"
    assert outcomes.count("refused") >= 10


async def test_the_site_serves_the_share_page_and_tells_sharing_its_port(
    meeting_settings: Settings,
) -> None:
    sharing_settings = meeting_settings.sharing.model_copy(
        update={"mdns_interfaces": ("127.0.0.1",)}
    )

    def services(settings: Settings, bus: StateBus) -> list[Service]:
        sharing = SharingService(
            sharing_settings, settings.room, bus, addresses=lambda: ["127.0.0.1"]
        )
        return [MeetingService(settings.meeting, bus), sharing]

    daemon = Daemon(meeting_settings, services)
    await daemon.start()
    try:
        assert daemon.web is not None
        sharing = daemon.room.services[1]
        assert isinstance(sharing, SharingService)
        assert sharing.web_port == int(daemon.web.url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(daemon.web.certificate().cert))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{daemon.web.url}/share", ssl=context) as page,
        ):
            assert page.status == 200
            assert "/share/share.js" in await page.text()
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    finally:
        await daemon.stop()


async def test_a_busy_port_leaves_the_room_running_without_the_site(
    meeting_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        web = meeting_settings.web.model_copy(update={"listen": f"127.0.0.1:{port}"})
        daemon = Daemon(
            meeting_settings.model_copy(update={"web": web}),
            lambda settings, bus: [MeetingService(settings.meeting, bus)],
        )
        await daemon.start()
        try:
            assert daemon.web is None
            assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{daemon.url}/api/v1/health") as health:
                    assert health.status == 200
        finally:
            await daemon.stop()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(st.one_of(message_like.map(json.dumps), st.text(max_size=50)), max_size=5))
async def test_a_joined_socket_survives_any_messages(
    api: Api, connect: Any, messages: list[str]
) -> None:
    """Whatever a participant sends, it gets answers, stays in the meeting, and can leave."""
    meeting = await api.meeting()
    if not meeting["in_meeting"]:
        meeting = await api.command("meeting/start")
    participant: Participant = await connect()
    await participant.send(
        {
            "type": "join",
            "meeting_id": meeting["id"],
            "name": "Fuzz",
            "passcode": meeting["passcode"],
        }
    )
    pid = (await participant.receive("joined"))["participant_id"]
    for message in messages:
        if '"leave"' in message or '"join"' in message:
            continue  # leaving ends the session on purpose; a second join is tested above
        await participant.send(message)
    await participant.send({"type": "leave"})
    await participant.receive("event")
    assert (await participant.ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert pid not in [p["id"] for p in (await api.meeting())["participants"]]


# -- the certificate


def test_the_self_signed_certificate_is_kept_and_made_again_for_new_names(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path)
    first = ensure_self_signed(state_dir, ["localhost", "127.0.0.1"])
    kept = first.cert.read_bytes()
    assert ensure_self_signed(state_dir, ["127.0.0.1", "localhost"]).cert.read_bytes() == kept
    ensure_self_signed(state_dir, ["localhost", "127.0.0.1", "room-4.example"])
    assert first.cert.read_bytes() != kept
    first.key.write_text("not a key")
    remade = ensure_self_signed(state_dir, ["localhost"])
    server_context(remade)  # loads: the broken key was replaced


def test_a_configured_certificate_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("nonsense")
    files = CertificateFiles(tmp_path / "cert.pem", tmp_path / "key.pem", self_signed=False)
    with pytest.raises(ConfigError, match=r"web.tls_cert / web.tls_key .*cert.pem.*cannot load"):
        server_context(files)
    with pytest.raises(ConfigError, match="give both tls_cert and tls_key, or neither"):
        parse_settings('[web]\ntls_cert = "/etc/cert.pem"\n')
