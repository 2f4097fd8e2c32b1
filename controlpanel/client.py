"""A client of the room's API for the panel and the display.

`RoomLink` is the asyncio core: it keeps the latest state snapshot from the event stream,
reconnects by itself with backoff, and sends commands. `RoomClient` runs a `RoomLink` on
its own event loop in one named thread and hands every update and command result to the UI
thread through a `deliver` callable (Kivy: ``Clock.schedule_once``), so the UI never blocks
on the network and never touches the loop.

A snapshot is only "live" while ``connected`` is true; after a disconnect the UI keeps the
last snapshot to show, but must not offer it as something to act on.

Pairing (a panel that has no token yet) is three one-off jobs run on a `Worker`: find the
rooms over mDNS (`find_rooms`), ask one for a code (`request_pairing`), send the code typed
from the room display (`complete_pairing`), which answers with the panel's own token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp

from controlpanel.common import save_pairing
from roomsystem.sharing.discover import FoundRoom, browse

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

PREFIX = "/api/v1"
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 10.0
# The server sends a WebSocket ping every 20 s; no message for this long means it is gone.
RECEIVE_TIMEOUT_S = 45.0
PAIRING_TIMEOUT_S = 5.0
BROWSE_S = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class LinkState:
    """What the UI renders: the latest snapshot and whether it is live."""

    connected: bool = False
    snapshot: Mapping[str, Any] = field(default_factory=dict)
    seq: int = -1
    error: str | None = None
    # The room refused the token (it never knew it, or the panel was unpaired).
    refused: bool = False
    # Monotonic time of the last change of `connected` (for "unreachable for N s").
    since: float = field(default_factory=time.monotonic)
    commands: frozenset[str] = frozenset()

    def section(self, topic: str) -> Mapping[str, Any] | None:
        """One topic of the snapshot, or None when the daemon has no such section."""
        value = self.snapshot.get(topic)
        return value if isinstance(value, Mapping) else None

    def offers(self, path: str) -> bool:
        """Whether the daemon has the command ``path`` and is reachable to take it."""
        return self.connected and path in self.commands


@dataclass(frozen=True)
class CommandResult:
    """The answer to one command: ``ok`` with the result, or the error's status and message."""

    path: str
    ok: bool
    status: int
    data: Any = None
    message: str = ""


def command_paths(openapi: Mapping[str, Any]) -> frozenset[str]:
    """The command paths (``devices/audio/mute``) that an OpenAPI document lists."""
    paths = openapi.get("paths")
    if not isinstance(paths, Mapping):
        return frozenset()
    return frozenset(
        path.removeprefix(PREFIX + "/")
        for path, operations in paths.items()
        if isinstance(operations, Mapping) and "post" in operations
    )


def apply_message(state: LinkState, message: Mapping[str, Any]) -> LinkState:
    """The state after one event-stream message; unknown messages change nothing."""
    kind = message.get("type")
    if kind == "snapshot" and isinstance(message.get("state"), Mapping):
        return replace(state, snapshot=dict(message["state"]), seq=_seq(message, -1))
    if kind == "change" and isinstance(message.get("topic"), str):
        snapshot = dict(state.snapshot)
        snapshot[message["topic"]] = message.get("data")
        return replace(state, snapshot=snapshot, seq=_seq(message, state.seq))
    return state


def _seq(message: Mapping[str, Any], default: int) -> int:
    seq = message.get("seq")
    return seq if isinstance(seq, int) else default


def read_token(path: str | None) -> str:
    """The bearer token kept in ``path`` (one line); an empty path gives no token."""
    if not path:
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


