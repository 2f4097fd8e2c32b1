"""Pairing a panel against a real running room: the code, the token, revocation, restarts."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from roomsystem import cli
from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.lifecycle import Service
from roomsystem.pairing.codes import FREE_WRONG_CODES, LOCKOUT_INITIAL_S, PairingDesk
from roomsystem.pairing.state import PairingState
from roomsystem.sharing.discover import browse
from roomsystem.sharing.service import SharingService
from roomsystem.statedir import PANELS_FILE
from tests.conftest import only

LOOPBACK = "127.0.0.1"


def pairing(daemon: Daemon) -> PairingState:
    state = daemon.room.bus.get("pairing")
    assert isinstance(state, PairingState)
    return state


async def until_pairing(
    daemon: Daemon, predicate: Callable[[PairingState], bool], timeout: float = 5
) -> PairingState:
    async with asyncio.timeout(timeout):
        with daemon.room.bus.subscribe() as subscription:
            while not predicate(pairing(daemon)):
                await subscription.next()
    return pairing(daemon)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def post(
    session: aiohttp.ClientSession, path: str, body: Any, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(f"/api/v1/{path}", json=body, headers=headers) as response:
        return response.status, await response.json()


async def get(
    session: aiohttp.ClientSession, path: str, token: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(f"/api/v1/{path}", headers=headers) as response:
        return response.status, await response.json()


@pytest.fixture
async def anonymous(daemon: Daemon) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(daemon.url) as session:
        yield session


async def pair(
    session: aiohttp.ClientSession, daemon: Daemon, name: str = "Lobby panel"
) -> dict[str, Any]:
    status, ticket = await post(session, "pairing/request", {"name": name})
    assert status == 200, ticket
    code = pairing(daemon).code
    assert code is not None
    status, granted = await post(
        session, "pairing/complete", {"request_id": ticket["request_id"], "code": code}
    )
    assert status == 200, granted
    return granted


async def test_a_panel_pairs_with_the_code_from_the_display_and_is_revoked_for_good(
    settings: Settings,
) -> None:
    first = Daemon(settings, only())
    await first.start()
    main = first.room.api_token
    try:
        async with aiohttp.ClientSession(first.url) as session:
            status, ticket = await post(session, "pairing/request", {"name": "Lobby  panel"})
            assert status == 200, ticket
            assert ticket["panel_name"] == "Lobby panel"
            assert (ticket["code_digits"], ticket["attempts"]) == (6, 3)
            assert "code" not in ticket

            # The code is in the snapshot the display follows, for the main token.
            status, state = await get(session, "state", main)
            shown = state["pairing"]
            assert shown["pending"] is True
            assert shown["panel_name"] == "Lobby panel"
            assert shown["address"] == LOOPBACK
            code = shown["code"]
            assert isinstance(code, str)
            assert len(code) == 6
            assert code.isdigit()

            request_id = ticket["request_id"]
            status, refused = await post(
                session, "pairing/complete", {"request_id": request_id, "code": wrong(code)}
            )
            assert status == 403
            assert refused["error"]["attempts_left"] == 2
            assert "wrong pairing code" in refused["error"]["message"]
            assert pairing(first).attempts_left == 2

            status, granted = await post(
                session, "pairing/complete", {"request_id": request_id, "code": code}
            )
            assert status == 200, granted
            token = granted["token"]
            panel = granted["panel"]
            assert panel["name"] == "Lobby panel"
            assert token != main
            assert pairing(first) == PairingState()
            # Used once: the same code again finds no request.
            status, _ = await post(
                session, "pairing/complete", {"request_id": request_id, "code": code}
            )
            assert status == 404

            await a_panel_token_opens_the_room_but_not_panel_management(session, first, token)
            await the_panel_list_shows_no_tokens(session, main, panel["id"], token)
            await revoking_closes_the_stream_and_refuses_the_token(session, main, token)
            kept = (settings.state_dir / PANELS_FILE).read_text()
            assert token not in kept
            assert stat.S_IMODE((settings.state_dir / PANELS_FILE).stat().st_mode) == 0o600
    finally:
        await first.stop()

    second = Daemon(settings, only())
    await second.start()
    try:
        async with aiohttp.ClientSession(second.url) as session:
            assert (await get(session, "state", token))[0] == 401
            assert (await get(session, "panels", main)) == (200, {"panels": []})
    finally:
        await second.stop()


async def a_panel_token_opens_the_room_but_not_panel_management(
    session: aiohttp.ClientSession, daemon: Daemon, token: str
) -> None:
    status, state = await get(session, "state", token)
    assert status == 200
    assert state["room"]["name"] == daemon.settings.room.name
    # A room command reaches its handler (404: no such service), so the token was taken.
    status, body = await post(session, "services/retry", {"service": "nothing"}, token)
    assert (status, body["error"]["message"].startswith("no service")) == (404, True)
    for method, path in [
        ("GET", "panels"),
        ("POST", "panels/revoke"),
        ("POST", "pairing/cancel"),
    ]:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.request(method, f"/api/v1/{path}", json={}, headers=headers) as answer:
            assert answer.status == 403, path
            assert "main token" in (await answer.json())["error"]["message"]

    # Another panel asks to pair: the display sees the code, a paired panel does not.
    async with aiohttp.ClientSession(
        daemon.url, connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    ) as other:
        status, _ = await post(other, "pairing/request", {"name": "Stranger"})
        assert status == 200
    status, state = await get(session, "state", token)
    assert state["pairing"]["pending"] is True
    assert state["pairing"]["code"] is None
    status, state = await get(session, "state", daemon.room.api_token)
    assert state["pairing"]["code"] == pairing(daemon).code
    status, body = await post(session, "pairing/cancel", {}, daemon.room.api_token)
    assert (status, body) == (200, {"cancelled": True, "panel_name": "Stranger"})


async def the_panel_list_shows_no_tokens(
    session: aiohttp.ClientSession, main: str, panel_id: str, token: str
) -> None:
    async with session.ws_connect(f"/api/v1/events?access_token={token}") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        status, listed = await get(session, "panels", main)
    assert status == 200
    (panel,) = listed["panels"]
    assert panel["id"] == panel_id
    assert panel["connected"] is True
    assert panel["last_seen"] is not None
    assert token not in json.dumps(listed)
    assert not {"token", "token_sha256"} & set(panel)


async def revoking_closes_the_stream_and_refuses_the_token(
    session: aiohttp.ClientSession, main: str, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.ws_connect("/api/v1/events", headers=headers) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        status, body = await post(session, "panels/revoke", {"panel": "lobby panel"}, main)
        assert status == 200, body
        assert body["revoked"]["name"] == "Lobby panel"
        closing = await ws.receive(timeout=5)
        while closing.type is aiohttp.WSMsgType.TEXT:  # changes sent before the close
            closing = await ws.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert (closing.data, closing.extra) == (
            aiohttp.WSCloseCode.POLICY_VIOLATION,
            "panel unpaired",
        )
    assert (await get(session, "state", token))[0] == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"/api/v1/events?access_token={token}")
    assert refused.value.status == 401
    status, body = await post(session, "panels/revoke", {"panel": "Lobby panel"}, main)
    assert status == 404
    assert "no panel" in body["error"]["message"]


async def test_the_last_wrong_code_voids_the_request(
    daemon: Daemon, anonymous: aiohttp.ClientSession
) -> None:
    status, ticket = await post(anonymous, "pairing/request", {"name": "Panel"})
    assert status == 200
    code = pairing(daemon).code
    assert code is not None
    answers = [
        await post(
            anonymous, "pairing/complete", {"request_id": ticket["request_id"], "code": guess}
        )
        for guess in (wrong(code), wrong(wrong(code)), wrong(wrong(wrong(code))))
    ]
    assert [(s, b["error"]["attempts_left"]) for s, b in answers] == [(403, 2), (403, 1), (403, 0)]
    assert "last attempt" in answers[-1][1]["error"]["message"]
    assert pairing(daemon) == PairingState()
    status, body = await post(
        anonymous, "pairing/complete", {"request_id": ticket["request_id"], "code": code}
    )
    assert status == 404
    assert "ask for a new code" in body["error"]["message"]


async def test_one_request_at_a_time_and_the_same_panel_may_ask_again(
    daemon: Daemon, anonymous: aiohttp.ClientSession
) -> None:
    status, first = await post(anonymous, "pairing/request", {"name": "Panel A"})
    assert status == 200
    status, again = await post(anonymous, "pairing/request", {"name": "Panel A"})
    assert status == 200
    assert again["request_id"] != first["request_id"]
    code = pairing(daemon).code
    assert code is not None
    status, _ = await post(
        anonymous, "pairing/complete", {"request_id": first["request_id"], "code": code}
    )
    assert status == 404

    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(daemon.url, connector=connector) as other:
        async with other.post("/api/v1/pairing/request", json={"name": "Panel B"}) as answer:
            assert answer.status == 409
            body = await answer.json()
            assert int(answer.headers["Retry-After"]) > 100
        assert "Panel A" in body["error"]["message"]
        assert 100 < body["error"]["retry_after_s"] <= 120
        token = daemon.room.api_token
        assert (await post(anonymous, "pairing/cancel", {}, token))[1]["cancelled"] is True
        status, _ = await post(other, "pairing/request", {"name": "Panel B"})
        assert status == 200
    assert pairing(daemon).panel_name == "Panel B"


async def test_an_unanswered_request_leaves_the_display_when_it_expires(
    daemon: Daemon, anonymous: aiohttp.ClientSession
) -> None:
    daemon.room.pairing.desk = PairingDesk(time.monotonic, ttl_s=0.5)
    status, ticket = await post(anonymous, "pairing/request", {"name": "Panel"})
    assert status == 200
    assert pairing(daemon).pending
    started = time.monotonic()
    await until_pairing(daemon, lambda state: not state.pending, timeout=3)
    assert time.monotonic() - started < 2
    code = "000000"
    status, _ = await post(
        anonymous, "pairing/complete", {"request_id": ticket["request_id"], "code": code}
    )
    assert status == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("pairing/request", {}, "name"),
        ("pairing/request", {"name": ""}, "name"),
        ("pairing/request", {"name": "   "}, "name"),
        ("pairing/request", {"name": "x" * 65}, "name"),
        ("pairing/request", {"name": "bell\x07"}, "name"),
        ("pairing/request", {"name": 7}, "name"),
        ("pairing/request", {"name": "ok", "admin": True}, "admin"),
        ("pairing/complete", {"request_id": "pr-1"}, "code"),
        ("pairing/complete", {"request_id": "pr-1", "code": "12345"}, "code"),
        ("pairing/complete", {"request_id": "pr-1", "code": "12345a"}, "code"),
        ("pairing/complete", {"request_id": "pr-1", "code": 123456}, "code"),
        ("pairing/complete", {"request_id": "../x", "code": "123456"}, "request_id"),
        ("pairing/complete", {"request_id": "p" * 65, "code": "123456"}, "request_id"),
    ],
)
async def test_bad_pairing_input_names_the_field(
    daemon: Daemon, anonymous: aiohttp.ClientSession, path: str, body: Any, field: str
) -> None:
    status, answer = await post(anonymous, path, body)
    assert status == 422
    assert field in {p["field"] for p in answer["error"]["problems"]}
    assert pairing(daemon) == PairingState()


async def test_revoking_by_a_name_two_panels_share_asks_for_the_id(
    daemon: Daemon, anonymous: aiohttp.ClientSession
) -> None:
    first = await pair(anonymous, daemon, "Panel")
    second = await pair(anonymous, daemon, "Panel")
    token = daemon.room.api_token
    status, body = await post(anonymous, "panels/revoke", {"panel": "Panel"}, token)
    assert status == 409
    assert first["panel"]["id"] in body["error"]["message"]
    status, body = await post(anonymous, "panels/revoke", {"panel": second["panel"]["id"]}, token)
    assert status == 200
    assert (await get(anonymous, "state", first["token"]))[0] == 200
    assert (await get(anonymous, "state", second["token"]))[0] == 401


async def test_the_panels_command_lists_and_revokes(
    daemon: Daemon, anonymous: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    granted = await pair(anonymous, daemon, "Kitchen panel")
    state_dir = str(daemon.settings.state_dir)
    assert await asyncio.to_thread(cli.main, ["panels", "--state-dir", state_dir]) == 0
    listed = capsys.readouterr().out
    assert "Kitchen panel" in listed
    assert granted["panel"]["id"] in listed
    assert granted["token"] not in listed

    revoke = ["panels", "revoke", "Kitchen panel", "--state-dir", state_dir]
    assert await asyncio.to_thread(cli.main, revoke) == 0
    assert "unpaired Kitchen panel" in capsys.readouterr().out
    assert (await get(anonymous, "state", granted["token"]))[0] == 401
    assert await asyncio.to_thread(cli.main, revoke) == 1
    assert "no panel 'Kitchen panel'" in capsys.readouterr().err


@pytest.mark.timeout(60)
async def test_the_room_announces_its_api_port_for_panels_on_loopback(settings: Settings) -> None:
    def with_sharing(settings: Settings, bus: Any) -> list[Service]:
        return [SharingService(settings.sharing, settings.room, bus, web_listen="127.0.0.1:0")]

    assert settings.sharing.mdns_interfaces == (LOOPBACK,)
    running = Daemon(settings, with_sharing)
    await running.start()
    try:
        await asyncio.wait_for(running.room.ready.wait(), 10)
        port = int(running.url.rsplit(":", 1)[1])
        room_id = running.room.bus.get("room").id  # type: ignore[attr-defined]
        found = []
        for _ in range(5):  # bounded: an announcement on loopback is seen within seconds
            found = [r for r in await browse(LOOPBACK, wait_s=1.0) if r.room_id == room_id]
            if found:
                break
        (room,) = found
        assert room.api_port == port
        assert room.api_urls == (running.url,)
    finally:
        await running.stop()


async def test_wrong_codes_lock_pairing_out_until_the_main_token_cancels(
    daemon: Daemon, anonymous: aiohttp.ClientSession
) -> None:
    async def one_wrong_code() -> tuple[int, dict[str, Any], str | None]:
        status, ticket = await post(anonymous, "pairing/request", {"name": "Guesser"})
        if status != 200:
            return status, ticket, None
        code = pairing(daemon).code
        assert code is not None
        body = {"request_id": ticket["request_id"], "code": wrong(code)}
        async with anonymous.post("/api/v1/pairing/complete", json=body) as answer:
            return answer.status, await answer.json(), answer.headers.get("Retry-After")

    for _ in range(FREE_WRONG_CODES):
        status, body, _ = await one_wrong_code()
        assert status == 403, body
    # One more wrong code is still refused as wrong, and starts the lockout.
    status, body, retry_after = await one_wrong_code()
    assert status == 403, body
    assert body["error"]["retry_after_s"] == LOCKOUT_INITIAL_S
    assert retry_after == str(int(LOCKOUT_INITIAL_S))
    # Locked: nobody may even ask for a code now ...
    async with anonymous.post("/api/v1/pairing/request", json={"name": "Real panel"}) as answer:
        assert answer.status == 429, await answer.text()
        assert int(answer.headers["Retry-After"]) <= LOCKOUT_INITIAL_S
    # ... until someone with the main token cancels, which lifts the lockout.
    status, _ = await post(anonymous, "pairing/cancel", {}, daemon.room.api_token)
    assert status == 200
    granted = await pair(anonymous, daemon, "Real panel")
    assert granted["panel"]["name"] == "Real panel"


async def test_a_panels_event_stream_never_carries_another_panels_code(
    daemon: Daemon, anonymous: aiohttp.ClientSession
) -> None:
    token = (await pair(anonymous, daemon))["token"]
    async with anonymous.ws_connect(f"/api/v1/events?access_token={token}") as panel:
        async with anonymous.ws_connect(
            f"/api/v1/events?access_token={daemon.room.api_token}"
        ) as main:
            for stream in (panel, main):
                assert (await stream.receive_json(timeout=5))["type"] == "snapshot"
            status, _ = await post(anonymous, "pairing/request", {"name": "Stranger"})
            assert status == 200

            async def pairing_change(stream: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
                while True:
                    message = await stream.receive_json(timeout=5)
                    if message["type"] == "change" and message["topic"] == "pairing":
                        return dict(message["data"])

            seen_by_main = await pairing_change(main)
            seen_by_panel = await pairing_change(panel)
    assert seen_by_main["code"] == pairing(daemon).code
    assert seen_by_panel["pending"] is True
    assert seen_by_panel["code"] is None
