"""Random requests at every endpoint: always a 4xx JSON error or success, never a 5xx."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomsystem.config import Settings
from roomsystem.daemon import Daemon
from tests.conftest import loopback_demo_settings


class ThreadedDaemon:
    """A daemon on its own event loop thread, so synchronous hypothesis tests can call it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = threading.Event()
        self.failure: BaseException | None = None
        self.url = ""
        self.token = ""
        self._thread = threading.Thread(target=self._main, name="fuzz-daemon")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self.failure = exc
            self.started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        daemon = Daemon(self.settings, lambda settings, bus: [])
        await daemon.start()
        self.url, self.token = daemon.url, daemon.room.api_token
        self.started.set()
        try:
            await self._stop.wait()
        finally:
            await daemon.stop()

    def __enter__(self) -> ThreadedDaemon:
        self._thread.start()
        assert self.started.wait(10), "daemon did not start"
        if self.failure:
            raise self.failure
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedDaemon]:
    settings = loopback_demo_settings(tmp_path_factory.mktemp("fuzz") / "state")
    with ThreadedDaemon(settings) as running:
        yield running


def request(
    room: ThreadedDaemon, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    parsed = urllib.parse.urlsplit(room.url)
    assert parsed.hostname
    assert parsed.port
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


KNOWN_PATHS = [
    "/api/v1/health",
    "/api/v1/state",
    "/api/v1/events",
    "/api/v1/openapi.json",
    "/api/v1/services/retry",
    "/api/v1/panels",
    "/api/v1/panels/revoke",
    "/api/v1/pairing/request",
    "/api/v1/pairing/complete",
    "/api/v1/pairing/cancel",
]
PAIRING_PATHS = ["/api/v1/pairing/request", "/api/v1/pairing/complete"]


def send_json(
    room: ThreadedDaemon, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    status, payload = request(room, method, path, data, headers)
    return status, json.loads(payload)


@pytest.fixture(scope="module")
def panel_token(room: ThreadedDaemon) -> str:
    """A panel paired the way a panel pairs: request, the code from the snapshot, complete."""
    status, ticket = send_json(room, "POST", "/api/v1/pairing/request", {"name": "Fuzz panel"})
    assert status == 200, ticket
    status, state = send_json(room, "GET", "/api/v1/state", token=room.token)
    body = {"request_id": ticket["request_id"], "code": state["pairing"]["code"]}
    status, granted = send_json(room, "POST", "/api/v1/pairing/complete", body)
    assert status == 200, granted
    return str(granted["token"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
argument_objects = st.fixed_dictionaries(
    {}, optional={"service": json_values, "extra": json_values}
) | st.dictionaries(st.text(max_size=10), json_values, max_size=4)
# Near-valid pairing bodies, so that validation passes often and the handlers run.
digits = st.text(alphabet="0123456789", min_size=5, max_size=7)
pairing_objects = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=70) | json_values,
        "request_id": st.from_regex(r"\Apr-[A-Za-z0-9_-]{1,20}\Z") | json_values,
        "code": digits | json_values,
        "panel": st.text(max_size=70) | json_values,
    },
)
bodies = st.one_of(
    st.none(),
    json_values.map(lambda v: json.dumps(v).encode()),
    argument_objects.map(lambda v: json.dumps(v).encode()),
    pairing_objects.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
)
random_paths = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4).map(
    lambda parts: "/api/v1/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)
)
paths = st.one_of(st.sampled_from(KNOWN_PATHS), random_paths)
queries = st.one_of(
    st.just(""),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3).map(
        lambda q: "?" + urllib.parse.urlencode(q)
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
    ]
)


def check_answer(status: int, payload: bytes) -> None:
    assert status < 500, payload
    if status >= 400:
        error: dict[str, Any] = json.loads(payload)["error"]
        assert error["status"] == status
        assert error["message"]
        assert "Traceback" not in error["message"]


COMMAND_PATHS = [p for p in KNOWN_PATHS if p.count("/") > 3]
fuzz = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@fuzz
@given(
    path=st.sampled_from(COMMAND_PATHS),
    body=bodies,
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", ""]),
)
def test_no_command_body_gets_a_server_error(
    room: ThreadedDaemon, panel_token: str, path: str, body: bytes | None, content_type: str
) -> None:
    headers = {"Authorization": f"Bearer {room.token}"}
    if content_type:
        headers["Content-Type"] = content_type
    check_answer(*request(room, "POST", path, body, headers))


@fuzz
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    path=paths,
    query=queries,
    body=bodies,
    content_type=content_types,
    auth=st.sampled_from(["valid", "panel", "none", "wrong"]),
)
def test_no_request_gets_a_server_error(
    room: ThreadedDaemon,
    panel_token: str,
    method: str,
    path: str,
    query: str,
    body: bytes | None,
    content_type: str,
    auth: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    tokens = {"valid": room.token, "panel": panel_token, "wrong": "x" + room.token}
    if auth in tokens:
        headers["Authorization"] = f"Bearer {tokens[auth]}"
    check_answer(*request(room, method, path + query, body, headers))


@fuzz
@given(path=st.sampled_from(PAIRING_PATHS), body=bodies, content_type=content_types)
def test_no_pairing_body_gets_a_server_error_without_a_token(
    room: ThreadedDaemon, path: str, body: bytes | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, payload = request(room, "POST", path, body, headers)
    check_answer(status, payload)
    if status == 422:
        problems = json.loads(payload)["error"]["problems"]
        assert all(problem["field"] and problem["message"] for problem in problems)


@fuzz
@given(code=digits | st.text(max_size=8), name=st.text(min_size=1, max_size=64))
def test_codes_against_a_pending_request_get_clear_answers(
    room: ThreadedDaemon, panel_token: str, code: str, name: str
) -> None:
    status, ticket = send_json(room, "POST", "/api/v1/pairing/request", {"name": name})
    if status != 200:
        # A blank or unprintable name, or pairing locked out by the wrong codes so far.
        assert status in (422, 429), ticket
        return
    body = {"request_id": ticket["request_id"], "code": code}
    status, answer = send_json(room, "POST", "/api/v1/pairing/complete", body)
    assert status in (200, 403, 422, 429), answer
    if status != 200:
        assert answer["error"]["message"]
    if status == 403:
        assert 0 <= answer["error"]["attempts_left"] < 3
    # The room stays usable for the panel paired before.
    assert send_json(room, "GET", "/api/v1/state", token=panel_token)[0] == 200


def test_garbage_on_the_socket_does_not_hurt_the_room(room: ThreadedDaemon) -> None:
    parsed = urllib.parse.urlsplit(room.url)
    assert parsed.hostname
    assert parsed.port
    for garbage in [
        b"\x00\xff" * 100 + b"\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /api/v1/services/retry HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ]:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=5) as raw:
            raw.sendall(garbage)
            answer = raw.recv(4096)
        status_line = answer.split(b"\r\n")[0]
        assert answer == b"" or (status_line.startswith(b"HTTP/1.") and b" 5" not in status_line)


def test_the_room_still_answers_health_afterwards(room: ThreadedDaemon) -> None:
    status, payload = request(room, "GET", "/api/v1/health", None, {})
    assert status == 200
    assert json.loads(payload)["phase"] == "ready"
