"""Device profiles: the shipped files, matching, and errors that name file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomsystem.devices.profiles import (
    DEFAULT_PROFILES_DIR,
    Candidate,
    Profile,
    ProfileError,
    ProfileSet,
    check_profiles,
    load_profile,
    load_profiles,
    parse_profile,
)
from roomsystem.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"
FOLDER_OF_KIND = {"camera": "cameras", "audio": "audio", "display": "displays"}
ERROR_LINE = re.compile(r"^\S+?:\d+: \S.*: .+$")


def camera_profile(model: str, match: str, certified: bool = True) -> str:
    """A valid UVC camera profile with the given ``[match]`` body."""
    return f"""\
schema_version = 1
[device]
kind = "camera"
vendor = "Test"
model = "{model}"
certified = {"true" if certified else "false"}
sources = ["test"]
{f"[match]{chr(10)}{match}" if match else ""}
[control]
protocol = "uvc"
transport = "usb"
[camera]
presets = 0
formats = [{{ width = 1280, height = 720, fps = 30 }}]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    return caught.value.lines


# -- the shipped profiles


@pytest.fixture(scope="module")
def shipped() -> ProfileSet:
    return load_profiles(DEFAULT_PROFILES_DIR)


def test_every_shipped_profile_loads_and_none_overlap(shipped: ProfileSet) -> None:
    files = sorted(DEFAULT_PROFILES_DIR.rglob("*.toml"))
    assert shipped.errors == []
    assert len(shipped) == len(files)
    assert check_profiles([DEFAULT_PROFILES_DIR]) == []


def test_at_least_twelve_certified_models_across_the_three_kinds(shipped: ProfileSet) -> None:
    certified = [p for p in shipped if p.device.certified]
    assert len(certified) >= 12
    assert {p.device.kind for p in certified} == {"camera", "audio", "display"}


def test_one_generic_fallback_per_kind(shipped: ProfileSet) -> None:
    generic = {p.name: p.device.kind for p in shipped if p.generic}
    assert generic == {
        "generic-uvc-camera": "camera",
        "generic-usb-audio": "audio",
        "generic-cec-display": "display",
    }
    for kind, name in [("camera", "generic-uvc-camera"), ("display", "generic-cec-display")]:
        found = shipped.generic(kind)
        assert found is not None
        assert found.name == name


def test_each_profile_sits_in_the_folder_of_its_kind(shipped: ProfileSet) -> None:
    for profile in shipped:
        assert profile.path is not None
        assert profile.path.parent.name == FOLDER_OF_KIND[profile.device.kind], profile.name


def test_every_shipped_usb_id_is_sourced(shipped: ProfileSet) -> None:
    # Each file names where its identifiers come from; a usb id needs a source that is a
    # database, a quirk table, the device table of the driver that drives it, or a published
    # lsusb, never a guess.
    for profile in shipped:
        assert profile.device.sources
        if profile.match.usb:
            text = " ".join(profile.device.sources).lower()
            assert any(
                word in text for word in ("usb.ids", "fwupd", "lsusb", "linux-media", "libcec")
            ), profile.name


def test_shipped_profiles_are_found_by_what_discovery_sees(shipped: ProfileSet) -> None:
    def matched(**seen: object) -> str | None:
        profile = shipped.match(Candidate(**seen))  # type: ignore[arg-type]
        return profile.name if profile else None

    assert matched(usb_id="046d:085f") == "logitech-ptz-pro-2"
    assert matched(usb_id="046D:089B", bcd_device=0x0020) == "logitech-rally-bar"
    assert matched(usb_id="0b0e:0422", names=("Jabra SPEAK 510 USB",)) == "jabra-speak-510"
    assert matched(names=("Logi Rally Camera",)) == "logitech-rally-camera"
    assert matched(kind="audio", names=("Poly Sync 20-M",)) == "poly-sync-20"
    assert matched(kind="camera", usb_id="1234:5678") == "generic-uvc-camera"
    assert matched(kind="audio", names=("USB Audio Device",)) == "generic-usb-audio"
    assert matched(usb_id="1234:5678", names=("Unknown",)) is None


def test_configured_devices_are_found_by_profile_name(shipped: ProfileSet) -> None:
    nec = shipped.get("nec-multisync-p")
    assert nec is not None
    assert (nec.control.protocol, nec.control.port, nec.control.address) == ("nec", 7142, 1)
    assert nec.control.command_gap_ms == 600
    assert nec.display is not None
    assert "hdmi1" in nec.display.inputs
    assert shipped.get("no-such-profile") is None


