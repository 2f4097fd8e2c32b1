"""The daemon: one room and the API that serves it, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any

from roomsystem.api.openapi import build_openapi
from roomsystem.api.server import METRICS, ApiServer
from roomsystem.appliance.metrics import OPENAPI_PATH as METRICS_OPENAPI_PATH
from roomsystem.appliance.runtime import Appliance
from roomsystem.config import Settings, split_listen
from roomsystem.errors import RoomError
from roomsystem.lifecycle import Backoff, WebStatus
from roomsystem.meeting.site import WebSite, meeting_site
from roomsystem.room import Room, ServiceFactory, build_services
from roomsystem.statedir import ENDPOINT_FILE, Endpoint

logger = logging.getLogger(__name__)

# SIGTERM must finish within 2 s; each step gets a share and is cut off after it.
STOP_STEP_TIMEOUT_S = 0.6


class ListenError(RoomError):
    exit_code = 1


class Daemon:
    """Owns the room and its API server; `stop` undoes everything `start` did."""

    def __init__(self, settings: Settings, services: ServiceFactory = build_services) -> None:
        self.settings = settings
        self.room = Room(settings, services)
        self.appliance = Appliance(settings, self.room.bus)
        self.api: ApiServer | None = None
        self.web: WebSite | None = None
        self.web_url = ""
        self.url = ""
        self._running = False
        self._web_retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the state directory, answer on the API, then run the lifecycle."""
        self.room.open()
        try:
            commands = self.room.commands()
            openapi = build_openapi(commands)
            if self.appliance.metrics is not None:
                openapi["paths"][METRICS] = METRICS_OPENAPI_PATH
            self.api = ApiServer(
                self.room.bus,
                token=self.room.api_token,
                commands=commands,
                max_body_bytes=self.settings.api.max_body_bytes,
                openapi=lambda: openapi,
                metrics=self.appliance.metrics.render if self.appliance.metrics else None,
                pairing=self.room.pairing,
            )
            host, port = split_listen(self.settings.api.listen)
            try:
                self.url = await self.api.start(host, port)
            except OSError as exc:
                raise ListenError(str(exc.strerror or exc)) from None
            await self.room.announce_api(host, self.api.port)
            self.room.state_dir.save(ENDPOINT_FILE, Endpoint(url=self.url, pid=os.getpid()))
            await self._start_web()
        except BaseException:
            if self.web is not None:
                await self.web.stop()
            if self.api is not None:
                await self.api.stop()
            self.room.state_dir.unlock()
            raise
        self.room.start()
        self.appliance.start()
        self._running = True

    async def _start_web(self) -> None:
        """The meeting site; one that cannot listen leaves the room running without it,
        says so in the lifecycle (where alerts see it) and tries again with backoff."""
        if not await self._try_web():
            self._web_retry = asyncio.create_task(self._retry_web(), name="daemon:web-retry")

    async def _try_web(self) -> bool:
        web = meeting_site(self.settings, self.room.state_dir, self.room.services)
        if web is None:
            return True
        try:
            self.web_url = await web.start()
        except OSError as exc:
            # Like a failed device, a busy port must not stop the room (its API, devices).
            logger.error("%s: remote participants cannot join this room's meetings", exc)
            await web.stop()
            self._publish_web(WebStatus(error=str(exc)))
            return False
        self.web = web
        self._publish_web(WebStatus(listening=True, url=self.web_url))
        return True

    async def _retry_web(self) -> None:
        lifecycle = self.settings.lifecycle
        backoff = Backoff(lifecycle.retry_initial_s, lifecycle.retry_max_s)
        while True:
            await asyncio.sleep(backoff.next_delay())
            try:
                if await self._try_web():
                    return
            except Exception as exc:  # reported, and tried again like a busy port
                logger.exception("the meeting site failed to start")
                self._publish_web(WebStatus(error=str(exc) or type(exc).__name__))

    def _publish_web(self, status: WebStatus) -> None:
        lifecycle = self.room.lifecycle.model_copy(update={"web": status})
        self.room.bus.publish("lifecycle", lifecycle)

    async def stop(self) -> None:
        """Undo `start`; does nothing if it did not start (the state dir may be another's)."""
        if not self._running:
            return
        self._running = False
        self.room.state_dir.remove(ENDPOINT_FILE)
        assert self.api is not None
        await self._bounded(self.appliance.stop(), "appliance")
        if self._web_retry is not None:
            self._web_retry.cancel()
            await asyncio.gather(self._web_retry, return_exceptions=True)
            self._web_retry = None
        if self.web is not None:
            await self._bounded(self.web.stop(), "meeting site")
        await self._bounded(self.api.stop(), "API server")
        await self._bounded(self.room.stop(), "room")

    async def _bounded(self, step: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await asyncio.wait_for(step, STOP_STEP_TIMEOUT_S)
        except TimeoutError:
            logger.error("%s did not stop within %.1f s", what, STOP_STEP_TIMEOUT_S)
