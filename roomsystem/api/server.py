"""The local API: health, the state snapshot, the event stream and commands.

Every answer is JSON, errors included: ``{"error": {"status": 400, "message": "..."}}``.
No input reaches a client as a 500 or a traceback; unexpected failures are logged here
and answered with a plain "internal error".

Two kinds of token open the API: the room's main token, and a paired panel's own token.
A panel may read the state, follow the events and send the room's commands; managing the
paired panels needs the main token. Pairing itself (request a code, complete with it) needs
no token: the code shown on the room display is what proves the panel is in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ValidationError

from roomsystem import __version__
from roomsystem.bus import Change, StateBus
from roomsystem.commands import Arguments, Command, CommandError
from roomsystem.lifecycle import LifecycleState, Phase
from roomsystem.pairing.service import (
    COMPLETE_PATH,
    MAIN_TOKEN_ONLY,
    PAIRING_TOPIC,
    PANELS_PATH,
    REQUEST_PATH,
    Pairing,
    PairingCompleteArgs,
    PairingError,
    PairingRequestArgs,
    PanelList,
)

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
HEALTH = f"{PREFIX}/health"
STATE = f"{PREFIX}/state"
EVENTS = f"{PREFIX}/events"
OPENAPI = f"{PREFIX}/openapi.json"
METRICS = "/metrics"  # where Prometheus looks by default
PAIRING_REQUEST = f"{PREFIX}/{REQUEST_PATH}"
PAIRING_COMPLETE = f"{PREFIX}/{COMPLETE_PATH}"
PANELS = f"{PREFIX}/{PANELS_PATH}"
PUBLIC_PATHS = frozenset({HEALTH, OPENAPI, PAIRING_REQUEST, PAIRING_COMPLETE})
MAIN_TOKEN_PATHS = frozenset({METRICS, *(f"{PREFIX}/{path}" for path in MAIN_TOKEN_ONLY)})
HEARTBEAT_S = 20.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ArgumentsT = TypeVar("ArgumentsT", bound=Arguments)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the main token (``panel_id`` None) or a paired panel."""

    panel_id: str | None = None

    @property
    def is_panel(self) -> bool:
        return self.panel_id is not None


MAIN = Caller()
CALLER = web.RequestKey("caller", Caller)


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"status": status, "message": message, **extra}}
    return web.json_response(body, status=status)


def topic_data(topic: str, value: BaseModel, caller: Caller = MAIN) -> dict[str, Any]:
    """``value`` as ``caller`` may see it."""
    data = value.model_dump(mode="json")
    if caller.is_panel and topic == PAIRING_TOPIC:
        # A panel never needs another panel's code; a stolen panel token could pair more.
        data["code"] = None
    return data


def dump_topics(topics: Mapping[str, BaseModel], caller: Caller = MAIN) -> dict[str, Any]:
    return {name: topic_data(name, model, caller) for name, model in topics.items()}


def change_message(change: Change, caller: Caller = MAIN) -> dict[str, Any]:
    return {
        "type": "change",
        "seq": change.seq,
        "topic": change.topic,
        "data": topic_data(change.topic, change.value, caller),
        "skipped": change.skipped,
    }


def pairing_answer(outcome: BaseModel | PairingError) -> web.Response:
    if not isinstance(outcome, PairingError):
        # The answer may carry the panel's token: no cache may keep it.
        return web.json_response(
            outcome.model_dump(mode="json"), headers={"Cache-Control": "no-store"}
        )
    response = error_response(outcome.status, outcome.message, **outcome.details())
    if outcome.retry_after_s:
        response.headers["Retry-After"] = str(math.ceil(outcome.retry_after_s))
    return response


