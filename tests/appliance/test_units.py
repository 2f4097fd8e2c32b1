"""The unit files pass systemd's own checks, and install/uninstall work into a staging root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from roomsystem.appliance.install import UNITS, UNITS_SOURCE, render_unit
from roomsystem.appliance.udev import udev_rules
from roomsystem.cli import main
from roomsystem.devices.profiles import DEFAULT_PROFILES_DIR, load_profiles

EXPOSURE_LIMIT = "20"  # systemd-analyze counts tenths: 2.0


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """The units as install writes them: ExecStart pointed at this Python."""
    for name in UNITS:
        (tmp_path / name).write_text(render_unit(name, sys.executable))
    return tmp_path


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_passes_systemd_analyze_verify_without_a_warning(
    rendered: Path, unit: str
) -> None:
    done = analyze("verify", "--man=no", str(rendered / unit))
    # verify reports unknown keys and bad values on stderr but still exits 0.
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_is_hardened_to_an_exposure_of_at_most_2(unit: str) -> None:
    done = analyze(
        "security", "--offline=yes", f"--threshold={EXPOSURE_LIMIT}", str(UNITS_SOURCE / unit)
    )
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert exposure is not None, done.stdout + done.stderr
    assert float(exposure[1]) <= 2.0
    assert done.returncode == 0, done.stderr


def test_the_daemon_unit_is_a_notify_service_with_a_watchdog() -> None:
    text = (UNITS_SOURCE / "roomsystem.service").read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "DevicePolicy=closed"):
        assert f"\n{line}\n" in text
    assert re.search(r"^SupplementaryGroups=video audio dialout input$", text, re.M)


def test_udev_rules_give_every_certified_usb_id_to_the_service_group() -> None:
    profiles = load_profiles(DEFAULT_PROFILES_DIR)
    text = udev_rules(profiles)
    ids = {usb_id for p in profiles if p.device.certified for usb_id in p.match.usb}
    assert ids  # the shipped profiles do name USB devices
    for usb_id in ids:
        vendor, product = usb_id.split(":")
        rule = (
            f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", ATTR{{idVendor}}=="{vendor}", '
            f'ATTR{{idProduct}}=="{product}", GROUP="roomsystem", MODE="0660"'
        )
        assert rule in text
    generic = [p for p in profiles if not p.device.certified]
    assert all(f"({p.name})" not in text for p in generic)
    rule_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    pair = r'[A-Z]+(\{[A-Za-z_]+\})?(==|!=|=|\+=)"[^"]*"'
    for line in rule_lines:
        assert re.fullmatch(rf"{pair}(, {pair})*", line), line
    assert 'SYMLINK+="roomsystem/serial-$env{ID_PATH_TAG}"' in text


def test_the_udev_rules_command_prints_the_same_rules(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["udev-rules"]) == 0
    assert capsys.readouterr().out == udev_rules(load_profiles(DEFAULT_PROFILES_DIR))


def test_install_into_a_root_then_uninstall_keeps_config_and_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert main(["install", "--root", str(root), "--kiosk", "both"]) == 0
    units = root / "etc/systemd/system"
    for name in UNITS:
        text = (units / name).read_text()
        assert f"{sys.executable} -m " in text
        done = analyze("verify", "--man=no", str(units / name))
        assert (done.returncode, done.stderr) == (0, "")
    assert (units / "multi-user.target.wants/roomsystem.service").is_symlink()
    assert (units / "graphical.target.wants/roomsystem-panel.service").is_symlink()
    assert (root / "etc/udev/rules.d/70-roomsystem.rules").read_text() == udev_rules(
        load_profiles(DEFAULT_PROFILES_DIR)
    )
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^roomsystem:x:\d+:\d+:.*:/var/lib/roomsystem:", passwd, re.M)
    groups = (root / "etc/group").read_text()
    for group in ("video", "audio", "dialout", "input"):
        members = re.search(rf"^{group}:x:\d+:(.*)$", groups, re.M)
        assert members is not None
        assert "roomsystem" in members[1].split(",")
    # The display (the kiosk user) reads the daemon's display picture through its group.
    daemon_group = re.search(r"^roomsystem:x:\d+:(.*)$", groups, re.M)
    assert daemon_group is not None
    assert "roomsystem-kiosk" in daemon_group[1].split(",")

    config = root / "etc/roomsystem/roomsystem.toml"
    assert config.read_text().startswith("# roomsystem configuration")
    config.write_text('[room]\nname = "Room 4-12"\n')
    state = root / "var/lib/roomsystem"
    state.mkdir(parents=True)
    (state / "room.json").write_text("{}")

    assert main(["install", "--root", str(root)]) == 0
    assert config.read_text() == '[room]\nname = "Room 4-12"\n'  # never overwritten
    assert "kept" in capsys.readouterr().out

    assert main(["uninstall", "--root", str(root)]) == 0
    assert not any((units / name).exists() for name in UNITS)
    assert not (units / "multi-user.target.wants/roomsystem.service").exists()
    assert not (root / "etc/udev/rules.d/70-roomsystem.rules").exists()
    assert "roomsystem:" not in (root / "etc/passwd").read_text()
    assert config.read_text() == '[room]\nname = "Room 4-12"\n'
    assert (state / "room.json").exists()


def test_install_refuses_a_python_the_services_cannot_see(tmp_path: Path) -> None:
    from roomsystem.appliance.install import InstallError, install

    with pytest.raises(InstallError, match="ProtectHome"):
        install(tmp_path, "/home/someone/venv/bin/python")
    assert not (tmp_path / "etc").exists()
