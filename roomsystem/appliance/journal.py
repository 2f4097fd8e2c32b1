"""Log lines the journal understands: a ``<N>`` syslog priority in front of each line.

systemd sets ``JOURNAL_STREAM`` to the device and inode of the stream it connected to
stdout/stderr; when stderr is that stream, each line gets its priority (sd-daemon(3)), so
``journalctl -p warning -u roomsystem`` shows exactly the warnings and errors.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<priority>name: message``; a traceback stays in the same entry, line breaks escaped."""

    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record).replace("\n", "\n  ")
        return f"<{priority}>{text}"


def writes_to_journal(stream: TextIO, environ: dict[str, str] | os._Environ[str]) -> bool:
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not device or not inode:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return f"{status.st_dev}:{status.st_ino}" == f"{device}:{inode}"


def use_journal_levels(
    stream: TextIO = sys.stderr, handlers: list[logging.Handler] | None = None
) -> bool:
    """Give ``handlers`` (default: the root logger's) the journal format if ``stream`` is
    the journal."""
    if not writes_to_journal(stream, os.environ):
        return False
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    return True