class Backoff:
    """Exponential delays with jitter, reset after a good connection."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self._next = self.initial


class RoomLink:
    """Follows one daemon's event stream and sends it commands (asyncio)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        on_update: Callable[[LinkState], None],
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._on_update = on_update
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.state = LinkState()
        self._session: aiohttp.ClientSession | None = None

    def _publish(self, state: LinkState) -> None:
        if state.connected != self.state.connected:
            state = replace(state, since=time.monotonic())
        self.state = state
        self._on_update(state)

    async def run(self) -> None:
        """Stay connected until cancelled: snapshot, then changes; reconnect on any failure."""
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as session:
            self._session = session
            try:
                while True:
                    error, refused = await self._follow(session)
                    self._publish(
                        replace(self.state, connected=False, error=error, refused=refused)
                    )
                    await asyncio.sleep(self._backoff.next())
            finally:
                self._session = None

    async def _follow(self, session: aiohttp.ClientSession) -> tuple[str, bool]:
        """Follow the stream until it ends; returns why it ended, and whether the room
        refused the token."""
        try:
            commands = await self._fetch_commands(session)
            async with session.ws_connect(
                f"{self.api_url}{PREFIX}/events", heartbeat=None, autoping=True
            ) as ws:
                state = self.state
                async for message in self._messages(ws):
                    state = apply_message(state, message)
                    if not self.state.connected and message.get("type") == "snapshot":
                        self._backoff.reset()
                        state = replace(
                            state, connected=True, error=None, refused=False, commands=commands
                        )
                    if state.connected:
                        self._publish(state)
                return "the room closed the connection", False
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                return "the room refused the token (401): check --token-file", True
            return f"the room refused the event stream ({exc.status})", False
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            logger.info("room API %s: %s", self.api_url, exc or type(exc).__name__)
            return f"cannot reach the room at {self.api_url}", False

    async def _fetch_commands(self, session: aiohttp.ClientSession) -> frozenset[str]:
        async with session.get(
            f"{self.api_url}{PREFIX}/openapi.json",
            timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S),
        ) as response:
            response.raise_for_status()
            return command_paths(await response.json())

    async def _messages(self, ws: aiohttp.ClientWebSocketResponse) -> Any:
        while True:
            message = await ws.receive(timeout=RECEIVE_TIMEOUT_S)
            if message.type is not aiohttp.WSMsgType.TEXT:
                return
            data = json.loads(message.data)
            if isinstance(data, dict):
                yield data

    async def command(self, path: str, arguments: Mapping[str, Any] | None = None) -> CommandResult:
        """POST one command; never raises for network or API errors."""
        session = self._session
        if session is None or session.closed:
            return CommandResult(path, False, 0, message="not connected to the room")
        try:
            async with session.post(
                f"{self.api_url}{PREFIX}/{path}",
                json=dict(arguments or {}),
                timeout=aiohttp.ClientTimeout(total=COMMAND_TIMEOUT_S),
            ) as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    return CommandResult(path, True, 200, data=body)
                return CommandResult(path, False, response.status, message=_error_text(body))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return CommandResult(path, False, 0, message=f"the room did not answer: {exc}")


def _error_text(body: Any) -> str:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        problems = error.get("problems") or []
        detail = "; ".join(f"{p.get('field')}: {p.get('message')}" for p in problems)
        return f"{error.get('message', 'error')}{': ' + detail if detail else ''}"
    return "unexpected answer from the room"


def call_now(callback: Callable[[], None]) -> None:
    callback()


