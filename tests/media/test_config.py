"""The [webrtc] and [media] configuration: any input is settings or an error naming the key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsystem.config import parse_settings
from roomsystem.errors import ConfigError
from tests.test_config import toml_value

KEYS = {
    "webrtc": ["ice_host_addresses", "ice_servers", "stun"],
    "media": [
        "camera",
        "camera_format",
        "microphone",
        "speaker",
        "video_size",
        "frame_rate",
        "video_codec",
        "min_bitrate_kbps",
        "max_bitrate_kbps",
        "recordings_dir",
        "bogus",
    ],
}
VALUES = st.recursive(
    st.booleans()
    | st.integers(-10, 100_000)
    | st.text(max_size=30)
    | st.sampled_from(["127.0.0.1", "::1", "vp8", "h264", "640x360", "/srv/rec", "mjpeg"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    section=st.sampled_from(sorted(KEYS)),
    data=st.data(),
)
def test_any_webrtc_or_media_table_is_settings_or_a_keyed_error(
    section: str, data: st.DataObject
) -> None:
    keys = data.draw(st.lists(st.sampled_from(KEYS[section]), unique=True, max_size=4))
    lines = [f"[{section}]"] + [f"{key} = {toml_value(data.draw(VALUES))}" for key in keys]
    try:
        parsed = parse_settings("\n".join(lines))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("roomsystem.toml:")
        assert f"{section}." in message or "TOML syntax error" in message
        return
    assert parsed.media.min_bitrate_kbps <= parsed.media.max_bitrate_kbps


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[media]\nvideo_codec = "av1"', "media.video_codec"),
        ('[media]\nvideo_size = "1280*720"', "media.video_size"),
        ("[media]\nframe_rate = 120", "media.frame_rate"),
        ("[media]\nmin_bitrate_kbps = 900\nmax_bitrate_kbps = 800", "max_bitrate_kbps"),
        ('[media]\nrecordings_dir = "recordings"', "absolute path"),
    ],
)
def test_bad_media_config_names_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(toml)
