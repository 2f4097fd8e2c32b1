"""The share endpoint with real aiortc senders on loopback: takeover, confirmation, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsystem.commands import NoArguments
from roomsystem.sharing.endpoint import BadOffer, ShareOffer, check_offer_sdp, parse_offer
from roomsystem.sharing.service import Refusal, ShareRefused, _ConfirmArgs
from tests.sharing.conftest import ShareRoom, client_ssl, eventually, loopback_settings


@dataclass
class Sender:
    pc: RTCPeerConnection
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@contextlib.asynccontextmanager
async def http(room: ShareRoom) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(room.cafile))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def offer_sdp(pc: RTCPeerConnection) -> str:
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


@contextlib.asynccontextmanager
async def sender(room: ShareRoom, name: str, key: str) -> AsyncIterator[Sender]:
    """A laptop sharing aiortc's synthetic video to the room, closed on exit."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        body = {"name": name, "key": key, "sdp": await offer_sdp(pc), "type": "offer"}
        async with http(room) as session, session.post(room.url + "/offer", json=body) as reply:
            data = await reply.json()
            result = Sender(pc, reply.status, data, dict(reply.headers))
        if reply.status == 201:
            await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        yield result
    finally:
        await pc.close()


def sharing_now(room: ShareRoom) -> str | None:
    return room.display.session_id if room.display.frames else None


@pytest.mark.timeout(40)
async def test_a_second_sharer_takes_over(share_room: ShareRoom) -> None:
    key = share_room.state.key
    async with sender(share_room, "Ada", key) as ada:
        assert ada.status == 201, ada.body
        await eventually(lambda: share_room.display.frames >= 3, 15, "Ada's frames")
        async with sender(share_room, "Bob", key) as bob:
            assert bob.status == 201, bob.body
            assert share_room.state.sharer == "Bob"
            assert share_room.display.session_id == bob.body["session"]
            await eventually(lambda: share_room.display.frames >= 3, 15, "Bob's frames")
            await eventually(
                lambda: ada.pc.connectionState in ("closed", "failed"), 15, "Ada disconnected"
            )
            assert share_room.state.sharer == "Bob"
            assert share_room.state.key != key, "the key rotated when Ada's share ended"


@pytest.mark.timeout(40)
@pytest.mark.parametrize("sharing_settings", [loopback_settings(takeover="confirm")])
async def test_with_confirmation_the_panel_decides_a_takeover(share_room: ShareRoom) -> None:
    key = share_room.state.key
    confirm = share_room.service.commands()[1]
    async with sender(share_room, "Ada", key) as ada:
        assert ada.status == 201
        # Declined: Ada keeps the display.
        async with asyncio.TaskGroup() as tasks:
            bob = tasks.create_task(share_room.service.begin_share("Bob", "127.0.0.2", key))
            await eventually(lambda: share_room.state.pending_sharer == "Bob", 5, "asking")
            await confirm.handler(_ConfirmArgs(accept=False))
        refused = bob.result()
        assert isinstance(refused, ShareRefused)
        assert refused.reason is Refusal.BUSY
        assert refused.http_status == 409
        assert share_room.state.sharer == "Ada"
        assert share_room.state.pending_sharer is None
        # Accepted: Carol takes over.
        async with asyncio.TaskGroup() as tasks:
            carol = tasks.create_task(share_room.service.begin_share("Carol", "127.0.0.3", key))
            await eventually(lambda: share_room.state.pending_sharer == "Carol", 5, "asking")
            await confirm.handler(_ConfirmArgs(accept=True))
        assert not isinstance(carol.result(), ShareRefused)
        assert share_room.state.sharer == "Carol"


@pytest.mark.timeout(30)
async def test_stop_from_the_panel_frees_the_display(share_room: ShareRoom) -> None:
    async with sender(share_room, "Ada", share_room.state.key) as ada:
        assert ada.status == 201
        await eventually(lambda: share_room.display.frames >= 1, 15, "frames")
        result = await share_room.service.commands()[0].handler(NoArguments())
        assert result.model_dump() == {"stopped": True, "sharer": "Ada"}
        assert share_room.display.session_id is None
        assert not share_room.state.active
        await eventually(lambda: ada.pc.connectionState in ("closed", "failed"), 15, "closed")
    again = await share_room.service.commands()[0].handler(NoArguments())
    assert again.model_dump() == {"stopped": False, "sharer": None}


