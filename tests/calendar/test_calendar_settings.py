"""The [calendar] section: what each backend needs, and errors naming file, line and key."""

from __future__ import annotations

import pytest

from roomsystem.config import parse_settings
from roomsystem.errors import ConfigError


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "roomsystem.toml")
    return str(caught.value).splitlines()


def test_a_caldav_calendar() -> None:
    settings = parse_settings(
        '[calendar]\nbackend = "caldav"\nurl = "https://dav.example.org/room/"\n'
        'password_file = "/etc/roomsystem/dav"\nusername = "room"\npoll_seconds = 30.0\n'
    )
    assert settings.calendar.backend == "caldav"
    assert str(settings.calendar.password_file) == "/etc/roomsystem/dav"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[calendar]\nbackend = "ews"\n', "backend 'ews' needs url, mailbox"),
        ('[calendar]\nbackend = "caldav"\n', "backend 'caldav' needs url"),
        (
            '[calendar]\nbackend = "graph"\nmailbox = "r@example.org"\n',
            "backend 'graph' needs graph_tenant, graph_client_id",
        ),
        ('[calendar]\nbackend = "outlook"\n', "calendar.backend: must be one of"),
        ('[calendar]\nurl = "ftp://x"\n', "calendar.url"),
        ('[calendar]\npassword_file = "secret"\n', "must be an absolute path"),
        ("[calendar]\nrelease_after_min = 0\n", "calendar.release_after_min"),
    ],
)
def test_bad_calendar_settings_are_named(text: str, message: str) -> None:
    (error,) = errors_of(text)
    assert error.startswith("roomsystem.toml:")
    assert message in error