def test_profiles_are_frozen(shipped: ProfileSet) -> None:
    profile = shipped.profiles[0]
    with pytest.raises(ValueError, match="frozen"):
        profile.device = profile.device
    assert isinstance(profile.match.usb, tuple)


# -- matching


@pytest.fixture
def matching_set(tmp_path: Path) -> ProfileSet:
    write(
        tmp_path,
        "ranged.toml",
        camera_profile(
            "Old firmware",
            """\
usb = ["046d:085f"]
bcd_device = { min = "0x0000", max = "0x00ff" }
""",
        ),
    )
    write(tmp_path, "plain.toml", camera_profile("Any firmware", 'usb = ["046d:085f"]'))
    write(tmp_path, "named.toml", camera_profile("By name", 'name = ["PTZ Pro"]'))
    write(tmp_path, "named-longer.toml", camera_profile("By longer name", 'name = ["PTZ Pro 2"]'))
    write(tmp_path, "generic.toml", camera_profile("Anything", "", certified=False))
    profiles = load_profiles(tmp_path)
    assert profiles.errors == []
    return profiles


def test_usb_id_with_bcd_range_beats_usb_id_beats_name(matching_set: ProfileSet) -> None:
    names = ("PTZ Pro 2",)

    def matched(candidate: Candidate) -> str | None:
        profile = matching_set.match(candidate)
        return profile.name if profile else None

    assert matched(Candidate("camera", "046d:085f", 0x0042, names)) == "ranged"
    assert matched(Candidate("camera", "046d:085f", 0x0100, names)) == "plain"
    assert matched(Candidate("camera", "046d:085f", None, names)) == "plain"
    assert matched(Candidate("camera", "046d:9999", 0x0042, names)) == "named-longer"
    assert matched(Candidate("camera", None, None, ("Logitech PTZ Pro",))) == "named"


def test_generic_fallback_only_for_a_known_kind(matching_set: ProfileSet) -> None:
    fallback = matching_set.match(Candidate(kind="camera", usb_id="abcd:0001"))
    assert fallback is not None
    assert fallback.name == "generic"
    assert matching_set.match(Candidate(kind=None, usb_id="abcd:0001")) is None
    assert matching_set.match(Candidate(kind="display", names=("PTZ Pro 2",))) is None


def test_an_empty_set_matches_nothing() -> None:
    empty = ProfileSet.empty()
    assert len(empty) == 0
    assert empty.errors == []
    assert empty.match(Candidate(kind="camera", usb_id="046d:085f")) is None


# -- errors: FILE:LINE: key: message


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "unknown_key.toml",
            "16: control.timeout: unknown key (allowed here: address, baudrate, "
            "command_gap_ms, input_settle_s, port, power_settle_s, protocol, timeout_s, "
            "transport)",
        ),
        ("wrong_type.toml", "16: control.baudrate: must be an integer, got '9600'"),
        ("out_of_range.toml", "16: control.port: must be 1 to 65535, got 70000"),
        ("missing_section.toml", "4: display: kind = 'display' needs the [display] table"),
        ("cross_field.toml", "17: control.baudrate: only allowed with transport = 'serial'"),
        ("syntax_error.toml", "6: TOML syntax error: Invalid value"),
    ],
)
def test_each_kind_of_error_names_file_line_and_key(fixture: str, expected: str) -> None:
    path = FIXTURES / fixture
    assert errors_of(path) == [f"{path}:{expected}"]


