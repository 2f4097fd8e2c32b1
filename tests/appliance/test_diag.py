"""``roomsystem diag``: a support bundle with everything support needs and no secret."""

from __future__ import annotations

import asyncio
import json
import sys
import tarfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from roomsystem.appliance.diag import REDACTED, history_text, redact, redact_toml
from roomsystem.config import parse_settings
from roomsystem.daemon import Daemon
from roomsystem.errors import DeviceError
from roomsystem.lifecycle import Phase, Service, ServiceState
from roomsystem.meeting.state import MeetingState
from roomsystem.sharing.state import SharingState
from tests.util import until_lifecycle

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


async def run_diag(config: Path, output: Path) -> None:
    """``roomsystem diag`` in its own process: it reads the running room over the API."""
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


def bundle_files(output: Path) -> dict[str, str]:
    with tarfile.open(output) as archive:
        return {
            member.name.split("/", 1)[1]: archive.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


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
        await run_diag(config, output)
        token = daemon.room.api_token
    finally:
        await daemon.stop()

    assert output.stat().st_mode & 0o077 == 0
    files = bundle_files(output)
    assert {
        "versions.json",
        "config.toml",
        "settings.json",
        "state.json",
        "log.txt",
        "system.json",
        "history.txt",
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


class ProjectorOnce(Service):
    """A projector that refuses the first login, with a message that quotes the password."""

    name = "projector"

    def __init__(self) -> None:
        self.attempts = 0

    async def setup(self, phase: Phase) -> None:
        if phase is Phase.CONNECT:
            self.attempts += 1
            if self.attempts == 1:
                raise DeviceError(f"login refused with password {SECRETS['device']}")


async def test_the_bundle_holds_the_lifecycle_history_scrubbed(tmp_path: Path) -> None:
    config = tmp_path / "roomsystem.toml"
    config.write_text(
        config_text(tmp_path) + "[lifecycle]\nretry_initial_s = 0.05\nretry_max_s = 0.2\n"
    )
    daemon = Daemon(parse_settings(config.read_text()), lambda settings, bus: [ProjectorOnce()])
    await daemon.start()
    try:
        await until_lifecycle(
            daemon.room.bus, lambda s: s.services[0].state is ServiceState.RUNNING
        )
        output = tmp_path / "bundle.tar.gz"
        await run_diag(config, output)
    finally:
        await daemon.stop()
    files = bundle_files(output)
    history = json.loads(files["state.json"])["lifecycle"]["history"]
    phases = [e["phase"] for e in history if e["kind"] == "phase"]
    assert phases == ["config", "profiles", "discover", "connect", "ready"]
    changes = [(e["service"], e["change"]) for e in history if e["kind"] == "service"]
    assert changes == [("projector", "failed"), ("projector", "retrying"), ("projector", "running")]
    failed = next(e for e in history if e.get("change") == "failed")
    assert failed["error"] == f"login refused with password {REDACTED}"
    assert failed["error_kind"] == "device"
    timeline = files["history.txt"].splitlines()
    assert timeline[0].endswith("  phase config")
    assert any(
        line.endswith(
            f"projector failed in connect (device error): login refused with password {REDACTED}"
        )
        for line in timeline
    )
    assert any(line.endswith("projector running (after 1 failure(s))") for line in timeline)
    assert SECRETS["device"] not in "\n".join(files.values())


def test_the_timeline_says_so_when_the_state_has_no_history() -> None:
    assert history_text({}) == "(the room's state has no lifecycle history)\n"
    assert history_text({"history": [{"kind": "phase", "at": "t", "phase": "ready"}, 3]}) == (
        "t  phase ready\n(not a history entry: 3)\n"
    )


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
