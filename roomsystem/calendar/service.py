"""The calendar service: syncs the room's bookings and runs check-in, release and walk-up.

The last good agenda is kept in the state directory, so that after a restart or during a
server outage the room still shows it, with the reason it may be stale. Decisions the room
makes (check-in, release, walk-up, extend, end early) are written to the backend at once
and shown in the snapshot without waiting for the next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from roomsystem.bus import StateBus
from roomsystem.calendar.backend import CalendarBackend
from roomsystem.calendar.local import LocalBackend
from roomsystem.calendar.model import Booking, BookingStatus, CalendarError, StaleReason
from roomsystem.calendar.state import PRIVATE_SUBJECT, BookingEntry, CalendarState
from roomsystem.commands import Arguments, Command, CommandError, NoArguments
from roomsystem.config import CalendarSettings
from roomsystem.errors import RoomError
from roomsystem.lifecycle import Backoff, Phase, Service
from roomsystem.meeting.state import MeetingState
from roomsystem.statedir import StateDir

logger = logging.getLogger(__name__)

CACHE_FILE = "calendar-cache.json"
WALK_UP_SUBJECT = "Walk-up meeting"
RELEASE_CHECK_S = 5.0
RELEASE_RETRY_S = 60.0
PUSH_RETRY_S = (5.0, 600.0)  # back-off between push subscriptions that failed
Clock = Callable[[], datetime]
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


class CalendarCache(BaseModel):
    """What the room keeps across restarts: the last good agenda and its own decisions."""

    model_config = ConfigDict(frozen=True)

    backend: str
    synced_at: AwareDatetime | None = None
    bookings: tuple[Booking, ...] = ()
    checked_in: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    walk_up: tuple[str, ...] = ()
    no_shows: dict[str, int] = Field(default_factory=dict)


class BookingArgs(Arguments):
    booking: str | None = Field(
        default=None, min_length=1, max_length=512, description="booking id; default: current"
    )


class BookArgs(Arguments):
    minutes: Literal[15, 30, 60]
    subject: str = Field(default=WALK_UP_SUBJECT, min_length=1, max_length=200)


class ExtendArgs(BookingArgs):
    minutes: Literal[15, 30, 60]


class ImportArgs(Arguments):
    ics: str = Field(min_length=1, description="an iCalendar (RFC 5545) file's text")


class ImportResult(BaseModel):
    events: int


class CalendarService(Service):
    """Publishes the ``calendar`` topic and offers the calendar/* commands."""

    name = "calendar"

    def __init__(
        self,
        settings: CalendarSettings,
        timezone: str,
        state_dir: StateDir,
        bus: StateBus,
        backend: CalendarBackend,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.zone: tzinfo = ZoneInfo(timezone)
        self.backend = backend
        self._state_dir = state_dir
        self._bus = bus
        self._clock = clock
        self._bookings: dict[str, Booking] = {}
        self._checked_in: set[str] = set()
        self._released: set[str] = set()
        self._walk_up: set[str] = set()
        self._no_shows: dict[str, int] = {}
        self._release_retry: dict[str, datetime] = {}
        self._synced_at: datetime | None = None
        self._stale: tuple[StaleReason, str] | None = (StaleReason.NOT_SYNCED, "not synced yet")
        self._sync_now = asyncio.Event()
        self._synced = asyncio.Condition()
        self._attempts = 0  # syncs tried (finished, well or not)
        self._syncing = False
        # Bumped by every change the room makes, so a sync that started before it does
        # not bring back the old version of a booking.
        self._generation = 0
        self._lock = asyncio.Lock()
        self._backoff = Backoff(min(5.0, settings.poll_seconds), max(300.0, settings.poll_seconds))

    # -- lifecycle

    async def setup(self, phase: Phase) -> None:
        if phase is Phase.PROFILES:
            self._load_cache()
            self._publish()
        elif phase is Phase.CONNECT:
            await self.backend.open()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._sync_loop(), name="calendar:sync")
            tasks.create_task(self._release_loop(), name="calendar:release")
            tasks.create_task(self._follow_meetings(), name="calendar:meetings")
            if self.backend.pushes:
                tasks.create_task(self._push_loop(), name="calendar:push")

    async def close(self) -> None:
        await self.backend.close()

    # -- sync

    def window(self) -> tuple[datetime, datetime]:
        """From yesterday's midnight to ``sync_days`` ahead, in the room's time zone.

        Whole days, so that the window (and each object's expansion) only moves at midnight.
        """
        today = (
            self._clock()
            .astimezone(self.zone)
            .replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
        )
        start = (today - timedelta(days=1)).replace(tzinfo=None).replace(tzinfo=self.zone)
        end = (today + timedelta(days=self.settings.sync_days + 1)).replace(tzinfo=None)
        return start, end.replace(tzinfo=self.zone)

    async def sync(self) -> None:
        """One sync now; a failure leaves the last agenda and says why it is stale."""
        generation = self._generation
        start, end = self.window()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                result = await self.backend.sync(start, end)
        except CalendarError as exc:
            self._sync_failed(exc.reason, str(exc))
            raise
        except TimeoutError:
            message = f"{self.backend.name}: no answer in {self.settings.timeout_s:g} s"
            self._sync_failed(StaleReason.TIMEOUT, message)
            raise CalendarError(StaleReason.TIMEOUT, message) from None
        if generation != self._generation:
            self._sync_now.set()  # the room changed a booking meanwhile: read it again
            return
        self._apply(result.bookings)
        self._backoff.reset()

    def _apply(self, bookings: list[Booking]) -> None:
        shown = [
            b
            for b in bookings
            if b.status is not BookingStatus.CANCELLED and b.id not in self._released
        ]
        self._stale = None
        if len(shown) > self.settings.max_bookings:
            message = (
                f"{self.backend.name} returned {len(shown)} bookings;"
                f" showing the first {self.settings.max_bookings}"
            )
            logger.warning("%s", message)
            self._stale = (StaleReason.TOO_MANY, message)
            shown = shown[: self.settings.max_bookings]
        self._bookings = {b.id: b for b in shown}
        # What the room remembers only matters while the calendar still has the booking.
        present = {b.id for b in bookings}
        self._released &= present
        self._walk_up &= present
        self._checked_in = (self._checked_in & present) | {b.id for b in shown if b.checked_in}
        self._synced_at = self._clock()
        self._save_cache()
        self._publish()

    def _sync_failed(self, reason: StaleReason, message: str) -> None:
        first = self._stale is None or self._stale[0] is not reason
        # Loud when the reason changes, then quiet: an outage must not flood the journal.
        (logger.warning if first else logger.debug)("calendar sync failed: %s", message)
        self._stale = (reason, message)
        self._publish()

    async def _sync_loop(self) -> None:
        while True:
            delay = self.settings.poll_seconds
            self._sync_now.clear()
            self._syncing = True
            try:
                await self.sync()
            except CalendarError as exc:
                delay = max(exc.retry_after_s or 0.0, self._backoff.next_delay())
            finally:
                self._syncing = False
            async with self._synced:
                self._attempts += 1
                self._synced.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._sync_now.wait()

    async def _push_loop(self) -> None:
        """Sync as soon as the server reports a change; polling goes on regardless.

        A refused subscription or a broken stream is retried with back-off, and the poll
        keeps the agenda fresh meanwhile. After a reconnection the room syncs once, for
        the changes made while nobody listened.
        """
        backoff = Backoff(*PUSH_RETRY_S)
        first = True
        while True:
            if not first:
                self._sync_now.set()
            first = False
            began = asyncio.get_running_loop().time()
            try:
                await self.backend.watch(self._sync_now.set)
            except CalendarError as exc:
                delay = max(exc.retry_after_s or 0.0, backoff.next_delay())
                logger.info(
                    "no push from %s (%s); polling every %g s, subscribing again in %.0f s",
                    self.backend.name,
                    exc,
                    self.settings.poll_seconds,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                lasted = asyncio.get_running_loop().time() - began
                if lasted >= PUSH_RETRY_S[0]:
                    backoff.reset()
                else:  # closed at once: not a stream to rely on, do not hammer the server
                    await asyncio.sleep(backoff.next_delay())

    async def request_sync(self) -> None:
        """Sync now (not waiting for the poll interval) and wait until it has been tried."""
        async with self._synced:
            # A sync already under way may have read the calendar before the change that
            # made someone ask: wait for the one after it.
            target = self._attempts + (2 if self._syncing else 1)
            self._sync_now.set()
            await self._synced.wait_for(lambda: self._attempts >= target)

    # -- the snapshot

    def state(self) -> CalendarState:
        now = self._clock()
        bookings = sorted(self._bookings.values(), key=lambda b: (b.start, b.id))
        current = next((b for b in bookings if b.start <= now < b.end and not b.all_day), None)
        upcoming = next((b for b in bookings if b.start > now and not b.all_day), None)
        reason, message = self._stale or (None, None)
        return CalendarState(
            backend=self.backend.name,
            synced_at=self._synced_at,
            stale=self._stale is not None,
            stale_reason=reason,
            stale_message=message,
            bookings=tuple(self._entry(b) for b in bookings),
            current=current.id if current else None,
            next=upcoming.id if upcoming else None,
            free_until=None if current else (upcoming.start if upcoming else None),
        )

    def _entry(self, booking: Booking) -> BookingEntry:
        checked_in = booking.id in self._checked_in
        private = booking.private
        subject = booking.subject if self.settings.show_subjects else ""
        organizer = booking.organizer if self.settings.show_organizers else ""
        return BookingEntry(
            id=booking.id,
            subject=PRIVATE_SUBJECT if private else subject,
            organizer="" if private else organizer,
            attendees=() if private or not self.settings.show_organizers else booking.attendees,
            start=booking.start,
            end=booking.end,
            private=private,
            all_day=booking.all_day,
            status=booking.status,
            series_id=booking.series_id,
            checked_in=checked_in,
            walk_up=booking.id in self._walk_up,
            checkin_from=self._checkin_from(booking),
            release_at=self._release_at(booking),
            join_links=booking.join_links,
        )

    def _publish(self) -> None:
        self._bus.publish("calendar", self.state())

    # -- check-in and release

    def _checkin_from(self, booking: Booking) -> datetime:
        return booking.start - timedelta(minutes=self.settings.checkin_before_min)

    def _release_at(self, booking: Booking) -> datetime | None:
        if (
            not self.settings.release_no_shows
            or booking.all_day
            or booking.id in self._checked_in
            or booking.id in self._walk_up
        ):
            return None
        return min(booking.start + timedelta(minutes=self.settings.release_after_min), booking.end)

    async def check_in(self, booking_id: str | None) -> BookingEntry:
        now = self._clock()
        booking = self._find(booking_id) if booking_id else self._checkin_candidate(now)
        if booking.id in self._checked_in:
            return self._entry(booking)
        deadline = self._release_at(booking) or booking.end
        if not self._checkin_from(booking) <= now < deadline:
            raise CommandError(
                409,
                f"check-in for {booking.id!r} is open from"
                f" {self._local(self._checkin_from(booking))} to {self._local(deadline)}",
            )
        self._checked_in.add(booking.id)
        if booking.series_id:
            self._no_shows.pop(booking.series_id, None)
        try:
            await self.backend.check_in(booking, now)
        except CalendarError as exc:
            # The room knows; the calendar's copy of the check-in is only informative.
            logger.warning("check-in of %s not written to the calendar: %s", booking.id, exc)
        self._changed()
        return self._entry(booking)

    def _checkin_candidate(self, now: datetime) -> Booking:
        for booking in sorted(self._bookings.values(), key=lambda b: b.start):
            if not booking.all_day and self._checkin_from(booking) <= now < booking.end:
                return booking
        raise CommandError(409, "no booking to check in to now")

    async def check_releases(self) -> list[str]:
        """Release every booking whose check-in time has passed; the ids released."""
        now = self._clock()
        released = []
        for booking in list(self._bookings.values()):
            release_at = self._release_at(booking)
            if release_at is None or not release_at <= now < booking.end:
                continue
            if self._release_retry.get(booking.id, now) > now:
                continue
            async with self._lock:
                if await self._release(booking):
                    released.append(booking.id)
        return released

    async def _release(self, booking: Booking) -> bool:
        message = (
            f"Nobody checked in to {booking.subject or 'this meeting'} within"
            f" {self.settings.release_after_min} minutes, so the room has been released."
        )
        try:
            await self.backend.release(booking, message)
        except CalendarError as exc:
            logger.warning("could not release %s: %s", booking.id, exc)
            self._release_retry[booking.id] = self._clock() + timedelta(seconds=RELEASE_RETRY_S)
            return False
        logger.info("released %s: nobody checked in", booking.id)
        self._released.add(booking.id)
        self._bookings.pop(booking.id, None)
        self._release_retry.pop(booking.id, None)
        if booking.series_id:
            await self._count_no_show(booking)
        self._changed()
        return True

    async def _count_no_show(self, booking: Booking) -> None:
        assert booking.series_id is not None
        count = self._no_shows.get(booking.series_id, 0) + 1
        self._no_shows[booking.series_id] = count
        limit = self.settings.decline_series_after
        if not limit or count < limit:
            return
        message = (
            f"Nobody came to the last {count} meetings of this series,"
            " so the room has declined the rest of it."
        )
        try:
            await self.backend.end_series(booking, message)
        except CalendarError as exc:
            logger.warning("could not decline the rest of series %s: %s", booking.series_id, exc)
            return
        logger.info("declined the rest of series %s after %d no-shows", booking.series_id, count)
        del self._no_shows[booking.series_id]
        for other in list(self._bookings.values()):
            if other.series_id == booking.series_id and other.start >= booking.start:
                self._bookings.pop(other.id)

    async def _release_loop(self) -> None:
        while True:
            await self.check_releases()
            await asyncio.sleep(RELEASE_CHECK_S)

    async def _follow_meetings(self) -> None:
        """Starting the booked meeting counts as checking in to it."""
        with self._bus.subscribe() as subscription:
            async for change in subscription:
                meeting = change.value
                if change.topic != "meeting" or not isinstance(meeting, MeetingState):
                    continue
                if not meeting.in_meeting:
                    continue
                with contextlib.suppress(CommandError):
                    await self.check_in(meeting.booking_id)

    # -- walk-up, extend, end early

    async def book(self, minutes: int, subject: str) -> BookingEntry:
        async with self._lock:
            now = self._clock()
            start = now.replace(second=0, microsecond=0)
            end = start + timedelta(minutes=minutes)
            busy = self._busy_between(now, end)
            if busy is not None:
                raise CommandError(409, self._conflict_message(busy, now))
            booking = await self._backend_call(self.backend.book(subject, start, end))
            self._walk_up.add(booking.id)
            self._checked_in.add(booking.id)
            self._bookings[booking.id] = booking
            self._changed()
            return self._entry(booking)

    async def extend(self, booking_id: str | None, minutes: int) -> BookingEntry:
        async with self._lock:
            booking = self._find(booking_id) if booking_id else self._current()
            end = booking.end + timedelta(minutes=minutes)
            busy = self._busy_between(booking.end, end, besides=booking.id)
            if busy is not None:
                raise CommandError(409, f"cannot extend: {self._conflict_message(busy, None)}")
            await self._backend_call(self.backend.set_end(booking, end))
            return self._replace(booking, end)

    async def end_early(self, booking_id: str | None) -> BookingEntry:
        async with self._lock:
            now = self._clock()
            booking = self._find(booking_id) if booking_id else self._current()
            if not booking.start <= now < booking.end:
                raise CommandError(409, f"{booking.id!r} is not under way, so it cannot end early")
            end = now.replace(microsecond=0)
            if end <= booking.start:
                # Ended as it began: nothing of it is kept, as for a no-show.
                await self._backend_call(self.backend.release(booking, "Ended early."))
                self._released.add(booking.id)
                self._bookings.pop(booking.id, None)
                self._changed()
                return self._entry(booking.model_copy(update={"status": BookingStatus.CANCELLED}))
            await self._backend_call(self.backend.set_end(booking, end))
            return self._replace(booking, end)

    def _replace(self, booking: Booking, end: datetime) -> BookingEntry:
        changed = booking.model_copy(update={"end": end})
        self._bookings[booking.id] = changed
        self._changed()
        return self._entry(changed)

    def _busy_between(
        self, start: datetime, end: datetime, besides: str | None = None
    ) -> Booking | None:
        clashes = [
            b
            for b in self._bookings.values()
            if b.id != besides and not b.all_day and b.overlaps(start, end)
        ]
        return min(clashes, key=lambda b: b.start) if clashes else None

    def _conflict_message(self, busy: Booking, now: datetime | None) -> str:
        if now is not None and busy.start <= now:
            return f"the room is booked until {self._local(busy.end)}"
        return f"the room is free only until {self._local(busy.start)}"

    def _current(self) -> Booking:
        current = self.state().current
        if current is None:
            raise CommandError(409, "no booking is under way")
        return self._bookings[current]

    def _find(self, booking_id: str) -> Booking:
        booking = self._bookings.get(booking_id)
        if booking is None:
            raise CommandError(404, f"no booking {booking_id!r} in the agenda")
        return booking

    async def _backend_call(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                return await call
        except CalendarError as exc:
            raise CommandError(502, f"the calendar refused: {exc}") from None
        except TimeoutError:
            raise CommandError(
                504, f"the calendar did not answer in {self.settings.timeout_s:g} s"
            ) from None

    def _changed(self) -> None:
        self._generation += 1
        self._save_cache()
        self._publish()
        self._sync_now.set()

    def _local(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).strftime("%H:%M")

    # -- the cache in the state directory

    def _load_cache(self) -> None:
        try:
            cache = self._state_dir.load(CACHE_FILE, CalendarCache)
        except OSError as exc:
            logger.warning("cannot read the calendar cache: %s", exc)
            return
        if cache is None or cache.backend != self.backend.name:
            return
        self._bookings = {b.id: b for b in cache.bookings}
        self._checked_in = set(cache.checked_in)
        self._released = set(cache.released)
        self._walk_up = set(cache.walk_up)
        self._no_shows = dict(cache.no_shows)
        self._synced_at = cache.synced_at
        self._stale = (StaleReason.NOT_SYNCED, "showing the agenda kept from before the restart")

    def _save_cache(self) -> None:
        known = set(self._bookings)
        cache = CalendarCache(
            backend=self.backend.name,
            synced_at=self._synced_at,
            bookings=tuple(self._bookings.values()),
            checked_in=tuple(sorted(self._checked_in & known)),
            # Released ids are kept while the server may still show them.
            released=tuple(sorted(self._released)),
            walk_up=tuple(sorted(self._walk_up & known)),
            no_shows=self._no_shows,
        )
        try:
            self._state_dir.ensure()
            self._state_dir.save(CACHE_FILE, cache, mode=0o600)
        except (OSError, RoomError) as exc:
            logger.warning("cannot keep the calendar in the state directory: %s", exc)

    # -- commands

    def commands(self) -> list[Command]:
        def command(path: str, summary: str, arguments: type[Arguments], handler: Any) -> Command:
            return Command(f"calendar/{path}", summary, arguments, BookingEntry, handler)

        return [
            command(
                "checkin",
                "Check in to a booking (default: the current or next one).",
                BookingArgs,
                lambda a: self.check_in(a.booking),
            ),
            command(
                "book",
                "Book the room now for 15, 30 or 60 minutes.",
                BookArgs,
                lambda a: self.book(a.minutes, a.subject),
            ),
            command(
                "extend",
                "Extend a booking (default: the current one) by 15, 30 or 60 minutes.",
                ExtendArgs,
                lambda a: self.extend(a.booking, a.minutes),
            ),
            command(
                "end-early",
                "End a booking under way now and free the rest of its slot.",
                BookingArgs,
                lambda a: self.end_early(a.booking),
            ),
            Command(
                "calendar/sync",
                "Sync the calendar now.",
                NoArguments,
                CalendarState,
                self._sync_command,
            ),
            Command(
                "calendar/import",
                "Import an iCalendar file into the local calendar.",
                ImportArgs,
                ImportResult,
                self._import_command,
            ),
        ]

    async def _sync_command(self, _: NoArguments) -> CalendarState:
        try:
            async with asyncio.timeout(self.settings.timeout_s + 1):
                await self.request_sync()
        except TimeoutError:
            raise CommandError(504, "the calendar sync did not finish in time") from None
        return self.state()

    async def _import_command(self, args: ImportArgs) -> ImportResult:
        if not isinstance(self.backend, LocalBackend):
            raise CommandError(409, f"the {self.backend.name} calendar is not imported into")
        try:
            events = await self.backend.import_ics(args.ics)
        except CalendarError as exc:
            raise CommandError(422, str(exc)) from None
        self._changed()
        return ImportResult(events=events)
