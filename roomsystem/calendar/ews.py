"""Exchange Server (on-premises) over EWS, with exchangelib.

The room mailbox is opened with delegate access or impersonation; autodiscover is not
used (the EWS address is configured) and the Exchange version is pinned, so the room
talks to exactly the server it was given. Recurring meetings come expanded by the
server's CalendarView. Incremental sync asks SyncFolderItems what changed since the last
sync state: a changed single meeting is taken from that answer alone; a changed series
means a new CalendarView. Throttling (ErrorServerBusy) is reported with the back-off the
server asked for, and the service waits at least that long.

Where the server offers them, streaming notifications (Subscribe, GetStreamingEvents) tell
the room at once that the calendar changed, and it syncs then instead of at the next
poll. The stream holds an HTTP request open for minutes, so it has a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    FailFast,
    Identity,
    OAuth2Credentials,
    Version,
)
from exchangelib import errors as ews_errors
from exchangelib.items import SEND_TO_NONE
from exchangelib.protocol import BaseProtocol
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error, OAuth2Token
from requests_oauthlib import OAuth2Session

from roomsystem.calendar.backend import SyncResult, ThreadedBackend, read_secret
from roomsystem.calendar.links import find_join_links
from roomsystem.calendar.model import Booking, BookingStatus, CalendarError, StaleReason
from roomsystem.config import CalendarSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUILDS = {
    "2013": Build(15, 0),
    "2013_SP1": Build(15, 0, 847),
    "2016": Build(15, 1),
    "2019": Build(15, 2),
}
FIELDS = (
    "id",
    "changekey",
    "uid",
    "subject",
    "start",
    "end",
    "is_all_day",
    "sensitivity",
    "organizer",
    "location",
    "is_cancelled",
    "legacy_free_busy_status",
    "type",
    "recurrence_id",
)
SYNC_PAGE = 512
# How long one GetStreamingEvents request stays open (minutes, 1-30); then it is renewed.
STREAM_MINUTES = 30
# The scope exchangelib asks for; for Exchange Server with hybrid modern auth, the same.
OAUTH_SCOPE = "https://outlook.office365.com/.default"
STREAM_CLOSE_S = 2.0  # how long closing waits for the server to end the stream
CALENDAR_EVENTS = ("CreatedEvent", "DeletedEvent", "ModifiedEvent", "MovedEvent", "CopiedEvent")
AUTH_CODES = (
    ews_errors.UnauthorizedError,
    ews_errors.ErrorAccessDenied,
    ews_errors.ErrorImpersonateUserDenied,
    ews_errors.ErrorNonExistentMailbox,
)


@contextmanager
def _errors(where: str) -> Iterator[None]:
    """exchangelib's errors as `CalendarError` with the reason the panel shows."""
    try:
        yield
    except AUTH_CODES as exc:
        raise CalendarError(StaleReason.AUTH, f"{where}: {type(exc).__name__}: {exc}") from None
    except OAuth2Error as exc:
        # The sign-in's answer (e.g. invalid_client); the secret itself is never in it.
        raise CalendarError(
            StaleReason.AUTH, f"{where}: sign-in refused: {exc.error} {exc.description or ''}"
        ) from None
    except ews_errors.ErrorServerBusy as exc:
        back_off = float(exc.back_off) if exc.back_off else None
        raise CalendarError(
            StaleReason.THROTTLED, f"{where}: the server is busy (ErrorServerBusy)", back_off
        ) from None
    except ews_errors.ErrorCalendarViewRangeTooBig as exc:
        raise CalendarError(StaleReason.TOO_MANY, f"{where}: {exc}") from None
    except (ews_errors.ErrorTimeoutExpired, requests.Timeout) as exc:
        # exchangelib re-raises a refused or failed connection as ErrorTimeoutExpired.
        cause = exc.__context__
        if isinstance(cause, requests.ConnectionError) and not isinstance(cause, requests.Timeout):
            raise CalendarError(StaleReason.UNREACHABLE, f"{where}: {cause}") from None
        raise CalendarError(StaleReason.TIMEOUT, f"{where}: no answer in time") from None
    except (ews_errors.RateLimitError, ews_errors.ErrorTooManyObjectsOpened) as exc:
        raise CalendarError(StaleReason.THROTTLED, f"{where}: {exc}") from None
    except (
        ews_errors.ResponseMessageError,
        ews_errors.SOAPError,
        ews_errors.MalformedResponseError,
    ) as exc:
        raise CalendarError(
            StaleReason.BAD_RESPONSE, f"{where}: {type(exc).__name__}: {exc}"
        ) from None
    except (ews_errors.TransportError, requests.RequestException, OSError) as exc:
        raise CalendarError(StaleReason.UNREACHABLE, f"{where}: {exc}") from None
    except (ews_errors.EWSError, ValueError) as exc:
        # Malformed answers: lxml and exchangelib's parsers raise these.
        raise CalendarError(StaleReason.BAD_RESPONSE, f"{where}: {exc}") from None