@pytest.mark.timeout(30)
async def test_the_sender_can_end_its_share_with_its_token(share_room: ShareRoom) -> None:
    async with sender(share_room, "Ada", share_room.state.key) as ada:
        token = ada.body["token"]
        async with http(share_room) as session:
            async with session.delete(f"{share_room.url}/session/not-{token}") as reply:
                assert reply.status == 404
            assert share_room.state.active
            async with session.delete(f"{share_room.url}/session/{token}") as reply:
                assert reply.status == 204
        assert not share_room.state.active


@pytest.mark.timeout(30)
async def test_wrong_keys_are_refused_then_locked_out_with_retry_after(
    share_room: ShareRoom,
) -> None:
    right = share_room.state.key
    wrong = "ZZZZZZ" if right != "ZZZZZZ" else "YYYYYY"
    for _ in range(share_room.service.settings.free_attempts):
        async with sender(share_room, "Mallory", wrong) as attempt:
            assert attempt.status == 403
            assert attempt.body["error"] == "wrong_key"
    async with sender(share_room, "Mallory", wrong) as attempt:
        assert attempt.status == 403
        assert attempt.body.get("retry_after_s") == 30
    async with sender(share_room, "Mallory", right) as attempt:
        assert attempt.status == 429
        assert attempt.body["error"] == "locked_out"
        assert 0 < int(attempt.headers["Retry-After"]) <= 30
    assert share_room.display.frames == 0
    assert not share_room.state.active


MALFORMED: list[tuple[str, bytes]] = [
    ("not json", b"{offer"),
    ("empty", b""),
    ("a list", b"[]"),
    ("no sdp", json.dumps({"name": "A", "key": "K", "type": "offer"}).encode()),
    ("answer", json.dumps({"name": "A", "key": "K", "sdp": "v=0", "type": "answer"}).encode()),
    ("extra", json.dumps({"name": "A", "key": "K", "sdp": "v", "type": "offer", "x": 1}).encode()),
    (
        "garbage sdp",
        json.dumps({"name": "A", "key": "K", "sdp": "v=0\r\nm=x", "type": "offer"}).encode(),
    ),
    ("long name", json.dumps({"name": "A" * 65, "key": "K", "sdp": "v", "type": "offer"}).encode()),
    ("huge", b'{"sdp": "' + b"a" * 200_000 + b'"}'),
]


@pytest.mark.timeout(30)
async def test_malformed_offers_are_refused_cleanly(share_room: ShareRoom) -> None:
    async with http(share_room) as session:
        for what, body in MALFORMED:
            async with session.post(share_room.url + "/offer", data=body) as reply:
                data = await reply.json()
                assert reply.status == 400, what
                assert data["error"] == "bad_offer", what
                assert data["message"], what
        # An offer that sends no video, with the right key, does not start a share either.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"name": "A", "key": share_room.state.key, "sdp": pc.localDescription.sdp}
        async with session.post(share_room.url + "/offer", json={**offer, "type": "offer"}) as r:
            assert r.status == 400
            assert "sends no video" in (await r.json())["message"]
        await pc.close()
    assert not share_room.state.active
    assert share_room.display.frames == 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_sdp_text_is_accepted_or_refused_with_bad_offer(sdp: str) -> None:
    with contextlib.suppress(BadOffer):
        check_offer_sdp(sdp)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(SDP_LINES := [
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 0.0.0.0", "a=sendonly", "a=recvonly", "a=ice-ufrag:abcd", "a=ice-pwd:x" * 3,
    "a=rtpmap:96 VP8/90000", "a=fingerprint:sha-256 AA:BB", "a=setup:actpass", "m=audio 9 x 0",
    "a=mid:0", "a=rtcp-mux", "b=AS:x", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
]), max_size=25))  # fmt: skip
def test_sdp_made_of_real_lines_in_any_order_is_handled(lines: list[str]) -> None:
    with contextlib.suppress(BadOffer):
        check_offer_sdp("\r\n".join(lines) + "\r\n")


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.dictionaries(
        st.sampled_from(["name", "key", "sdp", "type", "extra"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        max_size=5,
    ).map(lambda d: json.dumps(d).encode())
)
def test_any_request_body_is_an_offer_or_a_bad_offer(body: bytes) -> None:
    try:
        offer = parse_offer(body)
    except BadOffer as exc:
        assert str(exc)
    else:
        assert isinstance(offer, ShareOffer)
