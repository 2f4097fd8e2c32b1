"""``roomsystem diag``: a support bundle with everything support needs and no secret."""

from __future__ import annotations

import asyncio
import json
import sys
import tarfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from roomsystem.appliance.diag import REDACTED, redact, redact_toml
from roomsystem.config import parse_settings
from roomsystem.daemon import Daemon
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.state import SharingState

SECRETS = {
    "calendar": "calendar-pass-1234",
    "smtp": "smtp-pass-5678",
    "hook": "hook-token-9012",
    "turn": "turn-credential-3456",
    "pairing": "PAIR9876",
    "passcode": "83920174",
    "sharing_key": "KEY47Q",
    "device": "pjlink-secret-77",
}


def secret_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.secret"
    path.write_text(SECRETS[name] + "\n")
    path.chmod(0o600)
    return path


def config_text(tmp_path: Path) -> str:
    return f"""
state_dir = "{tmp_path / "state"}"
[api]
listen = "127.0.0.1:0"
[sharing]
pairing_code = "{SECRETS["pairing"]}"
[calendar]
backend = "caldav"
url = "http://127.0.0.1:9/cal/"
username = "room"
password_file = "{secret_file(tmp_path, "calendar")}"
[[webrtc.ice_servers]]
urls = ["turn:turn.example.org:3478"]
username = "room"
credential = "{SECRETS["turn"]}"
[[devices.add]]
id = "projector"
profile = "epson-eb-l1755u"
host = "127.0.0.1"
password_file = "{secret_file(tmp_path, "device")}"
[alerts]
webhook_url = "http://127.0.0.1:9/hook"
webhook_token_file = "{secret_file(tmp_path, "hook")}"
smtp_host = "127.0.0.1"
smtp_username = "room"
smtp_password_file = "{secret_file(tmp_path, "smtp")}"
mail_from = "room@example.org"
mail_to = ["it@example.org"]
"""


async def test_the_bundle_holds_the_room_and_no_token_password_or_passcode(
    tmp_path: Path,
) -> None:
    config = tmp_path / "roomsystem.toml"
    config.write_text(config_text(tmp_path))
    daemon = Daemon(parse_settings(config.read_text()), lambda settings, bus: [])
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.room.ready.wait(), 5)
        policy = daemon.room.bus.get("meeting")
        assert isinstance(policy, MeetingState)
        daemon.room.bus.publish(
            "meeting",
            MeetingState(
                in_meeting=True,
                id="1234567890",
                passcode=SECRETS["passcode"],
                join_url=f"https://room/j/1234567890?pwd={SECRETS['passcode']}",
                policy=policy.policy,
            ),
        )
        daemon.room.bus.publish(
            "sharing", SharingState(key=SECRETS["sharing_key"], share_url="https://room/share")
        )
        output = tmp_path / "out" / "bundle.tar.gz"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roomsystem",
            "diag",
            "--output",
            str(output),
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        token = daemon.room.api_token
    finally:
        await daemon.stop()

    assert output.stat().st_mode & 0o077 == 0
    with tarfile.open(output) as archive:
        files = {
            member.name.split("/", 1)[1]: archive.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }
    assert {
        "versions.json",
        "config.toml",
        "settings.json",
        "state.json",
        "log.txt",
        "system.json",
    } <= set(files)
    everything = "\n".join(files.values())
    for secret in [token, *SECRETS.values()]:
        assert secret not in everything, secret
    state = json.loads(files["state.json"])
    assert state["lifecycle"]["phase"] == "ready"
    assert state["meeting"]["in_meeting"] is True
    assert state["alerts"] == {"active": [], "recent": []}
    assert state["devices"]["devices"] == []
    assert f'credential = "{REDACTED}"' in files["config.toml"]
    assert f'pairing_code = "{REDACTED}"' in files["config.toml"]
    assert "smtp.secret" in files["config.toml"]  # where a secret lives is kept
    system = json.loads(files["system.json"])
    assert system["cpu_count"] >= 1
    assert system["kernel"].startswith("Linux")
    assert json.loads(files["versions.json"])["packages"]["aiohttp"]


quoted = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"\\'),
    min_size=4,
    max_size=40,
)


@given(
    key=st.sampled_from(["password", "credential", "token", "client_secret", "pairing_code"]),
    value=quoted,
    indent=st.sampled_from(["", "  ", "# ", "#   "]),
)
def test_toml_redaction_removes_any_secret_value(key: str, value: str, indent: str) -> None:
    text = f'[x]\n{indent}{key} = "{value}"\nname = "kept"\n'
    redacted = redact_toml(text)
    assert f'{indent}{key} = "{REDACTED}"' in redacted
    assert 'name = "kept"' in redacted
    assert redact({"a": {key: value, "b": [{"passcode": value}]}}) == {
        "a": {key: REDACTED, "b": [{"passcode": REDACTED}]}
    }