class RoomClient:
    """A `RoomLink` on its own thread, for a UI with its own main loop.

    ``deliver`` gets a callable to run on the UI thread: every listener call and command
    result goes through it. `state` may be read from any thread.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        deliver: Callable[[Callable[[], None]], None] = call_now,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._deliver = deliver
        self._listeners: list[Callable[[LinkState], None]] = []
        self._link = RoomLink(api_url, token, self._updated, backoff_initial_s, backoff_max_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()

    @property
    def api_url(self) -> str:
        return self._link.api_url

    def use(self, api_url: str, token: str) -> None:
        """Point the client at another room or token (a panel just paired); before `start`."""
        if self._thread is not None:
            raise RuntimeError("the client is running already")
        link = self._link
        self._link = RoomLink(
            api_url, token, self._updated, link._backoff.initial, link._backoff.maximum
        )

    @property
    def state(self) -> LinkState:
        return self._link.state

    def add_listener(self, listener: Callable[[LinkState], None]) -> None:
        """Call ``listener`` (on the UI thread) with every new state."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[LinkState], None]) -> None:
        self._listeners.remove(listener)

    def _updated(self, state: LinkState) -> None:
        def notify() -> None:
            for listener in list(self._listeners):
                listener(state)

        self._deliver(notify)

    def start(self) -> None:
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name="room-api-client", daemon=True)
        self._thread.start()
        self._started.wait(timeout=5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._task = loop.create_task(self._link.run(), name="room-api-link")
        self._started.set()
        try:
            loop.run_until_complete(self._until_cancelled(self._task))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    @staticmethod
    async def _until_cancelled(main: asyncio.Task[None]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await main
        # Commands still in flight end with the link's session.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the link and wait for its thread to end."""
        loop, thread, task = self._loop, self._thread, self._task
        if loop is None or thread is None or task is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout)
        self._thread = None

    def send(
        self,
        path: str,
        arguments: Mapping[str, Any] | None = None,
        on_result: Callable[[CommandResult], None] | None = None,
    ) -> None:
        """Send a command from any thread; ``on_result`` runs on the UI thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            if on_result is not None:
                result = CommandResult(path, False, 0, message="the client is not running")
                self._deliver(lambda: on_result(result))
            return
        future = asyncio.run_coroutine_threadsafe(self._link.command(path, arguments), loop)
        if on_result is not None:
            future.add_done_callback(lambda done: self._deliver_result(path, done, on_result))

    def _deliver_result(
        self, path: str, done: Future[CommandResult], on_result: Callable[[CommandResult], None]
    ) -> None:
        if done.cancelled():
            result = CommandResult(path, False, 0, message="cancelled")
        else:
            result = done.result()
        self._deliver(lambda: on_result(result))


class Worker:
    """One thread with its own event loop for the UI's one-off network jobs (finding rooms,
    pairing). Each result, or the exception a job raised, reaches the UI thread through
    ``deliver``."""

    def __init__(
        self, deliver: Callable[[Callable[[], None]], None] = call_now, name: str = "room-worker"
    ) -> None:
        self._deliver = deliver
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
            # Stopped: cancel what is still running, so that each job cleans up.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def submit(
        self,
        job: Coroutine[Any, Any, T],
        on_done: Callable[[T], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Run ``job`` on the worker's loop; ``on_done`` or ``on_error`` runs on the UI thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            job.close()
            self._deliver(lambda: on_error(RuntimeError("the worker is not running")))
            return
        future = asyncio.run_coroutine_threadsafe(job, loop)
        future.add_done_callback(lambda done: self._hand_over(done, on_done, on_error))

    def _hand_over(
        self,
        done: Future[T],
        on_done: Callable[[T], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        if done.cancelled():
            return  # stopping: the UI is going away too
        error = done.exception()
        if error is not None:
            logger.warning("background job failed: %s", error)
            self._deliver(lambda: on_error(error))
        else:
            result = done.result()
            self._deliver(lambda: on_done(result))

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None


# -- pairing


@dataclass(frozen=True)
class PairingSetup:
    """How an unpaired panel pairs: its jobs' worker, where to keep the token, its name,
    the interface to look for rooms on, and a room given with ``--api`` (no looking)."""

    worker: Worker
    token_file: str
    panel_name: str
    interface: str | None = None
    api: str | None = None


@dataclass(frozen=True)
class RoomChoice:
    """A room a panel may pair with: its name and its API on each of its addresses."""

    name: str
    room_id: str
    api_urls: tuple[str, ...]

    @classmethod
    def from_found(cls, room: FoundRoom) -> RoomChoice:
        return cls(room.name, room.room_id, room.api_urls)

    @classmethod
    def from_url(cls, api_url: str) -> RoomChoice:
        return cls(api_url, "", (api_url.rstrip("/"),))

    @property
    def where(self) -> str:
        return self.api_urls[0].removeprefix("http://").removeprefix("https://")


@dataclass(frozen=True)
class PairingTicket:
    """The room has shown a code for this panel; the code goes with ``request_id``."""

    room: RoomChoice
    api_url: str
    request_id: str
    code_digits: int
    attempts: int


@dataclass(frozen=True)
class PairingGrant:
    """The right code: the panel's own token for the room at ``api_url``."""

    room: RoomChoice
    api_url: str
    token: str
    panel_id: str


