"""The room's main display (Kivy): idle, meeting and sharing screens.

Idle shows who the room is, the time, what comes next and how to share (address, key and a
QR code of the share page). In a meeting it shows the composed meeting picture (remote
participants with their names and mute state, the active speaker, shared content), how to
join and the recording notice; while someone shares, the shared screen fills the display
and the sharer's name shows for a moment. The pictures come from the daemon's shared
memory (`controlpanel.video`), everything else from the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import segno
from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics.texture import Texture
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.image import Image
from kivy.uix.screenmanager import NoTransition, Screen, ScreenManager
from kivy.uix.widget import Widget

from controlpanel import views
from controlpanel.client import LinkState, RoomClient
from controlpanel.video import SharedVideo
from controlpanel.widgets import (
    BACKGROUND,
    DANGER,
    MUTED_TEXT,
    WARNING,
    Text,
    card,
    column,
    paint,
    row,
)

QR_QUIET_ZONE = 4
SHARER_NAME_SHOWN_S = 5.0


def qr_texture(text: str) -> Texture:
    """A QR code of ``text`` as a texture, one texel a module, black on white."""
    code = segno.make(text, error="m")
    matrix = [list(line) for line in code.matrix]
    size = len(matrix) + 2 * QR_QUIET_ZONE
    pixels = bytearray(b"\xff" * size * size)
    for y, line in enumerate(matrix):
        for x, dark in enumerate(line):
            if dark:
                # Kivy textures start at the bottom row.
                pixels[(size - 1 - (y + QR_QUIET_ZONE)) * size + x + QR_QUIET_ZONE] = 0
    texture = Texture.create(size=(size, size), colorfmt="luminance")
    texture.blit_buffer(bytes(pixels), colorfmt="luminance", bufferfmt="ubyte")
    texture.mag_filter = "nearest"
    texture.min_filter = "nearest"
    return texture


class DisplayApp(App):
    """The main display. `named` holds widgets a script may read by name."""

    title = "Room display"

    def __init__(self, client: RoomClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client
        self.named: dict[str, Widget] = {}
        self.state = LinkState()
        self.banner_text = ""
        self._qr_for: str | None = None
        self._join_qr_for: str | None = None
        self._sharer_shown: str | None = None
        self._tiles_shown: object = None

    def name_it(self, name: str, widget: Any) -> Any:
        self.named[name] = widget
        return widget

    def build(self) -> Widget:
        Window.clearcolor = BACKGROUND
        # Screens switch at once: with a fade transition the display drew about a third
        # fewer 1080p video frames (bench.display_fps, software rendering).
        self.manager = ScreenManager(transition=NoTransition())
        for name, content in (
            ("idle", self._idle()),
            ("meeting", self._meeting()),
            ("sharing", self._sharing()),
        ):
            screen = Screen(name=name)
            screen.add_widget(content)
            self.manager.add_widget(screen)
        self.banner = self.name_it(
            "banner", Text("", size=22, size_hint_y=None, height=0, padding=(16, 0))
        )
        return column(self.banner, self.manager, padding=0, spacing=0)

    def _idle(self) -> Widget:
        self.room_label = self.name_it("room_name", Text("", size=64, bold=True))
        self.clock_label = self.name_it("clock", Text("", size=64, halign="right"))
        self.date_label = Text("", size=26, color=MUTED_TEXT, halign="right")
        self.next_labels = [self.name_it(f"next_{n}", Text("", size=30)) for n in range(4)]
        self.share_label = self.name_it("share_address", Text("", size=30))
        self.key_label = self.name_it("sharing_key", Text("", size=72, bold=True))
        self.pairing_label = self.name_it("pairing_code", Text("", size=30, color=WARNING))
        self.qr = self.name_it("share_qr", Image(fit_mode="contain", size_hint_x=0.4))
        return column(
            row(
                self.room_label,
                column(self.clock_label, self.date_label, spacing=0, size_hint_x=0.5),
                size_hint_y=0.22,
            ),
            row(
                card(
                    Text("Coming up", size=28, color=MUTED_TEXT, size_hint_y=None, height=44),
                    *self.next_labels,
                    size_hint_x=0.45,
                ),
                card(
                    Text(
                        "Share your screen", size=28, color=MUTED_TEXT, size_hint_y=None, height=44
                    ),
                    row(
                        column(self.share_label, self.key_label, self.pairing_label),
                        self.qr,
                    ),
                ),
                spacing=24,
            ),
            padding=40,
            spacing=24,
        )

    def _meeting(self) -> Widget:
        self.meeting_label = self.name_it("meeting_title", Text("", size=34, bold=True))
        self.passcode_label = self.name_it("passcode", Text("", size=34, bold=True))
        self.recording_label = self.name_it(
            "recording_notice", Text("", size=30, color=DANGER, size_hint_y=None, height=0)
        )
        self.join_label = self.name_it("join", Text("", size=18, color=MUTED_TEXT))
        self.join_qr = self.name_it("join_qr", Image(fit_mode="contain"))
        self.meeting_video = self.name_it("meeting_video", SharedVideo(size_hint_x=0.7))
        self.people = column(spacing=4)
        return column(
            self.recording_label,
            row(
                self.meeting_video,
                card(
                    Text(
                        "Join this meeting", size=26, color=MUTED_TEXT, size_hint_y=None, height=40
                    ),
                    self.meeting_label,
                    self.passcode_label,
                    self.join_qr,
                    self.join_label,
                    self.people,
                    size_hint_x=0.3,
                ),
                spacing=16,
            ),
            padding=16,
            spacing=16,
        )

    def _sharing(self) -> Widget:
        self.share_video = self.name_it("share_video", SharedVideo())
        self.sharer_label = self.name_it(
            "sharer",
            Text(
                "",
                size=40,
                bold=True,
                halign="center",
                size_hint=(1, None),
                height=96,
                pos_hint={"top": 1},
            ),
        )
        screen = FloatLayout()
        screen.add_widget(self.share_video)
        screen.add_widget(self.sharer_label)
        return screen

    def on_start(self) -> None:
        self.client.add_listener(self.render)
        self.render(self.client.state)
        Clock.schedule_interval(lambda dt: self.tick(), 1.0)

    def on_stop(self) -> None:
        self.client.stop()

    def tick(self) -> None:
        now = datetime.now(UTC)
        zone = views.room_zone(self.state)
        self.clock_label.text = views.clock_text(now, zone)
        self.date_label.text = views.date_text(now, zone)

    def render(self, state: LinkState) -> None:
        self.state = state
        now = datetime.now(UTC)
        self.room_label.text = views.room_name(state)
        self._render_idle(state, now)
        self._render_meeting(state)
        self._render_sharing(state)
        self._render_video(state)
        share = views.sharing(state)
        if share is not None and share.active:
            self.manager.current = "sharing"
        elif views.in_meeting(state):
            self.manager.current = "meeting"
        else:
            self.manager.current = "idle"
        self._render_banner(state, now)
        self.tick()

    def _render_banner(self, state: LinkState, now: datetime) -> None:
        # The display only shows what stops the room from working (the panel has details),
        # and, outside the idle screen that has its own line, a panel's pairing code.
        if not state.connected:
            lines, colour = views.banners(state, now)[:1], DANGER
        elif self.manager.current != "idle" and views.pairing_prompt(state):
            lines, colour = [views.pairing_prompt(state)], WARNING
        else:
            lines, colour = [], BACKGROUND
        self.banner_text = lines[0] if lines else ""
        self.banner.text = self.banner_text
        self.banner.height = 48 if lines else 0
        paint(self.banner, colour)

    def _render_idle(self, state: LinkState, now: datetime) -> None:
        zone = views.room_zone(state)
        current, coming = views.now_and_next(state, now)
        upcoming = ([current] if current else []) + coming
        if views.bookings(state) is None:
            lines = [f"Calendar {views.NOT_AVAILABLE}"]
        elif not upcoming:
            lines = ["No more bookings today"]
        else:
            lines = [f"{b.span(zone)}  {b.title}" for b in upcoming[:4]]
        for label, line in zip(self.next_labels, [*lines, "", "", "", ""], strict=False):
            label.text = line
        share = views.sharing(state)
        if share is None or not (share.key or share.share_url):
            self.share_label.text = f"Sharing {views.NOT_AVAILABLE}"
            self.key_label.text = ""
            self._show_qr(None)
        else:
            self.share_label.text = f"Go to {share.share_url or views.NOT_AVAILABLE}\nand enter"
            self.key_label.text = views.format_key(share.key)
            self._show_qr(share.share_url)
        self.pairing_label.text = views.pairing_prompt(state)

    def _show_qr(self, url: str | None) -> None:
        if url == self._qr_for:
            return
        self._qr_for = url
        if url:
            self.qr.texture = qr_texture(url)
            self.qr.opacity = 1
        else:
            self.qr.opacity = 0

    def _render_meeting(self, state: LinkState) -> None:
        meeting = views.meeting(state) or {}
        running = bool(meeting.get("in_meeting"))
        meeting_id = views.format_meeting_id(str(meeting.get("id", "")))
        self.meeting_label.text = f"Meeting ID {meeting_id}" if running else ""
        self.passcode_label.text = f"Passcode {meeting.get('passcode', '')}" if running else ""
        recording = bool(meeting.get("recording"))
        self.recording_label.text = "\u25cf This meeting is being recorded" if recording else ""
        self.recording_label.height = 48 if recording else 0
        join = views.text_or_none(meeting.get("join_url")) if running else None
        self.join_label.text = join or ""
        if join != self._join_qr_for:
            self._join_qr_for = join
            self.join_qr.texture = qr_texture(join) if join else None
            self.join_qr.opacity = 1 if join else 0
        people = [p for p in views.participants(state) if not p.waiting]
        if people == self._tiles_shown:
            return
        self._tiles_shown = people
        self.people.clear_widgets()  # nobody yet: the picture itself says so
        for person in people[:8]:
            status = "  (muted)" if person.muted else ""
            line = Text(f"{person.name}{status}", size=24, size_hint_y=None, height=36)
            self.people.add_widget(self.name_it(f"tile_{person.id}", line))

    def _render_video(self, state: LinkState) -> None:
        feed = views.display_feed(state)
        source = Path(feed) if feed and state.connected else None
        self.meeting_video.show(source)
        self.share_video.show(source)

    def _render_sharing(self, state: LinkState) -> None:
        share = views.sharing(state)
        sharer = share.sharer if share and share.active else None
        if sharer != self._sharer_shown:
            self._sharer_shown = sharer
            self.sharer_label.text = f"{sharer} is sharing" if sharer else ""
            paint(self.sharer_label, (0, 0, 0, 0.6 if sharer else 0))
            if sharer:
                # The name shows for a moment, then the content has the whole screen.
                Clock.schedule_once(lambda dt: self._hide_sharer(sharer), SHARER_NAME_SHOWN_S)

    def _hide_sharer(self, sharer: str) -> None:
        if self._sharer_shown == sharer:
            self.sharer_label.text = ""
            paint(self.sharer_label, (0, 0, 0, 0))
