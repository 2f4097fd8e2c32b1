"""What the panel and the display show, computed from the API snapshot (no Kivy here).

Every function takes the `LinkState` and tolerates sections or fields the daemon does not
send (yet): they come back as None or empty, and the screens show "not available".
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controlpanel.client import LinkState

PRIVATE_TITLE = "Private meeting"
NOT_AVAILABLE = "not available"


def _get(mapping: Mapping[str, Any] | None, *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` that ``mapping`` has (field names differ between versions)."""
    if not isinstance(mapping, Mapping):
        return default
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return default


def _items(mapping: Mapping[str, Any] | None, key: str) -> list[Mapping[str, Any]]:
    """The objects in the list ``mapping[key]``; anything else there counts as none."""
    raw = _get(mapping, key)
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def text_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def number(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive ones are UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def room_zone(state: LinkState) -> tzinfo:
    name = _get(state.section("room"), "timezone", default="UTC")
    with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(str(name))
    return UTC


def room_name(state: LinkState) -> str:
    return str(_get(state.section("room"), "name", default="Room"))


def clock_text(now: datetime, zone: tzinfo) -> str:
    return now.astimezone(zone).strftime("%H:%M")


def date_text(now: datetime, zone: tzinfo) -> str:
    return now.astimezone(zone).strftime("%A %d %B")


# -- bookings


@dataclass(frozen=True)
class Booking:
    id: str
    title: str
    organizer: str
    start: datetime
    end: datetime
    private: bool
    checked_in: bool
    checkin_from: datetime | None
    release_at: datetime | None

    def span(self, zone: tzinfo) -> str:
        return f"{clock_text(self.start, zone)}\u2013{clock_text(self.end, zone)}"

    def is_now(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def waits_for_check_in(self, now: datetime) -> bool:
        """Check-in is open now and the booking is released without it."""
        opens = self.checkin_from or self.start
        return (
            not self.checked_in and self.release_at is not None and opens <= now < self.release_at
        )


def _booking(raw: Any) -> Booking | None:
    if not isinstance(raw, Mapping):
        return None
    start = parse_time(_get(raw, "start", "starts_at"))
    end = parse_time(_get(raw, "end", "ends_at"))
    if start is None or end is None or _get(raw, "status") == "cancelled":
        return None
    private = bool(_get(raw, "private", "is_private", default=False)) or (
        str(_get(raw, "sensitivity", default="")).lower() in ("private", "confidential")
    )
    title = PRIVATE_TITLE if private else str(_get(raw, "subject", "title", default="Meeting"))
    organizer = "" if private else str(_get(raw, "organizer", "organizer_name", default=""))
    return Booking(
        id=str(_get(raw, "id", "uid", default="")),
        title=title,
        organizer=organizer,
        start=start,
        end=end,
        private=private,
        checked_in=bool(_get(raw, "checked_in", default=False)),
        checkin_from=parse_time(_get(raw, "checkin_from")),
        release_at=parse_time(
            _get(raw, "release_at", "releases_at", "check_in_deadline", "checkin_deadline")
        ),
    )


def bookings(state: LinkState) -> list[Booking] | None:
    """The room's bookings by start time, or None when the daemon has no calendar."""
    raw = _get(state.section("calendar"), "bookings")
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return None
    parsed = [b for b in (_booking(item) for item in raw) if b is not None]
    return sorted(parsed, key=lambda b: b.start)


def now_and_next(state: LinkState, now: datetime) -> tuple[Booking | None, list[Booking]]:
    """The booking running now (if any) and the ones after it today."""
    every = bookings(state) or []
    current = next((b for b in every if b.is_now(now)), None)
    coming = [b for b in every if b.start > now]
    return current, coming


def today(state: LinkState, now: datetime) -> list[Booking]:
    zone = room_zone(state)
    day = now.astimezone(zone).date()
    return [b for b in bookings(state) or [] if b.start.astimezone(zone).date() == day]


def countdown(until: datetime, now: datetime) -> str:
    seconds = max(0, int((until - now).total_seconds()))
    return f"{seconds // 60}:{seconds % 60:02d}"


def free_minutes(state: LinkState, now: datetime) -> int | None:
    """Minutes until the next booking, or None when the room is free all day."""
    current, coming = now_and_next(state, now)
    if current is not None:
        return 0
    if not coming:
        return None
    return int((coming[0].start - now).total_seconds() // 60)


# -- meeting


@dataclass(frozen=True)
class Participant:
    id: str
    name: str
    role: str
    waiting: bool
    muted: bool
    video: bool
    hand: bool


def meeting(state: LinkState) -> Mapping[str, Any] | None:
    return state.section("meeting")


def in_meeting(state: LinkState) -> bool:
    return bool(_get(meeting(state), "in_meeting", default=False))


def format_meeting_id(meeting_id: str) -> str:
    """Digits in groups of three (four at the end), as people read them out."""
    digits = meeting_id.replace(" ", "")
    if not digits.isdigit() or len(digits) < 7:
        return meeting_id
    head, tail = digits[:-4], digits[-4:]
    groups = [head[i : i + 3] for i in range(0, len(head), 3)]
    return " ".join([*groups, tail])


def participants(state: LinkState) -> list[Participant]:
    found = []
    for item in _items(meeting(state), "participants"):
        if "id" in item:
            found.append(
                Participant(
                    id=str(item["id"]),
                    name=str(_get(item, "name", default="?")),
                    role=str(_get(item, "role", default="participant")),
                    waiting=bool(_get(item, "waiting", default=False)),
                    muted=bool(_get(item, "muted", default=False)),
                    video=bool(_get(item, "video", default=False)),
                    hand=bool(_get(item, "hand", default=False)),
                )
            )
    return found


# -- devices and sharing


def audio(state: LinkState) -> Mapping[str, Any] | None:
    found = _get(state.section("devices"), "audio")
    return found if isinstance(found, Mapping) else None


def devices(state: LinkState) -> list[Mapping[str, Any]]:
    return _items(state.section("devices"), "devices")


def first_device(state: LinkState, kind: str) -> Mapping[str, Any] | None:
    return next((d for d in devices(state) if d.get("kind") == kind), None)


def device_line(device: Mapping[str, Any]) -> str:
    kind = "certified" if device.get("certified") else "generic"
    health = "online" if device.get("online") else "OFFLINE"
    error = device.get("error")
    tail = f" \u2013 {error}" if error and not device.get("online") else ""
    return (
        f"{device.get('name', device.get('id', '?'))} ({device.get('profile', '?')}, {kind}): "
        f"{health}{tail}"
    )


@dataclass(frozen=True)
class SharingInfo:
    active: bool
    sharer: str | None
    key: str | None
    share_url: str | None


def sharing(state: LinkState) -> SharingInfo | None:
    section = state.section("sharing")
    if section is None:
        return None
    return SharingInfo(
        active=bool(_get(section, "active", default=False)),
        sharer=text_or_none(_get(section, "sharer")),
        key=text_or_none(_get(section, "key", "sharing_key")),
        share_url=text_or_none(_get(section, "share_url", "url")),
    )


def format_key(key: str | None) -> str:
    if not key:
        return NOT_AVAILABLE
    return " ".join(key[i : i + 3] for i in range(0, len(key), 3)) if len(key) > 4 else key


# -- pairing a panel


@dataclass(frozen=True)
class PairingInfo:
    """A panel waiting for the code the room display shows (the ``pairing`` topic)."""

    code: str
    panel_name: str
    address: str


def pairing(state: LinkState) -> PairingInfo | None:
    """The pending pairing request, when there is one and the snapshot has its code."""
    section = state.section("pairing")
    code = text_or_none(_get(section, "code"))
    if not _get(section, "pending", default=False) or not code:
        return None
    return PairingInfo(
        code=code,
        panel_name=str(_get(section, "panel_name", default="a panel")),
        address=str(_get(section, "address", default="")),
    )


def format_code(code: str) -> str:
    """A pairing code in two groups (``123 456``), as people read it across a room."""
    half = (len(code) + 1) // 2
    return f"{code[:half]} {code[half:]}".strip()


def pairing_prompt(state: LinkState) -> str:
    """What the display's idle screen says while a panel waits for its code."""
    waiting = pairing(state)
    if waiting is None:
        return ""
    where = f" at {waiting.address}" if waiting.address else ""
    return f"Pairing {waiting.panel_name}{where}: type {format_code(waiting.code)} on that panel"


def typed_code(typed: str, digits: int) -> str:
    """The digits typed so far and a gap for each one still to come (``12_ ___``)."""
    return format_code(typed.ljust(digits, "_"))


# -- what needs attention


def banners(state: LinkState, now: datetime) -> list[str]:
    """One line per problem a person in the room should know about, worst first."""
    if not state.connected:
        reason = f" ({state.error})" if state.error else ""
        return [f"Room system unreachable \u2013 reconnecting\u2026{reason}"]
    found = [
        f"{d.get('name', d.get('id'))} is offline" + (f": {d['error']}" if d.get("error") else "")
        for d in devices(state)
        if not d.get("online")
    ]
    calendar = state.section("calendar")
    stale = _get(calendar, "stale", default=False) or _get(calendar, "stale_reason")
    if _get(calendar, "backend") and stale:
        why = _get(calendar, "stale_message", "stale_reason", default="not synced")
        found.append(f"Calendar out of date: {why}")
    lifecycle = state.section("lifecycle")
    for service in _items(lifecycle, "services"):
        if service.get("error"):
            found.append(f"Service {service.get('name')} failed: {service['error']}")
    return found


def display_feed(state: LinkState) -> str | None:
    """Where the daemon writes the composed display picture (shared memory), if it does."""
    display = _get(state.section("media"), "display")
    path = _get(display, "path") if isinstance(display, Mapping) else None
    return path if isinstance(path, str) and path else None
