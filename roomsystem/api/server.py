"""The local API: health, the state snapshot, the event stream and commands.

Every answer is JSON, errors included: ``{"error": {"status": 400, "message": "..."}}``.
No input reaches a client as a 500 or a traceback; unexpected failures are logged here
and answered with a plain "internal error".
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ValidationError

from roomsystem import __version__
from roomsystem.bus import Change, StateBus
from roomsystem.commands import Command, CommandError
from roomsystem.lifecycle import LifecycleState, Phase

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
HEALTH = f"{PREFIX}/health"
STATE = f"{PREFIX}/state"
EVENTS = f"{PREFIX}/events"
OPENAPI = f"{PREFIX}/openapi.json"
METRICS = "/metrics"  # where Prometheus looks by default
PUBLIC_PATHS = frozenset({HEALTH, OPENAPI})
HEARTBEAT_S = 20.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    body = {"error": {"status": status, "message": message, **extra}}
    return web.json_response(body, status=status)


def dump_topics(topics: Mapping[str, BaseModel]) -> dict[str, Any]:
    return {name: model.model_dump(mode="json") for name, model in topics.items()}


def change_message(change: Change) -> dict[str, Any]:
    return {
        "type": "change",
        "seq": change.seq,
        "topic": change.topic,
        "data": change.value.model_dump(mode="json"),
        "skipped": change.skipped,
    }


class ApiServer:
    """Serves the API of one room on one address."""

    def __init__(
        self,
        bus: StateBus,
        token: str,
        commands: Sequence[Command],
        max_body_bytes: int,
        openapi: Callable[[], dict[str, Any]],
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self._bus = bus
        self._token = token.encode()
        self._commands = {f"{PREFIX}/{c.path}": c for c in commands}
        self._openapi = openapi
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
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
        self.app.on_shutdown.append(self._close_sockets)
        self._runner: web.AppRunner | None = None
        self.url = ""

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
        if request.path in PUBLIC_PATHS or self._authorized(request):
            return await handler(request)
        response = error_response(401, "a valid bearer token is required (roomsystem token)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="roomsystem"'
        return response

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered = credentials.strip()
        elif request.path == EVENTS:
            # Browsers cannot set headers on a WebSocket; RFC 6750 allows the query form.
            offered = request.query.get("access_token", "")
        else:
            return False
        return hmac.compare_digest(offered.encode("utf-8", "replace"), self._token)

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
        response = web.json_response(dump_topics(snapshot.topics))
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
        body = await self._json_body(request)
        try:
            # JSON-mode validation: strict about types, but "up" may name an enum member.
            arguments = command.arguments.model_validate_json(body)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            return error_response(422, "invalid arguments", problems=problems)
        try:
            result = await command.handler(arguments)
        except CommandError as exc:
            return error_response(exc.status, exc.message)
        return web.json_response(result.model_dump(mode="json"))

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
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        self._sockets.add(ws)
        with self._bus.subscribe() as subscription:
            snapshot = subscription.snapshot
            await ws.send_json(
                {"type": "snapshot", "seq": snapshot.seq, "state": dump_topics(snapshot.topics)}
            )
            sender = asyncio.create_task(self._send_changes(ws, subscription.next))
            try:
                # Reading is what notices that the client left; clients send nothing we need.
                async for message in ws:
                    if message.type is WSMsgType.ERROR:
                        break
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sender
        return ws

    async def _send_changes(
        self, ws: web.WebSocketResponse, next_change: Callable[[], Awaitable[Change]]
    ) -> None:
        while not ws.closed:
            change = await next_change()
            await ws.send_json(change_message(change))

    async def _close_sockets(self, app: web.Application) -> None:
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"room stopping")
                for ws in set(self._sockets)
            ),
            return_exceptions=True,
        )
