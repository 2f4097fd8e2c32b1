"""What the screens show, from snapshots with and without each section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlpanel import views
from controlpanel.client import LinkState
from controlpanel.common import parse_options

NOW = datetime(2026, 11, 23, 9, 5, tzinfo=UTC)


def at(minutes: int) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat()


def live(**sections: Any) -> LinkState:
    return LinkState(connected=True, snapshot=sections, commands=frozenset({"meeting/start"}))


def booking(id: str, start: int, end: int, **extra: Any) -> dict[str, Any]:
    return {"id": id, "subject": f"Subject {id}", "start": at(start), "end": at(end), **extra}


def test_private_bookings_show_no_subject_or_organizer() -> None:
    state = live(
        calendar={
            "bookings": [
                booking("a", -5, 25, private=True, organizer="Ada"),
                booking("b", 30, 60, organizer="Grace"),
            ]
        }
    )
    current, coming = views.now_and_next(state, NOW)
    assert current is not None
    assert (current.title, current.organizer) == (views.PRIVATE_TITLE, "")
    assert [(b.title, b.organizer) for b in coming] == [("Subject b", "Grace")]
    assert views.free_minutes(state, NOW) == 0


def test_check_in_waits_until_release() -> None:
    raw = booking("a", -5, 25, checkin_from=at(-10), release_at=at(5))
    state = live(calendar={"bookings": [raw]})
    (found,) = views.bookings(state) or []
    assert found.waits_for_check_in(NOW)
    assert not found.waits_for_check_in(NOW + timedelta(minutes=6))
    assert views.countdown(NOW + timedelta(seconds=272), NOW) == "4:32"
    checked = live(calendar={"bookings": [{**raw, "checked_in": True}]})
    assert not (views.bookings(checked) or [])[0].waits_for_check_in(NOW)


def test_cancelled_and_broken_bookings_are_left_out() -> None:
    state = live(
        calendar={
            "bookings": [
                booking("a", 10, 20, status="cancelled"),
                {"id": "b", "start": "not a time", "end": at(5)},
                "junk",
                booking("c", 40, 50),
            ]
        }
    )
    assert [b.id for b in views.bookings(state) or []] == ["c"]
    assert views.free_minutes(state, NOW) == 40


def test_missing_sections_are_not_available_not_errors() -> None:
    empty = live()
    assert views.bookings(empty) is None
    assert views.sharing(empty) is None
    assert views.audio(empty) is None
    assert views.participants(empty) == []
    assert views.room_name(empty) == "Room"
    assert views.banners(empty, NOW) == []
    assert views.format_key(None) == views.NOT_AVAILABLE


def test_banners_say_what_needs_attention() -> None:
    state = live(
        devices={
            "devices": [{"id": "cam", "name": "Room camera", "online": False, "error": "no answer"}]
        },
        calendar={"backend": "ews", "stale": True, "stale_message": "server unreachable"},
    )
    assert views.banners(state, NOW) == [
        "Room camera is offline: no answer",
        "Calendar out of date: server unreachable",
    ]
    away = LinkState(connected=False, snapshot=state.snapshot, error="cannot reach the room")
    (only,) = views.banners(away, NOW)
    assert "unreachable" in only


def test_meeting_ids_read_in_groups() -> None:
    assert views.format_meeting_id("2250135240") == "225 013 5240"
    assert views.format_meeting_id("abc") == "abc"
    assert views.format_key("K7P3QX") == "K7P 3QX"


snapshots = st.dictionaries(
    st.sampled_from(["room", "devices", "meeting", "sharing", "calendar", "lifecycle"]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "bookings",
                        "start",
                        "end",
                        "devices",
                        "audio",
                        "participants",
                        "id",
                        "online",
                        "services",
                        "error",
                        "key",
                        "active",
                        "in_meeting",
                        "backend",
                        "stale",
                        "name",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
)


@given(snapshots, st.booleans())
def test_any_snapshot_renders(snapshot: dict[str, Any], connected: bool) -> None:
    state = LinkState(connected=connected, snapshot=snapshot)
    views.banners(state, NOW)
    views.now_and_next(state, NOW)
    views.today(state, NOW)
    views.participants(state)
    views.sharing(state)
    views.room_name(state)
    views.free_minutes(state, NOW)


@given(snapshots)
def test_any_sharing_and_audio_values_format(snapshot: dict[str, Any]) -> None:
    state = LinkState(connected=True, snapshot=snapshot)
    share = views.sharing(state)
    if share is not None:
        views.format_key(share.key)
    views.number((views.audio(state) or {}).get("volume"), 50)


def test_command_line_names_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    options = parse_options(
        "panel",
        "",
        ["--api", "http://127.0.0.1:1", "--token-file", str(token), "--size", "1920x1080"],
    )
    assert (options.api, options.width, options.height) == ("http://127.0.0.1:1", 1920, 1080)
    display = parse_options("display", "", ["--token-file", str(token)], panel=False)
    assert (display.width, display.height) == (1920, 1080)
    with pytest.raises(SystemExit):
        parse_options("panel", "", ["--token-file", str(tmp_path / "missing")])
    assert "missing: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_options("panel", "", ["--api", "127.0.0.1:8080", "--token-file", str(token)])
    assert "http:// or https://" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_options("panel", "", ["--token-file", str(token), "--size", "big"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