def _aware(value: Any, zone: tzinfo) -> datetime:
    """An EWSDateTime (or EWSDate for all-day values) as a plain aware datetime in ``zone``."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=zone)
    return datetime.fromtimestamp(value.timestamp(), zone)


class _OAuth2Credentials(OAuth2Credentials):
    """Client credentials signed in at the configured authority (sovereign clouds, tests)."""

    def __init__(self, token_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._token_url = token_url

    @property
    def token_url(self) -> str:
        return self._token_url

    def session_params(self) -> dict[str, Any]:
        """No refresh-token grant (client credentials have none): an expired token is
        dropped, and exchangelib signs in again with the client credentials."""
        params = dict(super().session_params())
        for key in ("auto_refresh_url", "auto_refresh_kwargs", "token_updater"):
            params.pop(key, None)
        token = params.get("token")
        if token is not None and float(token.get("expires_at", 0)) <= time.time() + 30:
            params["token"] = None
        return params


# What to verify each server's certificate with, by origin: exchangelib builds its own
# HTTP sessions, so the trust is applied where they send.
_TRUST: dict[str, str | bool] = {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def trust_for(url: str, ca_file: Path | None, verify_tls: bool) -> None:
    """Verify ``url``'s server with ``ca_file`` (or not at all, if ``verify_tls`` is off)."""
    _TRUST[_origin(url)] = str(ca_file) if ca_file is not None and verify_tls else verify_tls


class _TrustAdapter(requests.adapters.HTTPAdapter):
    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        trust = _TRUST.get(_origin(request.url or ""))
        if trust is not None:
            kwargs["verify"] = trust
        return super().send(request, *args, **kwargs)


BaseProtocol.HTTP_ADAPTER_CLS = _TrustAdapter


