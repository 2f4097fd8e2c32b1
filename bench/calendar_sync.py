"""Calendar sync of a busy room's year: a full sync, then an incremental one after 10 changes.

A year of 1,000 bookings (single meetings and weekly series, which the backends expand
into occurrences) is synced from a real Radicale CalDAV server and from the fake Exchange
(EWS over SOAP, via exchangelib), both on loopback. Then 10 single meetings are changed
by "someone in Outlook", and the next sync is incremental: CalDAV's sync-token and EWS's
SyncFolderItems fetch only the changed objects. Target: the incremental sync costs at
most 10% of the full one.

Each figure is the median of 3 rounds, each with a new backend (nothing cached). Radicale
is read once before measuring, so that its own item cache is built, as on a live server.

Run: ``python -m bench.calendar_sync``. Prints one JSON line per backend, then a table.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from roomsystem.calendar.backend import CalendarBackend, SyncResult
from roomsystem.calendar.caldav_backend import CalDavBackend
from roomsystem.calendar.ews import EwsBackend
from roomsystem.config import CalendarSettings
from tests.calendar.fake_ews import FakeEws
from tests.calendar.radicale import USER, radicale, seed_calendar

ZONE = ZoneInfo("Europe/Oslo")
YEAR_START = datetime(2026, 1, 1, tzinfo=ZONE)
YEAR_END = datetime(2027, 1, 1, tzinfo=ZONE)
SINGLES = 700
SERIES = 6
WEEKS = 50  # 6 weekly series x 50 weeks = 300 occurrences; 1,000 bookings in all
CHANGES = 10
TARGET_RATIO = 0.10
ROUNDS = 3


@dataclass(frozen=True)
class Meeting:
    uid: str
    subject: str
    start: datetime
    minutes: int
    weekly: int = 0  # occurrences, for a weekly series


def busy_year() -> list[Meeting]:
    """700 meetings spread over working hours, and 6 weekly series."""
    meetings = []
    for number in range(SINGLES):
        day = YEAR_START + timedelta(days=(number * 365) // SINGLES)
        start = day.replace(hour=8 + number % 9, minute=30 * (number % 2))
        meetings.append(Meeting(f"single-{number}@bench", f"Meeting {number}", start, 30))
    for number in range(SERIES):
        start = (YEAR_START + timedelta(days=5 + number)).replace(hour=9 + number)
        meetings.append(Meeting(f"series-{number}@bench", f"Weekly {number}", start, 25, WEEKS))
    return meetings


def ics(meeting: Meeting, subject: str | None = None) -> str:
    local = meeting.start.strftime("%Y%m%dT%H%M%S")
    end = (meeting.start + timedelta(minutes=meeting.minutes)).strftime("%Y%m%dT%H%M%S")
    rule = f"RRULE:FREQ=WEEKLY;COUNT={meeting.weekly}\r\n" if meeting.weekly else ""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{meeting.uid}\r\nDTSTAMP:20260101T000000Z\r\n"
        f"DTSTART;TZID=Europe/Oslo:{local}\r\nDTEND;TZID=Europe/Oslo:{end}\r\n{rule}"
        f"SUMMARY:{subject or meeting.subject}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def put(url: str, text: str) -> None:
    token = base64.b64encode(f"{USER}:x".encode()).decode()
    request = urllib.request.Request(
        url,
        data=text.encode(),
        method="PUT",
        headers={"Content-Type": "text/calendar", "Authorization": f"Basic {token}"},
    )
    urllib.request.urlopen(request, timeout=300).close()


@dataclass
class Result:
    backend: str
    bookings: int
    full_s: float
    incremental_s: float
    incremental_fetched: int

    @property
    def ratio(self) -> float:
        return self.incremental_s / self.full_s

    def line(self) -> str:
        return json.dumps(
            {
                "backend": self.backend,
                "bookings": self.bookings,
                "full_s": round(self.full_s, 4),
                "incremental_s": round(self.incremental_s, 4),
                "changes": CHANGES,
                "incremental_fetched": self.incremental_fetched,
                "ratio": round(self.ratio, 4),
                "target_ratio": TARGET_RATIO,
                "ok": self.ratio <= TARGET_RATIO,
            }
        )


async def measure(
    name: str,
    backend: Callable[[], CalendarBackend],
    change: Callable[[list[Meeting], str], Awaitable[None]],
    meetings: list[Meeting],
) -> Result:
    """Median of ROUNDS rounds, each a new backend: full sync, 10 changes, incremental."""
    fulls, incrementals, fetched, bookings = [], [], 0, 0
    for round_number in range(ROUNDS):
        room = backend()
        await room.open()
        try:
            began = time.perf_counter()
            full = await room.sync(YEAR_START, YEAR_END, full=True)
            fulls.append(time.perf_counter() - began)
            first = round_number * CHANGES
            changed = meetings[first : first + CHANGES]
            mark = f"(moved {round_number})"
            await change(changed, mark)
            began = time.perf_counter()
            incremental = await room.sync(YEAR_START, YEAR_END)
            incrementals.append(time.perf_counter() - began)
        finally:
            await room.close()
        check(name, full, incremental, mark)
        fetched, bookings = incremental.fetched, len(full.bookings)
    return Result(
        name, bookings, statistics.median(fulls), statistics.median(incrementals), fetched
    )


def check(name: str, full: SyncResult, incremental: SyncResult, mark: str) -> None:
    """The figures only count if both syncs saw the right calendar."""
    expected = SINGLES + SERIES * WEEKS
    renamed = sum(b.subject.endswith(mark) for b in incremental.bookings)
    problems = []
    if len(full.bookings) != expected:
        problems.append(f"full sync saw {len(full.bookings)} bookings, not {expected}")
    if incremental.full or renamed != CHANGES or len(incremental.bookings) != expected:
        problems.append(
            f"incremental sync (full={incremental.full}) saw {renamed} of {CHANGES} changes"
        )
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(problems))


async def caldav_year(root: Path, meetings: list[Meeting]) -> Result:
    server_root = root / "radicale"
    seed_calendar(server_root, "busy-room", {f"{m.uid}.ics": ics(m) for m in meetings})
    with radicale(server_root) as base:
        url = f"{base}/{USER}/busy-room/"
        settings = CalendarSettings(backend="caldav", url=url, timeout_s=60.0)

        async def change(changed: list[Meeting], mark: str) -> None:
            for meeting in changed:
                text = ics(meeting, f"{meeting.subject} {mark}")
                await asyncio.to_thread(put, f"{url}{meeting.uid}.ics", text)

        # Radicale builds its item cache on the first read: that is not the room's cost.
        await warm_up(CalDavBackend(settings, ZONE))
        return await measure("caldav", lambda: CalDavBackend(settings, ZONE), change, meetings)


async def warm_up(backend: CalendarBackend) -> None:
    await backend.open()
    try:
        await backend.sync(YEAR_START, YEAR_END, full=True)
    finally:
        await backend.close()


async def ews_year(root: Path, meetings: list[Meeting]) -> Result:
    fake = FakeEws()
    ids: dict[str, str] = {}
    for meeting in meetings:
        end = meeting.start + timedelta(minutes=meeting.minutes)
        weekly = {"kind": "RecurringMaster", "every": timedelta(weeks=1), "count": meeting.weekly}
        extra = weekly if meeting.weekly else {}
        item = fake.add(
            uid=meeting.uid, subject=meeting.subject, start=meeting.start, end=end, **extra
        )
        ids[meeting.uid] = item.id
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        secret = root / "ews-password"
        secret.write_text("s3cret\n")
        os.chmod(secret, 0o600)
        settings = CalendarSettings(
            backend="ews",
            url=f"http://127.0.0.1:{runner.addresses[0][1]}/EWS/Exchange.asmx",
            username="svc-room",
            password_file=secret,
            mailbox="room-412@example.org",
            ews_auth="basic",
            timeout_s=60.0,
        )

        async def change(changed: list[Meeting], mark: str) -> None:
            for meeting in changed:
                fake.update(ids[meeting.uid], subject=f"{meeting.subject} {mark}")

        return await measure("ews", lambda: EwsBackend(settings, ZONE), change, meetings)
    finally:
        await runner.cleanup()


def table(results: list[Result]) -> str:
    rows = [f"{'backend':<8} {'bookings':>8} {'full s':>8} {'incr s':>8} {'ratio':>6}  target"]
    for r in results:
        verdict = "ok" if r.ratio <= TARGET_RATIO else "MISSED"
        rows.append(
            f"{r.backend:<8} {r.bookings:>8} {r.full_s:>8.3f} {r.incremental_s:>8.3f}"
            f" {r.ratio:>6.1%}  <= {TARGET_RATIO:.0%} {verdict}"
        )
    return "\n".join(rows)


async def main() -> None:
    meetings = busy_year()
    results = []
    with tempfile.TemporaryDirectory(prefix="calendar-bench-") as tmp:
        for run in (caldav_year, ews_year):
            result = await run(Path(tmp), meetings)
            print(result.line(), flush=True)
            results.append(result)
    print()
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
