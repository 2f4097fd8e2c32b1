"""Headless Chromium as the tests and benchmarks run it (see TESTING-NOTES)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
# Playwright adds --headless and a fresh profile directory.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    # Host candidates as addresses, not mDNS names that only a LAN resolver would answer.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # getDisplayMedia without a picker: the fake capture source.
    "--auto-select-desktop-capture-source=Entire screen",
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium with fake camera, microphone and screen, closed on exit."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()
