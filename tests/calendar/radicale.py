"""A real Radicale CalDAV server on a free loopback port, in a temporary directory."""

from __future__ import annotations

import base64
import contextlib
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from subprocess import DEVNULL, Popen, TimeoutExpired

USER = "room"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def radicale(root: Path) -> Iterator[str]:
    """Run Radicale; yields its base URL (make calendars with `make_calendar`)."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "radicale.conf"
    config.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n"
        "[auth]\ntype = none\n"
        f"[storage]\nfilesystem_folder = {root / 'collections'}\n"
        "[logging]\nlevel = warning\n"
        "[rights]\ntype = owner_only\n"
    )
    log = root / "radicale.log"
    # A file, not a pipe: a pipe nobody reads would stall a chatty server.
    with log.open("wb") as stderr:
        process = Popen(
            [sys.executable, "-m", "radicale", "--config", str(config)],
            stdout=DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def seed_calendar(root: Path, name: str, items: dict[str, str]) -> None:
    """Write a calendar straight into the storage of a server not yet started in ``root``.

    Radicale's filesystem storage is one iCalendar file per item beside a props file;
    seeding it directly is much faster than one PUT (and one fsync) per item.
    """
    folder = root / "collections" / "collection-root" / USER / name
    folder.mkdir(parents=True)
    (folder / ".Radicale.props").write_text('{"tag": "VCALENDAR"}')
    for href, text in items.items():
        (folder / href).write_text(text)


def make_calendar(base: str, name: str) -> str:
    """A new calendar collection on the server; its URL."""
    url = f"{base}/{USER}/{name}/"
    request = urllib.request.Request(url, method="MKCALENDAR", headers=_auth())
    urllib.request.urlopen(request, timeout=5).close()
    return url


def _auth() -> dict[str, str]:
    token = base64.b64encode(f"{USER}:x".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _wait_until_up(base: str, process: Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError(f"radicale exited: {log.read_text(errors='replace')}")
        try:
            urllib.request.urlopen(base + "/.web/", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise RuntimeError("radicale did not start in 5 s")
