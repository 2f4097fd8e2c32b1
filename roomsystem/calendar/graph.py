"""Exchange Online over Microsoft Graph: app-only sign-in with msal, calendarView delta.

Microsoft blocks EWS in Exchange Online from October 2026, so cloud room mailboxes are
read through Graph. The app signs in with the client-credentials grant (msal caches and
renews the token); the room's calendar is read with ``calendarView/delta``, which comes
with recurring meetings expanded and, after the first full read, hands back a delta link
that returns only what changed. Throttling (429, 503) is reported with the server's
Retry-After.

The room answers as itself: it accepts new bookings when ``accept_bookings`` is set,
declines meetings others organised (a no-show), and cancels the ones it organised itself
(walk-up bookings), because Graph lets only the organizer cancel and no organizer respond.
"""

from __future__ import annotations

import functools
import logging
import ssl
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import quote

import aiohttp
import msal
import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roomsystem.calendar.backend import SyncResult, ThreadedBackend, read_secret
from roomsystem.calendar.links import find_join_links
from roomsystem.calendar.model import (
    Booking,
    BookingStatus,
    CalendarError,
    JoinLink,
    StaleReason,
)
from roomsystem.config import CalendarSettings

logger = logging.getLogger(__name__)

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
SCOPE = "https://graph.microsoft.com/.default"
PAGE_SIZE = 200
MAX_PAGES = 1000
# The room's answer is still open: Graph's responseStatus values that call for an accept.
UNANSWERED = frozenset({"none", "notResponded", "tentativelyAccepted"})
ACCEPT_COMMENT = "The room is booked for you."


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Address(_Model):
    name: str = ""
    address: str = ""


class _Recipient(_Model):
    emailAddress: _Address = _Address()


class _Time(_Model):
    dateTime: str
    timeZone: str = "UTC"


class _Location(_Model):
    displayName: str = ""


class _Body(_Model):
    content: str = ""


class _OnlineMeeting(_Model):
    joinUrl: str | None = None


class _ResponseStatus(_Model):
    response: str = "none"


class GraphEvent(_Model):
    """The fields of a Graph event the room reads; others are ignored."""

    id: str = Field(min_length=1)
    removed: dict[str, Any] | None = Field(default=None, alias="@removed")
    subject: str | None = None
    start: _Time | None = None
    end: _Time | None = None
    isAllDay: bool = False
    isCancelled: bool = False
    sensitivity: str = "normal"
    showAs: str = "busy"
    type: str = "singleInstance"
    seriesMasterId: str | None = None
    originalStart: str | None = None
    organizer: _Recipient | None = None
    attendees: list[_Recipient] = Field(default_factory=list)
    location: _Location | None = None
    body: _Body | None = None
    onlineMeeting: _OnlineMeeting | None = None
    responseStatus: _ResponseStatus | None = None


class GraphPage(_Model):
    value: list[GraphEvent]
    next_link: str | None = Field(default=None, alias="@odata.nextLink")
    delta_link: str | None = Field(default=None, alias="@odata.deltaLink")


def parse_page(data: Any, where: str) -> GraphPage:
    """A page of Graph's answer, or `CalendarError` saying where the JSON went wrong."""
    try:
        return GraphPage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise CalendarError(
            StaleReason.BAD_RESPONSE, f"{where}: unexpected JSON at {at}: {first['msg']}"
        ) from None


def _graph_time(value: _Time) -> datetime:
    """Graph's dateTime (no offset; we ask for UTC with the Prefer header) as aware UTC."""
    if value.timeZone.upper() not in ("UTC", "ETC/UTC"):
        raise ValueError(f"expected times in UTC, got time zone {value.timeZone!r}")
    text = value.dateTime.rstrip("Z")
    moment = datetime.fromisoformat(text[:26])  # Graph sends 7 fractional digits
    return moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")