class EwsBackend(ThreadedBackend):
    """A room mailbox's calendar on Exchange Server."""

    name = "ews"

    def __init__(
        self, settings: CalendarSettings, zone: tzinfo, room_hosts: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.settings = settings
        self.zone = zone
        self.room_hosts = room_hosts
        self._account: Any = None
        self._folder: Any = None
        self._sync_state: str | None = None
        self._window: tuple[datetime, datetime] | None = None
        self._by_uid: dict[str, list[Booking]] = {}
        self._uid_of_item: dict[str, str] = {}
        self._refs: dict[str, tuple[str, str]] = {}
        self.pushes = settings.ews_streaming
        self._stream_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._subscription: str | None = None
        self._closing = False
        self._streaming: concurrent.futures.Future[None] | None = None

    async def open(self) -> None:
        secret = read_secret(self.settings.password_file, "calendar (EWS)")
        await self._call(self._connect, secret)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        def guarded() -> T:
            with _errors(self.settings.url):
                try:
                    return function(*args)
                except ews_errors.UnauthorizedError:
                    if not self._renew_token():
                        raise
                    return function(*args)

        return await super()._call(guarded)

    def _connect(self, secret: str) -> None:
        settings = self.settings
        credentials: Credentials | OAuth2Credentials
        trust_for(settings.url, settings.ca_file, settings.verify_tls)
        if settings.ews_auth == "oauth":
            token_url = (
                f"{settings.graph_authority.rstrip('/')}/{settings.graph_tenant}/oauth2/v2.0/token"
            )
            trust_for(token_url, settings.ca_file, settings.verify_tls)
            credentials = _OAuth2Credentials(
                token_url,
                access_token=self._first_token(token_url, secret),
                client_id=settings.graph_client_id,
                client_secret=secret,
                tenant_id=settings.graph_tenant,
                identity=Identity(primary_smtp_address=settings.mailbox),
            )
        else:
            credentials = Credentials(settings.username, secret)
        config = Configuration(
            service_endpoint=settings.url,
            credentials=credentials,
            auth_type={"basic": BASIC, "ntlm": NTLM, "oauth": OAUTH2}[settings.ews_auth],
            version=Version(build=BUILDS[settings.ews_version]),
            # Throttling is reported, not slept through in this thread: the service backs off.
            retry_policy=FailFast(),
            max_connections=2,
        )
        account = Account(
            settings.mailbox,
            config=config,
            autodiscover=False,
            access_type=IMPERSONATION if settings.ews_access == "impersonation" else DELEGATE,
            default_timezone=EWSTimeZone.from_zoneinfo(self.zone),
        )
        account.protocol.TIMEOUT = settings.timeout_s
        self._folder = account.calendar
        self._account = account

    def _renew_token(self) -> bool:
        """After a 401 with OAuth: drop the token (it expired or was revoked) and the
        sessions holding it, so that the next request signs in again. False: not OAuth."""
        account = self._account
        if self.settings.ews_auth != "oauth" or account is None:
            return False
        account.protocol.credentials.access_token = None
        account.protocol.close()
        logger.info("EWS: the OAuth token was refused; signing in again")
        return True

    def _first_token(self, token_url: str, secret: str) -> OAuth2Token:
        """Sign in before exchangelib does: its session is left open when sign-in fails.

        exchangelib renews the token itself later, with the same client credentials.
        """
        client = BackendApplicationClient(client_id=self.settings.graph_client_id)
        with OAuth2Session(client=client) as session:
            token = session.fetch_token(
                token_url=token_url,
                client_id=self.settings.graph_client_id,
                client_secret=secret,
                include_client_id=True,  # in the form body, as Microsoft's platform expects
                scope=[OAUTH_SCOPE],
                timeout=self.settings.timeout_s,
                verify=_TRUST.get(_origin(token_url), True),
            )
        return OAuth2Token(token)

    async def close(self) -> None:
        self._closing = True
        if self._subscription is not None:
            # Ending the subscription makes the server close the open stream.
            with suppress(CalendarError):
                await self._call(self._unsubscribe, self._subscription)
        streaming = self._streaming
        if streaming is not None and not streaming.done():
            # Let the stream hand its connection back before the connections are closed.
            with suppress(BaseException):
                await asyncio.wait_for(asyncio.wrap_future(streaming), STREAM_CLOSE_S)
        stream, self._stream_executor = self._stream_executor, None
        if stream is not None:
            stream.shutdown(wait=False, cancel_futures=True)
        account, self._account = self._account, None
        if account is not None:
            await super()._call(account.protocol.close)
        await super().close()

    # -- streaming notifications

    async def watch(self, changed: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()

        def notify() -> None:
            with suppress(RuntimeError):  # the loop closed while the stream was open
                loop.call_soon_threadsafe(changed)

        subscription = await self._call(self._subscribe)
        self._subscription = subscription
        try:
            if self._stream_executor is None:
                self._stream_executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="calendar ews-stream"
                )
            self._streaming = self._stream_executor.submit(self._stream, subscription, notify)
            await asyncio.wrap_future(self._streaming)
        finally:
            if self._subscription == subscription and not self._closing:
                self._subscription = None
                with suppress(CalendarError):
                    await asyncio.shield(self._call(self._unsubscribe, subscription))

    def _subscribe(self) -> str:
        subscription: str = self.folder.subscribe_to_streaming(event_types=CALENDAR_EVENTS)
        logger.info("EWS streaming notifications: subscribed")
        return subscription

    def _unsubscribe(self, subscription: str) -> None:
        if self._subscription == subscription:
            self._subscription = None
        self.folder.unsubscribe(subscription)

    def _stream(self, subscription: str, notify: Callable[[], None]) -> None:
        with _errors(self.settings.url):
            for notification in self.folder.get_streaming_events(
                subscription, connection_timeout=STREAM_MINUTES
            ):
                if self._closing:
                    return
                if notification.events:
                    notify()

    @property
    def folder(self) -> Any:
        if self._folder is None:
            raise CalendarError(StaleReason.NOT_SYNCED, "the EWS mailbox is not open")
        return self._folder

    # -- sync

    async def sync(self, start: datetime, end: datetime, full: bool = False) -> SyncResult:
        return await self._call(self._sync, start, end, full)

    def _sync(self, start: datetime, end: datetime, full: bool) -> SyncResult:
        if full or self._sync_state is None or self._window != (start, end):
            return self._full(start, end)
        changes = list(
            self.folder.sync_items(
                sync_state=self._sync_state, only_fields=FIELDS, max_changes_returned=SYNC_PAGE
            )
        )
        if any(self._needs_view(change, item) for change, item in changes):
            return self._full(start, end)
        for change, item in changes:
            self._apply_change(change, item, start, end)
        self._sync_state = self.folder.item_sync_state
        return SyncResult(self._all_bookings(), full=False, fetched=len(changes))

    def _full(self, start: datetime, end: datetime) -> SyncResult:
        # The sync state first: a change made during the view is then seen next time.
        self._uid_of_item = {}
        for change, item in self.folder.sync_items(
            only_fields=("id", "uid"), max_changes_returned=SYNC_PAGE
        ):
            if change == "create":
                self._uid_of_item[item.id] = item.uid
        self._sync_state = self.folder.item_sync_state
        view = self.folder.view(
            start=EWSDateTime.from_datetime(start),
            end=EWSDateTime.from_datetime(end),
            max_items=self.settings.max_bookings + 1,
        ).only(*FIELDS)
        self._by_uid = {}
        self._refs = {}
        count = 0
        for item in view:
            count += 1
            booking = self._booking(item)
            self._by_uid.setdefault(item.uid, []).append(booking)
        self._window = (start, end)
        return SyncResult(self._all_bookings(), full=True, fetched=count)

    def _needs_view(self, change: str, item: Any) -> bool:
        """A series changed, or something the room never saw: only a new view tells."""
        if change == "delete":
            return item.id not in self._uid_of_item
        if change in ("create", "update"):
            return bool(item.type != "Single")
        return False

    def _apply_change(self, change: str, item: Any, start: datetime, end: datetime) -> None:
        if change == "delete":
            self._by_uid.pop(self._uid_of_item.pop(item.id), None)
        elif change in ("create", "update"):
            self._uid_of_item[item.id] = item.uid
            booking = self._booking(item)
            self._by_uid[item.uid] = [booking] if booking.overlaps(start, end) else []

    def _all_bookings(self) -> list[Booking]:
        bookings = [b for group in self._by_uid.values() for b in group]
        return sorted(bookings, key=lambda b: (b.start, b.id))

    def _booking(self, item: Any) -> Booking:
        recurring = item.type in ("Occurrence", "Exception", "RecurringMaster")
        occurrence = _aware(item.recurrence_id or item.start, self.zone) if recurring else None
        booking_id = f"{item.uid}/{occurrence.isoformat()}" if occurrence else str(item.uid)
        status = BookingStatus.CONFIRMED
        if item.legacy_free_busy_status == "Tentative":
            status = BookingStatus.TENTATIVE
        if item.is_cancelled:
            status = BookingStatus.CANCELLED
        organizer = item.organizer
        location = item.location or ""
        self._refs[booking_id] = (item.id, item.changekey)
        return Booking(
            id=booking_id,
            subject=item.subject or "",
            organizer=(organizer.name or organizer.email_address or "") if organizer else "",
            start=_aware(item.start, self.zone),
            end=_aware(item.end, self.zone),
            location=location,
            private=item.sensitivity in ("Private", "Confidential"),
            all_day=bool(item.is_all_day),
            status=status,
            series_id=str(item.uid) if recurring else None,
            occurrence=occurrence,
            join_links=find_join_links(location, room_hosts=self.room_hosts),
        )

    # -- the room's decisions

    def _item(self, booking: Booking, **fields: Any) -> Any:
        ref = self._refs.get(booking.id)
        if ref is None:
            raise CalendarError(StaleReason.BAD_RESPONSE, f"no EWS item known for {booking.id!r}")
        item_id, changekey = ref
        return CalendarItem(
            account=self._account, folder=self.folder, id=item_id, changekey=changekey, **fields
        )

    async def book(self, subject: str, start: datetime, end: datetime) -> Booking:
        def create() -> Booking:
            item = CalendarItem(
                account=self._account,
                folder=self.folder,
                subject=subject,
                start=EWSDateTime.from_datetime(start),
                end=EWSDateTime.from_datetime(end),
                legacy_free_busy_status="Busy",
            )
            item.save(send_meeting_invitations=SEND_TO_NONE)
            # Bookings are named by UID, which CreateItem does not answer with.
            (stored,) = self._account.fetch(ids=[(item.id, item.changekey)], only_fields=FIELDS)
            if isinstance(stored, Exception):
                raise stored
            return self._booking(stored)

        return await self._call(create)

    async def set_end(self, booking: Booking, end: datetime) -> None:
        def update() -> None:
            item = self._item(
                booking,
                start=EWSDateTime.from_datetime(booking.start),
                end=EWSDateTime.from_datetime(end),
            )
            item.save(update_fields=["end"], send_meeting_invitations=SEND_TO_NONE)
            self._refs[booking.id] = (item.id, item.changekey)

        await self._call(update)

    async def release(self, booking: Booking, message: str) -> None:
        await self._call(lambda: self._item(booking).decline(body=message))

    async def end_series(self, booking: Booking, message: str) -> None:
        def decline_series() -> None:
            master = self._item(booking).recurring_master()
            master.refresh()
            master.decline(body=message)

        await self._call(decline_series)
