"""What every calendar backend offers the booking service, and the helpers they share."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from roomsystem.calendar.model import Booking
from roomsystem.errors import ConfigError

PASSWORD_ENV = "ROOMSYSTEM_CALENDAR_PASSWORD"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The bookings in the window asked for; ``full`` is False for an incremental sync."""

    bookings: list[Booking]
    full: bool
    fetched: int


class CalendarBackend(ABC):
    """A calendar the room reads its bookings from and writes its decisions to.

    Errors are `roomsystem.calendar.model.CalendarError` with a `StaleReason`; anything
    else escaping a backend is a bug.
    """

    name: str = "backend"
    # True when `watch` can tell the room about changes as they happen (server push).
    pushes: bool = False

    async def open(self) -> None:  # noqa: B027 - most backends connect lazily
        """Prepare to talk to the calendar (create the database, read credentials)."""

    @abstractmethod
    async def sync(self, start: datetime, end: datetime, full: bool = False) -> SyncResult:
        """The bookings overlapping ``start``..``end``; incremental where the server can."""

    @abstractmethod
    async def book(self, subject: str, start: datetime, end: datetime) -> Booking:
        """Book the room from ``start`` to ``end`` (a walk-up booking)."""

    @abstractmethod
    async def set_end(self, booking: Booking, end: datetime) -> None:
        """Move the booking's end: later to extend it, earlier to end it early."""

    @abstractmethod
    async def release(self, booking: Booking, message: str) -> None:
        """Give the slot back (nobody came): decline or cancel it, telling the organizer."""

    @abstractmethod
    async def end_series(self, booking: Booking, message: str) -> None:
        """Decline the rest of ``booking``'s series, from ``booking`` on."""

    async def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever the server reports a change, until the stream ends.

        Only called when `pushes` is True. Returns when the server closed the stream in
        order (the room subscribes again); raises `CalendarError` when the server refused
        or the stream broke (the room polls and tries again after a back-off).
        """
        raise NotImplementedError(f"{self.name} has no push")

    async def check_in(self, booking: Booking, at: datetime) -> None:  # noqa: B027
        """Record a check-in where the calendar can hold it; most keep it in the room."""

    async def close(self) -> None:  # noqa: B027
        """Release connections and threads."""


class ThreadedBackend(CalendarBackend):
    """A backend built on a blocking client library, run in one named worker thread.

    One thread keeps the client's connection pool and session in a single thread, and
    `close` ends it so that nothing is left running.
    """

    def __init__(self) -> None:
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"calendar {self.name}"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Not waiting: a call stuck on a slow server ends on its own timeout, and then
            # the thread ends, without holding up the room's shutdown.
            executor.shutdown(wait=False, cancel_futures=True)


def read_secret(path: Path | None, what: str) -> str:
    """A password or client secret from a file only its owner can read, or the environment."""
    if path is None:
        secret = os.environ.get(PASSWORD_ENV, "")
        if not secret:
            raise ConfigError(f"{what}: set calendar.password_file or {PASSWORD_ENV}")
        return secret
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise ConfigError(
                f"calendar.password_file {path}: readable by others (mode {mode & 0o777:o});"
                " make it 0600"
            )
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"calendar.password_file {path}: cannot read: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"calendar.password_file {path}: is empty")
    return secret