def test_profile_error_is_a_config_error_with_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        load_profile(FIXTURES / "wrong_type.toml")
    assert isinstance(caught.value, ProfileError)
    assert str(caught.value) == "\n".join(caught.value.lines)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("[camera]\n", "[camera]\npan = { min = 10, max = -10, max_speed = 1 }\n"),
            "14: camera.pan: min must be less than max, got min = 10, max = -10",
        ),
        (
            ('name = ["X"]', 'name = ["X"]\nbcd_device = { min = "0x0001", max = "0x0002" }'),
            "10: match.bcd_device: only allowed together with usb ids",
        ),
        (
            ('transport = "usb"', 'transport = "tcp"\nport = 1'),
            "12: control.transport: protocol 'uvc' runs over 'usb', got 'tcp'",
        ),
        (
            ('protocol = "uvc"', 'protocol = "usb-audio"'),
            "11: control.protocol: protocol 'usb-audio' drives kind 'audio', not 'camera'",
        ),
        (
            ("presets = 0", "presets = 3"),
            "14: camera.presets: UVC has no preset command; must be 0, got 3",
        ),
        (
            (
                "[camera]",
                "[audio]\ncapture_channels = 1\nplayback_channels = 2\n"
                "echo_cancellation = false\nsample_rates = [48000]\n[camera]",
            ),
            "13: audio: not allowed for kind = 'camera'",
        ),
        (
            ("certified = true", "certified = false"),
            "8: match: an uncertified profile is the generic fallback of its kind and has no match rules",
        ),
        (
            ('[match]\nname = ["X"]\n', ""),
            "6: match: a certified profile needs at least one usb or name rule",
        ),
        (
            ('name = ["X"]', 'name = ["X"]\n[buttons]\nKEY_NO_SUCH_KEY = "mute"'),
            "11: buttons.KEY_NO_SUCH_KEY: must be an evdev key name like 'KEY_MICMUTE', got 'KEY_NO_SUCH_KEY'",
        ),
    ],
)
def test_cross_field_rules_point_at_the_key_to_change(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    text = camera_profile("X", 'name = ["X"]').replace(*change, 1)
    path = write(tmp_path, "x.toml", text)
    assert errors_of(path) == [f"{path}:{expected}"]


def test_address_and_transport_keys_follow_the_protocol(tmp_path: Path) -> None:
    text = (FIXTURES / "cross_field.toml").read_text()
    text = text.replace("baudrate = 9600\naddress = 1\n", "address = 101\n")
    text = text.replace("port = 7142\n", "")
    path = write(tmp_path, "nec.toml", text)
    assert errors_of(path) == [
        f"{path}:15: control.port: transport = 'tcp' needs a default port",
        f"{path}:16: control.address: NEC monitor id must be 1 to 100, got 101",
    ]


def test_every_problem_of_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    text = camera_profile("X", 'usb = ["046D:085F"]\nname = ["("]').replace("fps = 30", "fps = 0")
    path = write(tmp_path, "x.toml", text)
    assert errors_of(path) == [
        f"{path}:9: match.usb[0]: must be VENDOR:PRODUCT as 4+4 lower-case hex digits like '046d:085f', got '046D:085F'",
        f"{path}:10: match.name[0]: is not a regular expression (missing ), unterminated subpattern at position 0), got '('",
        f"{path}:16: camera.formats[0].fps: must be 1 to 240, got 0",
    ]


def test_overlapping_usb_ids_in_two_files_name_both(tmp_path: Path) -> None:
    first, second = FIXTURES / "overlap" / "first.toml", FIXTURES / "overlap" / "second.toml"
    expected = (
        f"{second}:12: match.usb[0]: usb id 046d:085f is also claimed by {first}:11 "
        "without bcd_device ranges"
    )
    assert check_profiles([first, second]) == [expected]
    # Loading keeps the first (in path order) and skips the second.
    loaded = load_profiles(FIXTURES / "overlap")
    assert [p.name for p in loaded] == ["first"]
    assert loaded.errors == [expected]


def test_overlapping_bcd_ranges_and_names_are_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.toml",
        camera_profile(
            "A",
            """\
usb = ["1111:2222"]
bcd_device = { min = "0x0100", max = "0x0200" }
name = ["Cam"]
""",
        ),
    )
    write(
        tmp_path,
        "b.toml",
        camera_profile(
            "B",
            """\
usb = ["1111:2222"]
bcd_device = { min = "0x0200", max = "0x0300" }
name = ["cam"]
""",
        ),
    )
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    assert check_profiles([tmp_path]) == [
        f"{b}:9: match.usb[0]: usb id 1111:2222 is also claimed by {a}:9 with overlapping bcd_device ranges",
        f"{b}:11: match.name[0]: name pattern 'cam' is also used by {a}:11 for the same kind",
    ]


def test_disjoint_bcd_ranges_and_a_ranged_beside_an_unranged_rule_are_fine(
    tmp_path: Path,
) -> None:
    for name, bcd in [("old", "0x0000-0x00ff"), ("new", "0x0100-0xffff"), ("any", None)]:
        rule = 'usb = ["1111:2222"]'
        if bcd:
            low, high = bcd.split("-")
            rule += f'\nbcd_device = {{ min = "{low}", max = "{high}" }}'
        write(tmp_path, f"{name}.toml", camera_profile(name, rule))
    assert check_profiles([tmp_path]) == []


