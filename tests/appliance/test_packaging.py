"""The unit templates and device profiles ship in the package, and install works from a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from roomsystem.appliance.install import UNITS, UNITS_SOURCE, render_unit
from roomsystem.appliance.udev import udev_rules
from roomsystem.devices.profiles import DEFAULT_PROFILES_DIR, load_profiles

REPO = Path(__file__).resolve().parents[2]
# What the build reads: the packages and the files pyproject.toml names.
SOURCES = ("pyproject.toml", "README.md", "roomsystem", "controlpanel")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (a build in place would write into it),
    with the Python at hand and nothing fetched."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--quiet", "--wheel-dir", str(work / "dist"), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (work / "dist").glob("roomsystem-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked where Python finds it before the checkout: an installed package."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def run_installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH comes before site-packages, and so before the checkout's editable install.
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=cwd,
    )


def test_the_wheel_holds_the_units_and_every_profile(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for unit in UNITS:
            packaged = archive.read(f"roomsystem/systemd/{unit}").decode()
            assert packaged == (REPO / "systemd" / unit).read_text()
        profiles = sorted(DEFAULT_PROFILES_DIR.rglob("*.toml"))
        assert len(profiles) >= 10
        for profile in profiles:
            relative = profile.relative_to(DEFAULT_PROFILES_DIR).as_posix()
            assert f"roomsystem/firmware_profiles/{relative}" in names
        assert "roomsystem/roomsystem.example.toml" in names


def test_the_repository_keeps_the_units_and_profiles_where_they_were() -> None:
    for unit in UNITS:
        assert (REPO / "systemd" / unit).samefile(UNITS_SOURCE / unit)
    assert (REPO / "firmware_profiles").samefile(DEFAULT_PROFILES_DIR)
    assert UNITS_SOURCE.parent == DEFAULT_PROFILES_DIR.parent == REPO / "roomsystem"


def test_install_from_the_wheel_uses_the_files_it_ships(installed: Path, tmp_path: Path) -> None:
    where = run_installed(
        installed,
        "-c",
        "import roomsystem.appliance.install as i, roomsystem.devices.profiles as p; "
        "print(i.__file__); print(i.UNITS_SOURCE); print(p.DEFAULT_PROFILES_DIR)",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    module, units, profiles = where.stdout.splitlines()
    assert Path(module).is_relative_to(installed)  # not the checkout
    assert Path(units) == installed / "roomsystem/systemd"
    assert Path(profiles) == installed / "roomsystem/firmware_profiles"

    root = tmp_path / "root"
    done = run_installed(
        installed,
        "-m",
        "roomsystem",
        "install",
        "--root",
        str(root),
        "--no-start",
        "--kiosk",
        "none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = root / "etc/systemd/system"
    for unit in UNITS:
        assert (written / unit).read_text() == render_unit(unit, sys.executable)
    assert (written / "multi-user.target.wants/roomsystem.service").is_symlink()
    rules = (root / "etc/udev/rules.d/70-roomsystem.rules").read_text()
    assert rules == udev_rules(load_profiles(DEFAULT_PROFILES_DIR))
    assert 'ATTR{idVendor}=="046d"' in rules  # made from the shipped profiles
    config = root / "etc/roomsystem/roomsystem.toml"
    assert config.read_text() == (REPO / "roomsystem/roomsystem.example.toml").read_text()

    printed = run_installed(installed, "-m", "roomsystem", "udev-rules", cwd=tmp_path)
    assert (printed.returncode, printed.stdout) == (0, rules)
