#!/usr/bin/env bash
# Installs what roomsystem needs into ./.venv: Debian packages first (only the missing
# ones, as root), then the Python packages. Safe to run again; later runs are quick.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-dev and gcc build evdev, which ships as source; cec-utils is libCEC's cec-client,
# which drives HDMI-CEC displays (and which the tests run). chromium is the browser the
# meeting and sharing tests join with; xvfb, xdotool and libmtdev1 run the Kivy panel and
# display without a screen; cage is the kiosk compositor the panel and display units start;
# avahi is the other mDNS implementation the sharing tests check the room against.
APT_PACKAGES=(
    python3 python3-venv python3-dev gcc linux-libc-dev cec-utils chromium
    xvfb xdotool libmtdev1 cage avahi-daemon avahi-utils dbus iproute2
)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: these Debian packages are missing; run as root or install them: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
# Reinstall only when the dependencies changed since the last setup.
stamp=.venv/.roomsystem-setup
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
    echo "setup: installing Python packages (the first time takes a few minutes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --editable ".[test]"
    cp pyproject.toml "$stamp"
fi
