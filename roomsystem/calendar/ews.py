"""Exchange Server (on-premises) over EWS, with exchangelib.

The room mailbox is opened with delegate access or impersonation; autodiscover is not
used (the EWS address is configured) and the Exchange version is pinned, so the room
talks to exactly the server it was given. Recurring meetings come expanded by the
server's CalendarView. Incremental sync asks SyncFolderItems what changed since the last
sync state: a changed single meeting is taken from that answer alone; a changed series
means a new CalendarView. Throttling (ErrorServerBusy) is reported with the back-off the
server asked for, and the service waits at least that long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, tzinfo
from typing import Any, TypeVar

import requests
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

    async def open(self) -> None:
        secret = read_secret(self.settings.password_file, "calendar (EWS)")
        await self._call(self._connect, secret)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        def guarded() -> T:
            with _errors(self.settings.url):
                return function(*args)

        return await super()._call(guarded)

    def _connect(self, secret: str) -> None:
        settings = self.settings
        credentials: Credentials | OAuth2Credentials
        if settings.ews_auth == "oauth":
            credentials = OAuth2Credentials(
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

    async def close(self) -> None:
        account, self._account = self._account, None
        if account is not None:
            await super()._call(account.protocol.close)
        await super().close()

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