class GraphBackend(ThreadedBackend):
    """A room mailbox in Exchange Online; msal runs in the worker thread, Graph on the loop."""

    name = "graph"

    def __init__(
        self, settings: CalendarSettings, zone: tzinfo, room_hosts: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.settings = settings
        self.zone = zone
        self.room_hosts = room_hosts
        self.root = (settings.url or GRAPH_ROOT).rstrip("/")
        self._app: msal.ConfidentialClientApplication | None = None
        self._session: aiohttp.ClientSession | None = None
        self._http: requests.Session | None = None
        self._delta_link: str | None = None
        self._window: tuple[datetime, datetime] | None = None
        self._events: dict[str, Booking] = {}
        # Events the room organised itself (walk-up bookings): cancelled, not declined.
        self._own: set[str] = set()
        self._to_accept: set[str] = set()

    @property
    def _user(self) -> str:
        return f"{self.root}/users/{quote(self.settings.mailbox)}"

    async def open(self) -> None:
        secret = read_secret(self.settings.password_file, "calendar (Graph)")
        verify: bool | str = self.settings.verify_tls
        if self.settings.ca_file is not None:
            verify = str(self.settings.ca_file)
        authority = f"{self.settings.graph_authority.rstrip('/')}/{self.settings.graph_tenant}"

        # Passed with every request: a session-wide verify loses to REQUESTS_CA_BUNDLE.
        http = requests.Session()
        http.request = functools.partial(  # type: ignore[method-assign]
            http.request, timeout=self.settings.timeout_s, verify=verify
        )
        self._http = http

        def make_app() -> msal.ConfidentialClientApplication:
            try:
                return msal.ConfidentialClientApplication(
                    self.settings.graph_client_id,
                    client_credential=secret,
                    authority=authority,
                    http_client=http,
                    # The authority is configured: no instance discovery at Microsoft's hosts.
                    instance_discovery=False,
                )
            except ValueError as exc:
                raise CalendarError(StaleReason.AUTH, f"{authority}: {exc}") from None
            except requests.RequestException as exc:
                raise CalendarError(StaleReason.UNREACHABLE, f"{authority}: {exc}") from None

        self._app = await self._call(make_app)
        ssl_context: ssl.SSLContext | bool = self.settings.verify_tls
        if self.settings.ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(self.settings.ca_file))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            connector=aiohttp.TCPConnector(ssl=ssl_context),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        http, self._http = self._http, None
        if http is not None:
            http.close()
        await super().close()

    # -- HTTP

    async def _token(self) -> str:
        app = self._app
        if app is None:
            raise CalendarError(StaleReason.NOT_SYNCED, "Graph is not open")

        def acquire() -> dict[str, Any]:
            try:
                return dict(app.acquire_token_for_client(scopes=[SCOPE]) or {})
            except requests.RequestException as exc:
                raise CalendarError(StaleReason.UNREACHABLE, f"sign-in: {exc}") from None
            except ValueError as exc:
                raise CalendarError(StaleReason.AUTH, f"sign-in: {exc}") from None

        result = await self._call(acquire)
        token = result.get("access_token")
        if not isinstance(token, str):
            # msal's error answer: never log the secret, only what the server said.
            error = result.get("error", "no token")
            description = str(result.get("error_description", "")).splitlines()[:1]
            raise CalendarError(
                StaleReason.AUTH, f"sign-in refused: {error} {' '.join(description)}"
            )
        return token

    async def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise CalendarError(StaleReason.NOT_SYNCED, "Graph is not open")
        headers = {
            "Authorization": f"Bearer {await self._token()}",
            "Prefer": f'outlook.timezone="UTC", odata.maxpagesize={PAGE_SIZE}',
        }
        where = url.split("?")[0]
        try:
            async with self._session.request(method, url, json=body, headers=headers) as response:
                if response.status >= 400:
                    raise await self._http_error(response, where)
                if response.status in (202, 204):
                    return None
                return await response.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:
            raise CalendarError(StaleReason.UNREACHABLE, f"{where}: {exc}") from None
        except TimeoutError:
            raise CalendarError(StaleReason.TIMEOUT, f"{where}: no answer in time") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise CalendarError(StaleReason.BAD_RESPONSE, f"{where}: {exc}") from None

    async def _http_error(self, response: aiohttp.ClientResponse, where: str) -> CalendarError:
        try:
            error = (await response.json(content_type=None)).get("error", {})
            detail = f"{error.get('code', '')}: {error.get('message', '')}"
        except (ValueError, AttributeError, aiohttp.ClientError):
            detail = response.reason or ""
        message = f"{where}: HTTP {response.status} {detail}".rstrip(": ")
        if response.status in (401, 403):
            return CalendarError(StaleReason.AUTH, message)
        if response.status in (429, 503):
            retry = response.headers.get("Retry-After", "")
            return CalendarError(
                StaleReason.THROTTLED, message, float(retry) if retry.isdigit() else None
            )
        if response.status == 410:
            return CalendarError(StaleReason.NOT_SYNCED, message)  # the delta link expired
        return CalendarError(StaleReason.BAD_RESPONSE, message)

    # -- sync

    async def sync(self, start: datetime, end: datetime, full: bool = False) -> SyncResult:
        incremental = not full and self._delta_link is not None and self._window == (start, end)
        if incremental:
            assert self._delta_link is not None
            try:
                return await self._read(self._delta_link, start, end, full=False)
            except CalendarError as exc:
                if exc.reason is not StaleReason.NOT_SYNCED:
                    raise
                logger.info("Graph delta link expired; reading the calendar again")
        url = f"{self._user}/calendarView/delta?startDateTime={_iso(start)}&endDateTime={_iso(end)}"
        return await self._read(url, start, end, full=True)

    async def _read(self, url: str, start: datetime, end: datetime, full: bool) -> SyncResult:
        events = {} if full else dict(self._events)
        fetched = 0
        for _ in range(MAX_PAGES):
            page = parse_page(await self._request("GET", url), url.split("?")[0])
            for event in page.value:
                fetched += 1
                if event.removed is not None:
                    events.pop(event.id, None)
                    self._to_accept.discard(event.id)
                else:
                    events[event.id] = self.booking(event)
                    self._note_answer(event)
            if page.delta_link:
                self._delta_link = page.delta_link
                break
            if not page.next_link:
                raise CalendarError(StaleReason.BAD_RESPONSE, "Graph delta ended without a link")
            url = page.next_link
        else:
            raise CalendarError(StaleReason.TOO_MANY, f"more than {MAX_PAGES} pages of changes")
        self._events = events
        self._window = (start, end)
        if self.settings.accept_bookings:
            await self._accept_pending()
        bookings = sorted(events.values(), key=lambda b: (b.start, b.id))
        return SyncResult(bookings, full=full, fetched=fetched)

    def _note_answer(self, event: GraphEvent) -> None:
        """Remember whether the room organised ``event`` and whether it still owes an answer."""
        organizer = event.organizer.emailAddress.address if event.organizer else ""
        own = organizer.casefold() == self.settings.mailbox.casefold()
        answer = event.responseStatus.response if event.responseStatus else "none"
        if own or answer == "organizer":
            self._own.add(event.id)
        else:
            self._own.discard(event.id)
        pending = not own and answer in UNANSWERED and not event.isCancelled
        (self._to_accept.add if pending else self._to_accept.discard)(event.id)

    async def _accept_pending(self) -> None:
        """Accept the bookings the room has not answered yet (the room auto-accepts).

        A refusal is logged and retried at the next sync; it does not fail the sync.
        """
        for event_id in sorted(self._to_accept):
            try:
                await self.accept(event_id, ACCEPT_COMMENT)
            except CalendarError as exc:
                logger.warning("could not accept %s: %s", event_id, exc)
                continue
            self._to_accept.discard(event_id)

    def booking(self, event: GraphEvent) -> Booking:
        """``event`` as a booking, or `CalendarError` naming what is wrong with it."""
        try:
            return self._booking(event)
        except ValueError as exc:  # pydantic's ValidationError too: e.g. an end before start
            raise CalendarError(
                StaleReason.BAD_RESPONSE, f"Graph event {event.id!r}: {exc}"
            ) from None

    def _booking(self, event: GraphEvent) -> Booking:
        if event.start is None or event.end is None:
            raise CalendarError(StaleReason.BAD_RESPONSE, f"Graph event {event.id!r} has no time")
        try:
            start, end = _graph_time(event.start), _graph_time(event.end)
            occurrence = None
            if event.type in ("occurrence", "exception"):
                original = event.originalStart
                occurrence = _graph_time(_Time(dateTime=original)) if original else start
        except ValueError as exc:
            raise CalendarError(
                StaleReason.BAD_RESPONSE, f"Graph event {event.id!r}: {exc}"
            ) from None
        status = BookingStatus.CONFIRMED
        if event.showAs == "tentative":
            status = BookingStatus.TENTATIVE
        if event.isCancelled:
            status = BookingStatus.CANCELLED
        location = event.location.displayName if event.location else ""
        body = event.body.content if event.body else ""
        links = find_join_links(location, body, room_hosts=self.room_hosts)
        join_url = event.onlineMeeting.joinUrl if event.onlineMeeting else None
        if join_url and all(link.url != join_url for link in links):
            found = find_join_links(join_url, room_hosts=self.room_hosts)
            links = found + links if found else (JoinLink(kind="teams", url=join_url), *links)
        organizer = event.organizer.emailAddress if event.organizer else _Address()
        return Booking(
            id=event.id,
            subject=event.subject or "",
            organizer=organizer.name or organizer.address,
            attendees=tuple(a.emailAddress.name or a.emailAddress.address for a in event.attendees),
            start=start.astimezone(self.zone),
            end=end.astimezone(self.zone),
            location=location,
            private=event.sensitivity in ("private", "confidential"),
            all_day=event.isAllDay,
            status=status,
            series_id=event.seriesMasterId,
            occurrence=occurrence.astimezone(self.zone) if occurrence else None,
            join_links=links,
        )

    # -- the room's decisions

    async def book(self, subject: str, start: datetime, end: datetime) -> Booking:
        body = {
            "subject": subject,
            "start": {"dateTime": _iso(start), "timeZone": "UTC"},
            "end": {"dateTime": _iso(end), "timeZone": "UTC"},
            "showAs": "busy",
        }
        created = await self._request("POST", f"{self._user}/events", body)
        try:
            event = GraphEvent.model_validate(created)
        except ValidationError as exc:
            raise CalendarError(
                StaleReason.BAD_RESPONSE, f"created event: {exc.errors()[0]['msg']}"
            ) from None
        self._own.add(event.id)
        return self.booking(event)

    async def set_end(self, booking: Booking, end: datetime) -> None:
        body = {"end": {"dateTime": _iso(end), "timeZone": "UTC"}}
        await self._request("PATCH", f"{self._user}/events/{quote(booking.id)}", body)

    async def release(self, booking: Booking, message: str) -> None:
        await self._give_back(booking.id, message)

    async def end_series(self, booking: Booking, message: str) -> None:
        await self._give_back(booking.series_id or booking.id, message)

    async def _give_back(self, event_id: str, message: str) -> None:
        """Free the slot: cancel what the room organised, decline what others did."""
        if event_id in self._own:
            await self.cancel(event_id, message)
        else:
            await self.decline(event_id, message)

    async def accept(self, event_id: str, comment: str) -> None:
        """Accept a meeting as the room (Graph ``event: accept``), telling the organizer."""
        await self._respond(event_id, "accept", {"comment": comment, "sendResponse": True})

    async def decline(self, event_id: str, comment: str) -> None:
        """Decline a meeting as the room (Graph ``event: decline``), telling the organizer."""
        await self._respond(event_id, "decline", {"comment": comment, "sendResponse": True})

    async def cancel(self, event_id: str, comment: str) -> None:
        """Cancel a meeting the room organised (Graph ``event: cancel``), telling attendees."""
        await self._respond(event_id, "cancel", {"comment": comment})
        self._own.discard(event_id)

    async def _respond(self, event_id: str, action: str, body: dict[str, Any]) -> None:
        await self._request("POST", f"{self._user}/events/{quote(event_id)}/{action}", body)