class ApiServer:
    """Serves the API of one room on one address.

    ``pairing``: the room's panel pairing; by default the one that publishes on ``bus``.
    Without one, only the main token opens the API and there is nothing to pair with.
    """

    def __init__(
        self,
        bus: StateBus,
        token: str,
        commands: Sequence[Command],
        max_body_bytes: int,
        openapi: Callable[[], dict[str, Any]],
        metrics: Callable[[], bytes] | None = None,
        pairing: Pairing | None = None,
    ) -> None:
        self._bus = bus
        self._token = token.encode()
        self._commands = {f"{PREFIX}/{c.path}": c for c in commands}
        self._openapi = openapi
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # Which paired panel follows each event stream, to close it when it is unpaired.
        self._panel_sockets: weakref.WeakKeyDictionary[web.WebSocketResponse, str] = (
            weakref.WeakKeyDictionary()
        )
        self.app = web.Application(
            client_max_size=max_body_bytes, middlewares=[self._errors, self._auth]
        )
        self.app.router.add_get(HEALTH, self._health)
        self.app.router.add_get(STATE, self._state)
        self.app.router.add_get(EVENTS, self._events)
        self.app.router.add_get(OPENAPI, self._openapi_json)
        self._metrics = metrics
        if metrics is not None:
            self.app.router.add_get(METRICS, self._metrics_text)
        for path in self._commands:
            self.app.router.add_post(path, self._command)
        self._pairing = pairing
        if self._pairing is not None:
            self._add_pairing_routes(self._pairing)
        self.app.on_shutdown.append(self._close_sockets)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.port = 0

    def _add_pairing_routes(self, pairing: Pairing) -> None:
        self.app.router.add_post(PAIRING_REQUEST, self._pairing_request)
        self.app.router.add_post(PAIRING_COMPLETE, self._pairing_complete)
        self.app.router.add_get(PANELS, self._panels)
        pairing.add_revoke_listener(self._close_panel_sockets)

    async def start(self, host: str, port: int) -> str:
        """Listen on ``host:port`` (port 0 picks one) and return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = self._runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}"
        self.port = int(bound[1])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = (
                exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            )
            response = error_response(exc.status, message)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(500, "internal error; the room's log has the details")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        caller = self._caller(request)
        if caller is None:
            response = error_response(401, "a valid bearer token is required (roomsystem token)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="roomsystem"'
            return response
        if caller.is_panel and request.path in MAIN_TOKEN_PATHS:
            return error_response(
                403, "a panel's token cannot do this: it needs the room's main token"
            )
        request[CALLER] = caller
        return await handler(request)

    def _caller(self, request: web.Request) -> Caller | None:
        offered = self._offered_token(request)
        if offered is None:
            return None
        if hmac.compare_digest(offered.encode("utf-8", "replace"), self._token):
            return MAIN
        panel = self._pairing.authenticate(offered) if self._pairing else None
        return Caller(panel.id) if panel else None

    def _offered_token(self, request: web.Request) -> str | None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return credentials.strip()
        if request.path == EVENTS:
            # Browsers cannot set headers on a WebSocket; RFC 6750 allows the query form.
            return request.query.get("access_token", "")
        return None

    async def _health(self, request: web.Request) -> web.Response:
        lifecycle = self._bus.get("lifecycle")
        assert isinstance(lifecycle, LifecycleState)
        return web.json_response(
            {
                "phase": lifecycle.phase,
                "ready": lifecycle.phase is Phase.READY,
                "degraded": lifecycle.degraded,
                "version": __version__,
            }
        )

    async def _state(self, request: web.Request) -> web.Response:
        snapshot = self._bus.snapshot()
        response = web.json_response(dump_topics(snapshot.topics, request[CALLER]))
        response.headers["ETag"] = f'"{snapshot.seq}"'
        return response

    async def _metrics_text(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        response = web.Response(body=self._metrics())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    async def _openapi_json(self, request: web.Request) -> web.Response:
        return web.json_response(self._openapi())

    async def _command(self, request: web.Request) -> web.Response:
        command = self._commands[request.path]
        arguments = await self._arguments(request, command.arguments)
        if isinstance(arguments, web.Response):
            return arguments
        try:
            result = await command.handler(arguments)
        except CommandError as exc:
            return error_response(exc.status, exc.message)
        return web.json_response(result.model_dump(mode="json"))

    async def _arguments(
        self, request: web.Request, model: type[ArgumentsT]
    ) -> ArgumentsT | web.Response:
        """The body validated as ``model``, or the 422 answer that lists every problem."""
        body = await self._json_body(request)
        try:
            # JSON-mode validation: strict about types, but "up" may name an enum member.
            return model.model_validate_json(body)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            return error_response(422, "invalid arguments", problems=problems)

    async def _pairing_request(self, request: web.Request) -> web.Response:
        assert self._pairing is not None
        arguments = await self._arguments(request, PairingRequestArgs)
        if isinstance(arguments, web.Response):
            return arguments
        return pairing_answer(self._pairing.request(arguments.name, request.remote or "unknown"))

    async def _pairing_complete(self, request: web.Request) -> web.Response:
        assert self._pairing is not None
        arguments = await self._arguments(request, PairingCompleteArgs)
        if isinstance(arguments, web.Response):
            return arguments
        outcome = self._pairing.complete(
            arguments.request_id, arguments.code, request.remote or "unknown"
        )
        return pairing_answer(outcome)

    async def _panels(self, request: web.Request) -> web.Response:
        assert self._pairing is not None
        live = set(self._panel_sockets.values())
        panels = [
            panel.model_copy(update={"connected": panel.id in live})
            for panel in self._pairing.panels()
        ]
        return web.json_response(PanelList(panels=panels).model_dump(mode="json"))

    async def _json_body(self, request: web.Request) -> bytes:
        """The body if it is one JSON object (an empty body is ``{}``)."""
        body = await request.read()
        if not body.strip():
            return b"{}"
        if request.content_type not in ("application/json", "application/octet-stream"):
            raise web.HTTPUnsupportedMediaType(text="the body must be application/json")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise web.HTTPBadRequest(text=f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        return body

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        caller = request[CALLER]
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
        self._sockets.add(ws)
        if caller.panel_id is not None:
            self._panel_sockets[ws] = caller.panel_id
        await ws.prepare(request)
        if not self._still_paired(caller):
            # Unpaired during the handshake, when the stream could not be closed yet.
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"panel unpaired")
            self._panel_sockets.pop(ws, None)
            return ws
        try:
            await self._stream(ws, caller)
        finally:
            self._panel_sockets.pop(ws, None)
            if caller.panel_id is not None and self._pairing is not None:
                self._pairing.touch(caller.panel_id)
        return ws

    async def _stream(self, ws: web.WebSocketResponse, caller: Caller) -> None:
        with self._bus.subscribe() as subscription:
            snapshot = subscription.snapshot
            state = dump_topics(snapshot.topics, caller)
            await ws.send_json({"type": "snapshot", "seq": snapshot.seq, "state": state})
            sender = asyncio.create_task(self._send_changes(ws, subscription.next, caller))
            try:
                # Reading is what notices that the client left; clients send nothing we need.
                async for message in ws:
                    if message.type is WSMsgType.ERROR:
                        break
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sender

    async def _send_changes(
        self,
        ws: web.WebSocketResponse,
        next_change: Callable[[], Awaitable[Change]],
        caller: Caller,
    ) -> None:
        while not ws.closed:
            change = await next_change()
            await ws.send_json(change_message(change, caller))

    def _still_paired(self, caller: Caller) -> bool:
        if caller.panel_id is None or self._pairing is None:
            return True
        return any(panel.id == caller.panel_id for panel in self._pairing.panels())

    async def _close_panel_sockets(self, panel_id: str) -> None:
        """The panel was unpaired: end its event streams now, not at its next reconnect."""
        streams = [ws for ws, owner in list(self._panel_sockets.items()) if owner == panel_id]
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"panel unpaired")
                for ws in streams
            ),
            return_exceptions=True,
        )

    async def _close_sockets(self, app: web.Application) -> None:
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"room stopping")
                for ws in set(self._sockets)
            ),
            return_exceptions=True,
        )
