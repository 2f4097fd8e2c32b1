"""The daemon: one room and the API that serves it, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any

from roomsystem.api.openapi import build_openapi
from roomsystem.api.server import ApiServer
from roomsystem.config import Settings, split_listen
from roomsystem.errors import RoomError
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
        self.api: ApiServer | None = None
        self.url = ""
        self._running = False

    async def start(self) -> None:
        """Take the state directory, answer on the API, then run the lifecycle."""
        self.room.open()
        try:
            commands = self.room.commands()
            openapi = build_openapi(commands)
            self.api = ApiServer(
                self.room.bus,
                token=self.room.api_token,
                commands=commands,
                max_body_bytes=self.settings.api.max_body_bytes,
                openapi=lambda: openapi,
            )
            host, port = split_listen(self.settings.api.listen)
            try:
                self.url = await self.api.start(host, port)
            except OSError as exc:
                raise ListenError(str(exc.strerror or exc)) from None
            self.room.state_dir.save(ENDPOINT_FILE, Endpoint(url=self.url, pid=os.getpid()))
        except BaseException:
            if self.api is not None:
                await self.api.stop()
            self.room.state_dir.unlock()
            raise
        self.room.start()
        self._running = True

    async def stop(self) -> None:
        """Undo `start`; does nothing if it did not start (the state dir may be another's)."""
        if not self._running:
            return
        self._running = False
        self.room.state_dir.remove(ENDPOINT_FILE)
        assert self.api is not None
        await self._bounded(self.api.stop(), "API server")
        await self._bounded(self.room.stop(), "room")

    async def _bounded(self, step: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await asyncio.wait_for(step, STOP_STEP_TIMEOUT_S)
        except TimeoutError:
            logger.error("%s did not stop within %.1f s", what, STOP_STEP_TIMEOUT_S)
