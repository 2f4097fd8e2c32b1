"""Finding meeting links in a booking's location and body."""

from __future__ import annotations

import re

from roomsystem.calendar.model import JoinKind, JoinLink

# Hosts of the meeting services a room is asked to recognise; matched on the URL's host.
_SERVICES: tuple[tuple[JoinKind, re.Pattern[str]], ...] = (
    ("zoom", re.compile(r"^(?:[\w-]+\.)*zoom\.us$|^(?:[\w-]+\.)*zoomgov\.com$")),
    ("teams", re.compile(r"^teams\.microsoft\.com$|^teams\.live\.com$")),
    ("meet", re.compile(r"^meet\.google\.com$")),
    ("webex", re.compile(r"^(?:[\w-]+\.)*webex\.com$")),
    ("jitsi", re.compile(r"^meet\.jit\.si$|^(?:[\w-]+\.)*8x8\.vc$|^jitsi\.[\w.-]+$")),
)
_URL = re.compile(r"https://[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
_HOST = re.compile(r"^https://([^/:?#]+)", re.IGNORECASE)
MAX_LINKS = 8


def find_join_links(*texts: str, room_hosts: tuple[str, ...] = ()) -> tuple[JoinLink, ...]:
    """Meeting links in ``texts``, in order, without duplicates.

    ``room_hosts`` are the host names of the room's own meeting site; links to them are
    the room's own meetings, which the panel joins with one tap.
    """
    found: dict[str, JoinLink] = {}
    own = {host.lower() for host in room_hosts if host}
    for text in texts:
        for match in _URL.finditer(text or ""):
            url = match.group(0).rstrip(".,;:!>")
            kind = _kind_of(url, own)
            if kind is not None and url not in found:
                found[url] = JoinLink(kind=kind, url=url)
            if len(found) >= MAX_LINKS:
                return tuple(found.values())
    return tuple(found.values())


def _kind_of(url: str, own_hosts: set[str]) -> JoinKind | None:
    host_match = _HOST.match(url)
    if host_match is None:
        return None
    host = host_match.group(1).lower()
    if host in own_hosts:
        return "room"
    for kind, pattern in _SERVICES:
        if pattern.match(host):
            return kind
    return None