@dataclass(frozen=True)
class PairingFailure:
    """Why the room said no, as a sentence; ``start_over``: ask for a new code."""

    message: str
    status: int = 0
    attempts_left: int | None = None
    start_over: bool = False


async def find_rooms(interface: str | None, wait_s: float = BROWSE_S) -> list[RoomChoice]:
    """The rooms on the network that offer pairing (their mDNS record names the API port)."""
    found = await browse(interface, wait_s)
    return [RoomChoice.from_found(room) for room in found if room.api_urls]


async def request_pairing(room: RoomChoice, panel_name: str) -> PairingTicket | PairingFailure:
    """Ask ``room`` to show a pairing code, trying each of its addresses in turn."""
    failure = PairingFailure(f"{room.name} has no address to reach it at")
    for api_url in room.api_urls:
        answer = await _post_json(api_url, "pairing/request", {"name": panel_name})
        if isinstance(answer, PairingFailure):
            if answer.status:
                return answer  # the room answered: another address would say the same
            failure = answer
            continue
        request_id, digits = answer.get("request_id"), answer.get("code_digits")
        if not isinstance(request_id, str) or not isinstance(digits, int):
            return PairingFailure(f"{room.name} answered something unexpected")
        attempts = answer.get("attempts")
        return PairingTicket(
            room, api_url, request_id, digits, attempts if isinstance(attempts, int) else 1
        )
    return failure


async def complete_pairing(ticket: PairingTicket, code: str) -> PairingGrant | PairingFailure:
    """Send the code typed from the room display; the panel's token if it is right."""
    body = {"request_id": ticket.request_id, "code": code}
    answer = await _post_json(ticket.api_url, "pairing/complete", body)
    if isinstance(answer, PairingFailure):
        return answer
    token, panel = answer.get("token"), answer.get("panel")
    if not isinstance(token, str) or not token or not isinstance(panel, Mapping):
        return PairingFailure(f"{ticket.room.name} answered something unexpected")
    return PairingGrant(ticket.room, ticket.api_url, token, str(panel.get("id", "")))


async def complete_and_keep(
    ticket: PairingTicket, code: str, token_file: str
) -> PairingGrant | PairingFailure:
    """`complete_pairing`, then keep the token in ``token_file`` (and the room beside it)."""
    answer = await complete_pairing(ticket, code)
    if isinstance(answer, PairingGrant):
        try:
            save_pairing(
                token_file, answer.token, answer.api_url, answer.room.name, answer.room.room_id
            )
        except OSError as exc:
            return PairingFailure(f"paired, but cannot keep the token in {token_file}: {exc}")
    return answer


async def _post_json(
    api_url: str, path: str, body: Mapping[str, Any]
) -> dict[str, Any] | PairingFailure:
    timeout = aiohttp.ClientTimeout(total=PAIRING_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{api_url}{PREFIX}/{path}", json=dict(body)) as response,
        ):
            answer = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return PairingFailure(f"cannot reach the room at {api_url}: {exc or type(exc).__name__}")
    if status == 200 and isinstance(answer, dict):
        return answer
    return _pairing_failure(status, answer)


def _pairing_failure(status: int, body: Any) -> PairingFailure:
    error = body.get("error") if isinstance(body, Mapping) else None
    left = error.get("attempts_left") if isinstance(error, Mapping) else None
    attempts_left = left if isinstance(left, int) and not isinstance(left, bool) else None
    # No request any more (404), or the last wrong code: only a new code helps.
    start_over = status == 404 or attempts_left == 0
    return PairingFailure(_error_text(body), status, attempts_left, start_over)