def test_two_generic_fallbacks_of_a_kind_and_duplicate_names_are_errors(tmp_path: Path) -> None:
    write(tmp_path, "cameras/fallback.toml", camera_profile("A", "", certified=False))
    write(tmp_path, "more/fallback.toml", camera_profile("B", "", certified=False))
    first, second = tmp_path / "cameras/fallback.toml", tmp_path / "more/fallback.toml"
    assert check_profiles([tmp_path]) == [
        f"{second}:1: (file): profile name 'fallback' is also used by {first}:1",
        f"{second}:6: device.certified: a second generic fallback for kind 'camera'; the first is {first}:6",
    ]


def test_a_broken_file_among_good_ones_is_reported_and_skipped(tmp_path: Path) -> None:
    write(tmp_path, "cameras/good.toml", camera_profile("Good", 'usb = ["1111:2222"]'))
    broken = write(tmp_path, "cameras/broken.toml", (FIXTURES / "wrong_type.toml").read_text())
    write(
        tmp_path,
        "audio/also-good.toml",
        (DEFAULT_PROFILES_DIR / "audio/jabra-speak-510.toml").read_text(),
    )
    loaded = load_profiles(tmp_path)
    assert sorted(p.name for p in loaded) == ["also-good", "good"]
    assert loaded.errors == [f"{broken}:16: control.baudrate: must be an integer, got '9600'"]


def test_check_reports_missing_paths_empty_folders_and_bad_file_names(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    bad_name = write(tmp_path, "Bad Name.toml", camera_profile("X", 'name = ["X"]'))
    assert check_profiles([tmp_path / "nowhere", tmp_path / "empty", bad_name]) == [
        f"{tmp_path / 'nowhere'}: no such file or directory",
        f"{tmp_path / 'empty'}: no *.toml profiles in this folder",
        f"{bad_name}:1: (file): the file name is the profile's name and must be up to 64 "
        "lower-case letters, digits, '-' or '_', got 'Bad Name'",
    ]
    assert load_profiles(tmp_path / "nowhere").errors == [
        f"{tmp_path / 'nowhere'}: no such directory"
    ]


def test_unreadable_files_are_profile_errors(tmp_path: Path) -> None:
    assert errors_of(tmp_path / "gone.toml") == [f"{tmp_path / 'gone.toml'}: no such file"]
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert errors_of(binary)[0].startswith(f"{binary}: cannot read:")
    deep = write(tmp_path, "deep.toml", "a = " + "[" * 5000)
    assert errors_of(deep)[0].startswith(f"{deep}")


# -- fuzzing

KEYS = [
    "schema_version",
    "kind",
    "vendor",
    "usb",
    "name",
    "bcd_device",
    "protocol",
    "transport",
    "baudrate",
    "address",
    "port",
    "pan",
    "presets",
    "formats",
    "inputs",
    "capture_channels",
    "sample_rates",
    "KEY_MICMUTE",
    "a.b",
    '"quoted"',
    "x y",
]
HEADERS = ["[device]", "[match]", "[control]", "[camera]", "[audio]", "[display]"]
HEADERS += ["[buttons]", "[[formats]]", "[camera.pan]", "[", "[]"]
ODD_VALUES = ["true", "false", '"camera"', '"046d:085f"', '"0x0100"', '"uvc"', '"usb"', "[]"]
ODD_VALUES += ["{}", "1979-05-27", "'x'", "nan", "inf", "[[", '"""', "[1,2]", '["("]', "{a=}"]
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True).map(repr),
    st.sampled_from(ODD_VALUES),
    st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "").replace('"', "") + '"'),
)
LINES = st.one_of(
    st.sampled_from(HEADERS),
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINES, max_size=25), base=st.booleans())
def test_random_toml_only_ever_gives_a_profile_or_a_profile_error(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], base: bool
) -> None:
    start = camera_profile("Fuzz", 'name = ["Fuzz"]') if base else ""
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_text(start + "\n".join(lines), encoding="utf-8")
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        assert exc.lines
        for line in exc.lines:
            assert line.startswith(str(path)), line
            assert "\n" not in line
    else:
        assert isinstance(profile, Profile)
        assert profile.path == path


def test_a_profile_can_be_parsed_from_text() -> None:
    profile = parse_profile(camera_profile("Text", 'name = ["Text"]'), "inline.toml")
    assert profile.path is None
    assert profile.name == "test-text"
    with pytest.raises(ProfileError) as caught:
        parse_profile("schema_version = 2\n", "inline.toml")
    assert caught.value.lines == [
        "inline.toml:1: control: required key is missing",
        "inline.toml:1: device: required key is missing",
        "inline.toml:1: schema_version: this program reads schema_version 1, got 2",
    ]
    assert all(ERROR_LINE.match(line) for line in caught.value.lines)
