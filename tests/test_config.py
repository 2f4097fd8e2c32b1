"""Configuration: typed settings, and errors that name the file, the line and the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import roomsystem
from roomsystem.config import Settings, load_settings, parse_settings
from roomsystem.errors import ConfigError
from roomsystem.tomlcheck import KeyLocator

GOOD = """\
# A real room
state_dir = "/srv/room"

[room]
name = "Room 4-12"
location = "Building 4, floor 1"
timezone = "Europe/Berlin"

[api]
listen = "[::1]:9000"

[meeting]
passcode_length = 10
waiting_room = true
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "roomsystem.toml")
    return str(caught.value).splitlines()


def test_a_valid_file_becomes_frozen_typed_settings() -> None:
    settings = parse_settings(GOOD)
    assert settings.state_dir == Path("/srv/room")
    assert settings.room.timezone == "Europe/Berlin"
    assert settings.meeting.passcode_length == 10
    assert settings.meeting.join_before_host is False  # untouched keys keep the defaults
    with pytest.raises(ValueError, match="frozen"):
        settings.room.name = "other"


def test_an_empty_file_is_the_demo_defaults() -> None:
    assert parse_settings("") == Settings()


def test_out_of_range_names_file_line_key_and_allowed_values() -> None:
    text = "\n" * 11 + "[meeting]\npasscode_length = 4\n"
    assert errors_of(text) == [
        "roomsystem.toml:13: meeting.passcode_length: must be 6 to 10, got 4"
    ]


def test_unknown_keys_are_errors_that_list_the_allowed_ones() -> None:
    assert errors_of('[room]\nname = "A"\ncolour = "blue"\n') == [
        "roomsystem.toml:3: room.colour: unknown key (allowed here: location, name, timezone)"
    ]
    assert errors_of("[rooom]\nname = 1\n")[0].startswith("roomsystem.toml:1: rooom: unknown key")


def test_every_error_is_reported_in_line_order() -> None:
    text = (
        '[api]\nlisten = "localhost"\n[meeting]\nwaiting_room = "yes"\n[logging]\nlevel = "loud"\n'
    )
    assert errors_of(text) == [
        "roomsystem.toml:2: api.listen: must be HOST:PORT with a port from 0 to 65535, got 'localhost'",
        "roomsystem.toml:4: meeting.waiting_room: must be true or false, got 'yes'",
        "roomsystem.toml:6: logging.level: must be one of 'debug', 'info', 'warning' or 'error', got 'loud'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("room.name = 5", "roomsystem.toml:1: room.name: must be a string, got 5"),
        ('room = { timezone = "Mars/Base" }', "roomsystem.toml:1: room.timezone: must be an IANA"),
        ('state_dir = "relative/dir"', "roomsystem.toml:1: state_dir: must be an absolute path"),
        (
            "meeting.id_digits = 9.5",
            "roomsystem.toml:1: meeting.id_digits: must be an integer, got 9.5",
        ),
        ("room = 3", "roomsystem.toml:1: room: must be a table, got 3"),
        (
            '[room]\nname = ""',
            "roomsystem.toml:2: room.name: must be 1 to 64 characters long, got 0",
        ),
        (
            '[api]\nlisten = "::1:80"',
            "roomsystem.toml:2: api.listen: an IPv6 address must be in brackets",
        ),
        ("[room\nname = 1", "roomsystem.toml:1: TOML syntax error"),
        ('x = """\nname = 1\n"""\ny = 2', "roomsystem.toml:1: x: unknown key"),
    ],
)
def test_each_kind_of_error_says_what_and_where(text: str, expected: str) -> None:
    assert errors_of(text)[0].startswith(expected)


def test_strict_types_do_not_coerce() -> None:
    assert errors_of('[meeting]\npasscode_length = "8"\n') == [
        "roomsystem.toml:2: meeting.passcode_length: must be an integer, got '8'"
    ]
    assert errors_of("[meeting]\nwaiting_room = 1\n")[0].endswith("must be true or false, got 1")


def test_load_settings_names_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such configuration file"):
        load_settings(tmp_path / "absent.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary.toml: cannot read"):
        load_settings(binary)
    path = tmp_path / "roomsystem.toml"
    path.write_text("[meeting]\npasscode_length = 11\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: meeting.passcode_length: must be 6 to 10"):
        load_settings(path)


def test_key_locator_handles_dotted_quoted_and_inline_keys() -> None:
    locator = KeyLocator('a = 1\n[t]\n"q k".x = 2\n[[arr]]\nb = 3\nc = { d = 1 }\n[[arr]]\nb = 4\n')
    assert locator.line_of(("t", "q k", "x")) == 3
    assert locator.line_of(("arr", 0, "b")) == 5
    assert locator.line_of(("arr", 0, "c", "d")) == 6  # inside an inline table: its key's line
    assert locator.line_of(("arr", 1, "b")) == 8
    assert locator.line_of(("nowhere",)) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_settings_or_a_config_error(text: str) -> None:
    try:
        parse_settings(text)
    except ConfigError as exc:
        assert str(exc).startswith("roomsystem.toml:")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["room", "api", "meeting", "lifecycle", "logging", "state_dir", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=8,
        ).filter(lambda v: v is not None),
        max_size=5,
    )
)
def test_any_toml_document_is_settings_or_a_config_error(data: dict[str, object]) -> None:
    text = "\n".join(f"{key} = {toml_value(value)}" for key, value in data.items())
    try:
        parse_settings(text)
    except ConfigError as exc:
        assert all(line.startswith("roomsystem.toml:") for line in str(exc).splitlines())


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        items = ", ".join(
            f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{ " + items + " }"
    if isinstance(value, str):
        return toml_key(value)
    return repr(value)  # ints and floats (inf and nan included) are written alike in TOML


def toml_key(key: str) -> str:
    return json.dumps(key)  # JSON string escapes are TOML basic-string escapes


def test_the_example_file_documents_every_key_with_its_default() -> None:
    example = Path(roomsystem.__file__).with_name("roomsystem.example.toml").read_text()
    uncommented = "\n".join(
        line[2:] for line in example.splitlines() if re.match(r"# (\[\w+\]$|\w+ = )", line)
    )
    assert parse_settings(example) == Settings()
    assert parse_settings(uncommented) == Settings()
    # Keys without a default are shown indented ("#   key = example") and stay commented.
    documented = set(re.findall(r"^#\s+(\w+) = ", example, re.MULTILINE))
    documented |= set(re.findall(r"^# \[\[\w+\.(\w+)\]\]", example, re.MULTILINE))
    declared = {
        name
        for section in Settings.model_fields.values()
        for name in getattr(section.annotation, "model_fields", {})
    } | {
        name
        for name, f in Settings.model_fields.items()
        if not hasattr(f.annotation, "model_fields")
    }
    assert declared <= documented
