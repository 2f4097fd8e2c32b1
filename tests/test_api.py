"""The local API: auth, the snapshot, the event stream, commands and bad input."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import WSMsgType

from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from roomsystem.sharing.state import SharingState
from tests.conftest import only

TOPICS = {
    "room",
    "lifecycle",
    "devices",
    "meeting",
    "sharing",
    "calendar",
    "alerts",
    "media",
    "pairing",
}


async def test_health_needs_no_token_and_reports_the_phase(daemon: Daemon) -> None:
    await asyncio.wait_for(daemon.room.ready.wait(), 5)
    async with aiohttp.ClientSession(daemon.url) as anonymous:
        async with anonymous.get("/api/v1/health") as response:
            assert response.status == 200
            body = await response.json()
    assert body == {"phase": "ready", "ready": True, "degraded": False, "version": "0.1.0"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer \u00e9\u00e9"},
    ],
)
async def test_everything_but_health_needs_the_token(
    daemon: Daemon, headers: dict[str, str]
) -> None:
    async with aiohttp.ClientSession(daemon.url, headers=headers) as session:
        for method, path in [
            ("GET", "/api/v1/state"),
            ("GET", "/api/v1/events"),
            ("POST", "/api/v1/services/retry"),
            ("GET", "/api/v1/no-such-thing"),
        ]:
            async with session.request(method, path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"]["status"] == 401


async def test_state_is_the_whole_snapshot(daemon: Daemon, client: aiohttp.ClientSession) -> None:
    async with client.get("/api/v1/state") as response:
        assert response.status == 200
        state = await response.json()
        assert response.headers["ETag"] == f'"{daemon.room.bus.seq}"'
    assert set(state) == TOPICS
    assert state["room"]["name"] == "Demo Room"
    assert state["room"]["id"] == daemon.room.bus.get("room").id  # type: ignore[attr-defined]
    assert state["meeting"]["policy"]["waiting_room"] is True


async def test_events_start_with_the_snapshot_then_follow_in_order(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    await asyncio.wait_for(daemon.room.ready.wait(), 5)
    async with client.ws_connect("/api/v1/events") as ws:
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "snapshot"
        assert set(first["state"]) == TOPICS
        assert first["seq"] == daemon.room.bus.seq
        for number in range(1, 4):
            sharing = SharingState(active=True, sharer=f"laptop {number}")
            daemon.room.bus.publish("sharing", sharing)
            change = await ws.receive_json(timeout=5)
            assert change == {
                "type": "change",
                "seq": first["seq"] + number,
                "topic": "sharing",
                "data": sharing.model_dump(mode="json"),
                "skipped": 0,
            }


async def test_events_accept_the_token_in_the_query_for_browsers(daemon: Daemon) -> None:
    url = f"{daemon.url}/api/v1/events?access_token={daemon.room.api_token}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{daemon.url}/api/v1/events?access_token=wrong")
        assert refused.value.status == 401


async def test_a_reader_that_falls_behind_gets_the_latest_value_and_a_skip_count(
    daemon: Daemon, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect("/api/v1/events") as ws:
        await ws.receive_json(timeout=5)
        # All published before the server's sender runs again: one coalesced change.
        for number in range(5000):
            daemon.room.bus.publish("sharing", SharingState(active=True, sharer=f"laptop {number}"))
        change = await ws.receive_json(timeout=5)
        assert change["data"]["sharer"] == "laptop 4999"
        assert change["skipped"] == 4999
        assert change["seq"] == daemon.room.bus.seq


async def test_stopping_the_room_closes_event_streams(settings: Settings) -> None:
    running = Daemon(settings, only())
    await running.start()
    headers = {"Authorization": f"Bearer {running.room.api_token}"}
    async with aiohttp.ClientSession(running.url, headers=headers) as session:
        ws = await session.ws_connect("/api/v1/events")
        await ws.receive_json(timeout=5)
        closing_task = asyncio.create_task(ws.receive(timeout=5))
        await running.stop()
        closing = await closing_task
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await ws.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"{not json", "application/json", 400, "the body is not valid JSON"),
        (b"[1, 2]", "application/json", 400, "the body must be a JSON object"),
        (b"[" * 20000 + b"]" * 20000, "application/json", 400, "the body is not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "the body is not valid JSON"),
        (b'{"service": 3}', "application/json", 422, "invalid arguments"),
        (b'{"service": "x", "extra": 1}', "application/json", 422, "invalid arguments"),
        (b"{}", "application/json", 422, "invalid arguments"),
        (
            b"service=x",
            "application/x-www-form-urlencoded",
            415,
            "the body must be application/json",
        ),
        (b"x" * 70000, "application/json", 413, "Maximum request body size 65536"),
    ],
)
async def test_bad_command_input_gets_a_clear_json_error(
    client: aiohttp.ClientSession, body: bytes, content_type: str, status: int, message: str
) -> None:
    headers = {"Content-Type": content_type}
    async with client.post("/api/v1/services/retry", data=body, headers=headers) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert error["status"] == status
    assert error["message"].startswith(message)


async def test_argument_problems_name_each_field(client: aiohttp.ClientSession) -> None:
    async with client.post("/api/v1/services/retry", json={"service": 3, "extra": 1}) as response:
        problems = (await response.json())["error"]["problems"]
    assert {p["field"] for p in problems} == {"service", "extra"}


async def test_unknown_paths_and_methods_are_json_errors(client: aiohttp.ClientSession) -> None:
    async with client.post("/api/v1/meeting/teleport", json={}) as response:
        assert response.status == 404
        assert (await response.json())["error"]["message"] == "Not Found"
    async with client.get("/api/v1/services/retry") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"]["status"] == 405


async def test_openapi_documents_every_route(daemon: Daemon) -> None:
    async with aiohttp.ClientSession(daemon.url) as anonymous:
        async with anonymous.get("/api/v1/openapi.json") as response:
            spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    assert daemon.api is not None
    served = {r.get_info().get("path") for r in daemon.api.app.router.resources()}
    assert served == set(spec["paths"])
    retry = spec["paths"]["/api/v1/services/retry"]["post"]
    schema_name = retry["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit(
        "/", 1
    )[1]
    assert spec["components"]["schemas"][schema_name]["required"] == ["service"]
    assert set(spec["components"]["schemas"]["RoomState"]["required"]) == TOPICS
