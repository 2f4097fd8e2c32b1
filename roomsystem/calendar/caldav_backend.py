"""CalDAV calendars (Nextcloud, Radicale, SOGo, ...) with the caldav library.

Incremental sync uses the collection's sync-token (RFC 6578): after the first full read,
only the objects added, changed or removed since are fetched, in one multiget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import tzinfo
from typing import Any, TypeVar

import icalendar
import niquests
from caldav.davclient import DAVClient
from caldav.lib import error as dav_error

from roomsystem.calendar import ics
from roomsystem.calendar.backend import read_secret
from roomsystem.calendar.model import CalendarError, StaleReason
from roomsystem.calendar.objects import ObjectBackend
from roomsystem.config import CalendarSettings

logger = logging.getLogger(__name__)

MULTIGET_CHUNK = 200
T = TypeVar("T")


@contextmanager
def _errors(url: str) -> Iterator[None]:
    """The caldav and HTTP errors as `CalendarError` with a reason the panel can show."""
    try:
        yield
    except dav_error.AuthorizationError as exc:
        raise CalendarError(StaleReason.AUTH, f"{url}: not allowed: {exc.reason}") from None
    except dav_error.RateLimitError as exc:
        raise CalendarError(
            StaleReason.THROTTLED, f"{url}: too many requests", exc.retry_after_seconds
        ) from None
    except dav_error.DAVError as exc:
        raise CalendarError(StaleReason.BAD_RESPONSE, f"{url}: {exc}") from None
    except niquests.exceptions.Timeout:
        raise CalendarError(StaleReason.TIMEOUT, f"{url}: no answer in time") from None
    except OSError as exc:
        # niquests' connection errors are OSErrors too: refused, reset, DNS failures.
        raise CalendarError(StaleReason.UNREACHABLE, f"{url}: {exc}") from None
    except ValueError as exc:
        raise CalendarError(StaleReason.BAD_RESPONSE, f"{url}: unreadable answer: {exc}") from None


def _key(obj: Any) -> str:
    return str(obj.url.canonical())


class CalDavBackend(ObjectBackend):
    """One CalDAV calendar collection, named by its URL."""

    name = "caldav"

    def __init__(
        self, settings: CalendarSettings, zone: tzinfo, room_hosts: tuple[str, ...] = ()
    ) -> None:
        super().__init__(zone, room_hosts)
        self.settings = settings
        self.url = settings.url
        # caldav types its methods as sync-or-async unions; this client is the sync one.
        self._calendar: Any = None
        self._client: DAVClient | None = None
        self._sync_token: str | None = None
        self._resources: dict[str, Any] = {}

    async def open(self) -> None:
        password = None
        if self.settings.username:
            password = read_secret(self.settings.password_file, "calendar (CalDAV)")
        self._calendar = await self._call(self._connect, password)

    def _connect(self, password: str | None) -> Any:
        client = DAVClient(
            url=self.url,
            username=self.settings.username or None,
            password=password,
            timeout=max(1, round(self.settings.timeout_s)),
            ssl_verify_cert=str(self.settings.ca_file)
            if self.settings.ca_file
            else self.settings.verify_tls,
            enable_rfc6764=False,  # the URL is given: no DNS service discovery
            require_tls=False,  # the URL says http or https; a test server may be http
        )
        self._client = client
        return client.calendar(url=self.url)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._calendar = None
        if client is not None:
            # Ends the HTTP session and its idle-connection watcher thread.
            await super()._call(client.close)
        await super().close()

    @property
    def calendar(self) -> Any:
        if self._calendar is None:
            raise CalendarError(StaleReason.NOT_SYNCED, "the CalDAV calendar is not open")
        return self._calendar

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        def guarded() -> T:
            with _errors(self.url):
                return function(*args)

        return await super()._call(guarded)

    # -- storage (worker thread)

    def _changes(self, full: bool) -> tuple[bool, dict[str, tuple[str, str] | None]]:
        token = None if full else self._sync_token
        collection = self.calendar.objects_by_sync_token(sync_token=token, load_objects=False)
        changes: dict[str, tuple[str, str] | None] = {
            str(url): None for url in collection.deleted_urls
        }
        wanted = [obj.url for obj in collection.objects if _key(obj) not in changes]
        for first in range(0, len(wanted), MULTIGET_CHUNK):
            for obj in self.calendar.multiget(wanted[first : first + MULTIGET_CHUNK]):
                etag = str(obj.props.get("{DAV:}getetag") or hash(obj.data))
                changes[_key(obj)] = (etag, obj.data)
        self._sync_token = collection.sync_token
        return token is None, changes

    def _read(self, uid: str) -> tuple[str, icalendar.Calendar]:
        try:
            obj = self.calendar.object_by_uid(uid)
        except dav_error.NotFoundError:
            raise CalendarError(StaleReason.BAD_RESPONSE, f"{self.url}: no event {uid!r}") from None
        key = _key(obj)
        self._resources[key] = obj
        return key, ics.parse_calendar(obj.data, key)

    def _write(self, key: str, calendar: icalendar.Calendar) -> None:
        obj = self._resources.pop(key)
        obj.data = calendar.to_ical().decode()
        obj.save()

    def _create(self, uid: str, calendar: icalendar.Calendar) -> None:
        self.calendar.save_event(ical=calendar.to_ical().decode())
