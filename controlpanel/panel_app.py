"""The touch panel's screens (Kivy): Home, Meeting, Agenda and Settings.

The panel renders the room's snapshot and sends commands; it holds no state of its own
beyond what is on screen. A control is enabled only while the room is reachable, offers
the command and the snapshot says it makes sense, so nothing stale looks live.

A panel that is not paired yet starts on the pairing screen instead: it lists the rooms
found over mDNS, asks the one picked for a code and takes the code on a number pad; once
the room has given it a token it becomes the normal panel, connected with that token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.gridlayout import GridLayout
from kivy.uix.screenmanager import NoTransition, Screen, ScreenManager
from kivy.uix.scrollview import ScrollView
from kivy.uix.widget import Widget
from kivy.utils import escape_markup

from controlpanel import __version__, views
from controlpanel.client import (
    CommandResult,
    LinkState,
    PairingFailure,
    PairingGrant,
    PairingSetup,
    PairingTicket,
    RoomChoice,
    RoomClient,
    complete_and_keep,
    find_rooms,
    request_pairing,
)
from controlpanel.widgets import (
    ACCENT,
    BACKGROUND,
    DANGER,
    GOOD,
    MUTED_TEXT,
    NEUTRAL,
    TEXT,
    WARNING,
    Text,
    TouchButton,
    card,
    column,
    on_press,
    paint,
    row,
)

logger = logging.getLogger(__name__)

SCREENS = ("home", "meeting", "agenda", "settings")
BOOK_MINUTES = (15, 30, 60)
PRESETS = (1, 2, 3)
ZOOM_STEP = 2000
# The room's own camera on/off (the media service's; participants see black while off).
CAMERA_VIDEO_COMMAND = "media/camera"
CODE_KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "clear", "0", "ok")
# While no room offers pairing, look again this often (rooms come and go on a network).
SEARCH_AGAIN_S = 3.0
Enabled = Callable[[LinkState], bool]


def always(state: LinkState) -> bool:
    return True


class PairingView(BoxLayout):
    """The pairing screen: pick a room found over mDNS, type the code its display shows.

    Network jobs run on the setup's worker and answer on Kivy's clock; ``on_paired`` gets
    the grant once its token is kept in the token file.
    """

    def __init__(
        self,
        setup: PairingSetup,
        name_it: Callable[[str, Any], Any],
        on_paired: Callable[[PairingGrant], None],
    ) -> None:
        super().__init__(orientation="vertical", spacing=16, padding=24)
        self.setup = setup
        self._name_it = name_it
        self._on_paired = on_paired
        self._ticket: PairingTicket | None = None
        self._typed = ""
        self._busy = False
        self._rooms_shown: tuple[RoomChoice, ...] | None = None
        self.status = name_it("pair_status", Text("", size=24, size_hint_y=None, height=90))
        self.body = BoxLayout()
        title = Text("Pair this panel with a room", size=34, bold=True)
        self.add_widget(row(title, size_hint_y=None, height=56))
        self.add_widget(self.status)
        self.add_widget(self.body)
        self.rooms_view = self._rooms_layout()
        self.code_view = self._code_layout()

    def begin(self) -> None:
        if self.setup.api:
            self._pick(RoomChoice.from_url(self.setup.api))
        else:
            self.search()

    def say(self, text: str, color: tuple[float, float, float, float] = TEXT) -> None:
        self.status.text = text
        self.status.color = color

    def _show(self, view: Widget) -> None:
        if view.parent is not self.body:
            self.body.clear_widgets()
            self.body.add_widget(view)

    # -- finding a room

    def _rooms_layout(self) -> Widget:
        self.room_list = GridLayout(cols=1, spacing=8, size_hint_y=None)
        self.room_list.bind(minimum_height=self.room_list.setter("height"))
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.room_list)
        self.search_button = self._name_it(
            "pair_search", TouchButton("Search again", size=24, size_hint_y=None, height=72)
        )
        on_press(self.search_button, self.search)
        return column(scroll, self.search_button)

    def search(self) -> None:
        if self._busy:
            return
        self._busy = True
        self._show(self.rooms_view)
        self.search_button.disabled = True
        where = f" on {self.setup.interface}" if self.setup.interface else ""
        self.say(f"Looking for rooms{where}\u2026", MUTED_TEXT)
        self.setup.worker.submit(find_rooms(self.setup.interface), self._found, self._failed)

    def _found(self, rooms: list[RoomChoice]) -> None:
        self._busy = False
        self.search_button.disabled = False
        self._list_rooms(rooms)
        if rooms:
            self.say("Pick the room you are in: its display will show a code to type here.")
            return
        self.say(
            "No room offers pairing here yet; still looking. (The room's API must listen on"
            ' the network: [api] listen = "0.0.0.0:8080".)',
            WARNING,
        )
        Clock.schedule_once(lambda dt: self._search_while_none(), SEARCH_AGAIN_S)

    def _search_while_none(self) -> None:
        if self.rooms_view.parent is self.body and not self._rooms_shown:
            self.search()

    def _list_rooms(self, rooms: Sequence[RoomChoice]) -> None:
        if tuple(rooms) == self._rooms_shown:
            return
        self._rooms_shown = tuple(rooms)
        self.room_list.clear_widgets()
        for number, room in enumerate(rooms):
            button = self._name_it(
                f"pair_room_{room.room_id or number}",
                TouchButton(f"{room.name}\n{room.where}", size=26, size_hint_y=None, height=96),
            )
            on_press(button, partial(self._pick, room))
            self.room_list.add_widget(button)

    def _pick(self, room: RoomChoice) -> None:
        if self._busy:
            return
        self._busy = True
        self._enable(self.room_list.children, False)
        self.say(f"Asking {room.name} for a code\u2026", MUTED_TEXT)
        job = request_pairing(room, self.setup.panel_name)
        self.setup.worker.submit(job, self._asked, self._failed)

    def _asked(self, answer: PairingTicket | PairingFailure) -> None:
        self._busy = False
        if isinstance(answer, PairingFailure):
            self._back_to_rooms(answer.message)
            return
        self._ticket, self._typed = answer, ""
        self.code_for.text = f"Type the code that {answer.room.name} shows on its display"
        self.say(f"Paired as \u201c{self.setup.panel_name}\u201d once the code is right.")
        self._show(self.code_view)
        self._render_code()

    def _back_to_rooms(self, message: str) -> None:
        self._ticket, self._typed, self._busy = None, "", False
        if self.setup.api:
            self._rooms_shown = None
            self._list_rooms([RoomChoice.from_url(self.setup.api)])
        self._show(self.rooms_view)
        self._enable(self.room_list.children, True)
        self.say(message, DANGER)

    # -- typing the code

    def _code_layout(self) -> Widget:
        self.code_for = self._name_it("pair_code_for", Text("", size=26))
        self.code_label = self._name_it(
            "pair_code", Text("", size=56, bold=True, size_hint_y=None, height=100)
        )
        self.pad = GridLayout(cols=3, spacing=8, size_hint=(None, None), size=(420, 400))
        for key in CODE_KEYS:
            label = {"clear": "Clear", "ok": "OK"}.get(key, key)
            tone = GOOD if key == "ok" else NEUTRAL
            button = self._name_it(f"pair_key_{key}", TouchButton(label, tone=tone, size=30))
            on_press(button, partial(self._key, key))
            self.pad.add_widget(button)
            if key == "ok":
                self.ok_button = button
        self.back_button = self._name_it(
            "pair_back", TouchButton("Back", size=24, size_hint=(None, None), width=200, height=72)
        )
        on_press(self.back_button, lambda: self._back_to_rooms("Pick a room to pair with."))
        left = column(self.code_for, self.code_label, self.back_button, Widget())
        return row(left, self.pad, spacing=24)

    def _key(self, key: str) -> None:
        ticket = self._ticket
        if ticket is None or self._busy:
            return
        if key == "ok":
            self._send(ticket)
            return
        if key == "clear":
            self._typed = ""
        elif len(self._typed) < ticket.code_digits:
            self._typed += key
        self._render_code()

    def _render_code(self) -> None:
        digits = self._ticket.code_digits if self._ticket else 6
        self.code_label.text = views.typed_code(self._typed, digits)
        # While the room checks a code, nothing here may start something else.
        self._enable([*self.pad.children, self.back_button], not self._busy)
        self.ok_button.disabled = self._busy or len(self._typed) != digits

    def _send(self, ticket: PairingTicket) -> None:
        self._busy = True
        self._render_code()
        self.say("Checking the code\u2026", MUTED_TEXT)
        job = complete_and_keep(ticket, self._typed, self.setup.token_file)
        self.setup.worker.submit(job, self._checked, self._failed)

    def _checked(self, answer: PairingGrant | PairingFailure) -> None:
        self._busy = False
        if isinstance(answer, PairingGrant):
            self.say(f"Paired with {answer.room.name}.", GOOD)
            self._on_paired(answer)
            return
        if answer.start_over:
            self._back_to_rooms(answer.message)
            return
        self._typed = ""
        self._render_code()
        self.say(answer.message, DANGER)

    def _failed(self, error: BaseException) -> None:
        self._back_to_rooms(f"Something went wrong: {error}")

    @staticmethod
    def _enable(buttons: Sequence[Widget], enabled: bool) -> None:
        for button in buttons:
            button.disabled = not enabled


class PanelApp(App):
    """The touch panel. `named` holds the widgets a script may tap by name."""

    title = "Room panel"

    def __init__(
        self,
        client: RoomClient,
        admin_pin: str,
        pairing: PairingSetup | None = None,
        pair_first: bool = True,
        **kwargs: Any,
    ) -> None:
        """``pairing``: how this panel pairs, if it pairs at all (a panel with its own
        token); it starts on the pairing screen when ``pair_first``, and goes back to it
        when the room refuses its token (it was unpaired)."""
        super().__init__(**kwargs)
        self.client = client
        self.admin_pin = admin_pin
        self.pairing_setup = pairing
        self._pair_first = pairing is not None and pair_first
        self.pairing_view: PairingView | None = None
        self.named: dict[str, Widget] = {}
        self.actions: list[tuple[TouchButton, str, Enabled]] = []
        self.state = LinkState()
        self.state_seen_at = 0.0
        self._was_in_meeting = False
        self._participants_shown: object = None
        self._pin_typed = ""
        self._devices_shown: object = None
        self.banner_text = ""
        self._banners_shown: object = None
        self._agenda_shown: object = None

    # -- building

    def build(self) -> Widget:
        Window.clearcolor = BACKGROUND
        self.manager = ScreenManager(transition=NoTransition())
        for name, content in (
            ("home", self._home()),
            ("meeting", self._meeting()),
            ("agenda", self._agenda()),
            ("settings", self._settings()),
        ):
            screen = Screen(name=name)
            screen.add_widget(content)
            self.manager.add_widget(screen)
        self.banners = column(spacing=4, size_hint_y=None, height=0)
        self.toast = self.name_it("toast", Text("", size=20, size_hint_y=None, height=40))
        self.main_view = column(
            self._top_bar(),
            self.banners,
            self.manager,
            self.toast,
            padding=12,
            spacing=10,
        )
        self.shell = BoxLayout()
        if self._pair_first:
            self._show_pairing()
        else:
            self.shell.add_widget(self.main_view)
        return self.shell

    def _show_pairing(self) -> None:
        assert self.pairing_setup is not None
        self.pairing_view = PairingView(self.pairing_setup, self.name_it, self._paired)
        self.shell.clear_widgets()
        self.shell.add_widget(self.pairing_view)

    def name_it(self, name: str, widget: Any) -> Any:
        self.named[name] = widget
        return widget

    def action(
        self,
        name: str,
        text: str,
        command: str,
        arguments: Callable[[], Mapping[str, Any]] | None = None,
        enabled: Enabled = always,
        tone: tuple[float, float, float, float] = NEUTRAL,
        size: float = 24,
        press: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> TouchButton:
        """A button that sends ``command``; enabled only when ``enabled`` and the room offers it."""
        button = self.name_it(name, TouchButton(text, tone=tone, size=size, **kwargs))
        on_press(button, press or (lambda: self.send(command, arguments() if arguments else {})))
        button.disabled = True
        self.actions.append((button, command, enabled))
        return button

    def nav(self, name: str, text: str, screen: str) -> TouchButton:
        button = self.name_it(name, TouchButton(text, size=22, size_hint_x=None, width=150))
        on_press(button, lambda: self.show(screen))
        return button

    def _top_bar(self) -> Widget:
        self.room_label = self.name_it("room_name", Text("", size=30, bold=True))
        self.clock_label = self.name_it("clock", Text("", size=30, halign="right"))
        self.date_label = Text("", size=18, color=MUTED_TEXT, halign="right")
        return row(
            self.room_label,
            column(self.clock_label, self.date_label, spacing=0, size_hint_x=0.6),
            self.nav("nav_home", "Home", "home"),
            self.nav("nav_meeting", "Meeting", "meeting"),
            self.nav("nav_agenda", "Agenda", "agenda"),
            self.nav("nav_settings", "Settings", "settings"),
            size_hint_y=None,
            height=72,
        )

    def _home(self) -> Widget:
        self.now_label = self.name_it("now", Text("", size=28))
        self.checkin_label = self.name_it("checkin_countdown", Text("", size=22))
        checkin = self.action(
            "check_in",
            "Check in",
            "calendar/checkin",
            lambda: {"booking": self._current_booking_id()},
            self._waits_for_check_in,
            tone=WARNING,
            size_hint_x=0.5,
        )
        self.next_labels = [Text("", size=22) for _ in range(3)]
        for number, label in enumerate(self.next_labels):
            self.name_it(f"next_{number}", label)
        left = column(
            card(
                Text("Now", size=20, color=MUTED_TEXT, size_hint_y=None, height=30),
                self.now_label,
                row(checkin, self.checkin_label, size_hint_y=None, height=64),
                size_hint_y=0.55,
            ),
            card(
                Text("Next", size=20, color=MUTED_TEXT, size_hint_y=None, height=30),
                *self.next_labels,
                size_hint_y=0.45,
            ),
            size_hint_x=0.58,
        )
        start = self.action(
            "start",
            "Start",
            "meeting/start",
            lambda: {"booking_id": self._current_booking_id()},
            self._can_start_booked,
            tone=GOOD,
            size=32,
        )
        meet_now = self.action(
            "meet_now", "Meet now", "meeting/start", tone=ACCENT, size=30, press=self._meet_now
        )
        book = [
            self.action(
                f"book_{minutes}",
                f"{minutes} min",
                "calendar/book",
                partial(dict, minutes=minutes),
                partial(self._free_for, minutes=minutes),
            )
            for minutes in BOOK_MINUTES
        ]
        self.book_label = Text("Book now", size=20, color=MUTED_TEXT, size_hint_y=None, height=30)
        self.share_label = self.name_it("share_address", Text("", size=20))
        self.key_label = self.name_it("sharing_key", Text("", size=28, bold=True))
        right = column(
            start,
            meet_now,
            card(self.book_label, row(*book), size_hint_y=0.9),
            card(
                Text("Share your screen", size=20, color=MUTED_TEXT, size_hint_y=None, height=30),
                self.share_label,
                self.key_label,
                size_hint_y=1.1,
            ),
            size_hint_x=0.42,
        )
        return row(left, right)

    def _meeting(self) -> Widget:
        self.meeting_label = self.name_it("meeting_id", Text("", size=24, bold=True))
        self.recording_label = self.name_it(
            "recording_notice", Text("", size=22, color=DANGER, halign="right", size_hint_x=0.4)
        )
        mic = self.action(
            "mic_mute", "Mute", "devices/audio/mute", dict, always, tone=GOOD, size=30
        )
        camera = self.action(
            "camera_video",
            "Camera",
            CAMERA_VIDEO_COMMAND,
            lambda: {"on": not self._camera_on()},
            self._in_meeting,
        )
        self.volume_label = self.name_it("volume", Text("", size=24, halign="center"))
        volume = row(
            self.action(
                "volume_down", "Vol \u2212", "devices/audio/volume", lambda: self._volume(-10)
            ),
            self.volume_label,
            self.action("volume_up", "Vol +", "devices/audio/volume", lambda: self._volume(10)),
        )
        controls = column(
            row(mic, camera),
            volume,
            row(self._ptz_pad(), self._presets(), size_hint_y=2.2),
            size_hint_x=0.48,
        )
        self.participant_list = GridLayout(cols=1, spacing=6, size_hint_y=None)
        self.participant_list.bind(minimum_height=self.participant_list.setter("height"))
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.participant_list)
        self.lock_button = self.action(
            "lock",
            "Lock",
            "meeting/lock",
            lambda: {"on": not self._flag("locked")},
            self._in_meeting,
        )
        self.record_button = self.action(
            "record",
            "Record",
            "meeting/recording",
            lambda: {"on": not self._flag("recording")},
            self._in_meeting,
        )
        people = column(
            row(
                self.action(
                    "admit_all",
                    "Admit all",
                    "meeting/admit",
                    lambda: {"all": True},
                    lambda s: any(p.waiting for p in views.participants(s)),
                ),
                self.action("mute_all", "Mute all", "meeting/mute-all", dict, self._in_meeting),
                self.lock_button,
                self.record_button,
                size_hint_y=None,
                height=64,
            ),
            scroll,
            row(
                self.action(
                    "stop_share",
                    "Stop share",
                    "sharing/stop",
                    dict,
                    self._sharing_active,
                ),
                self.action(
                    "end_meeting",
                    "End for all",
                    "meeting/end",
                    dict,
                    self._in_meeting,
                    tone=DANGER,
                ),
                size_hint_y=None,
                height=72,
            ),
        )
        return column(
            row(self.meeting_label, self.recording_label, size_hint_y=None, height=48),
            row(controls, people),
        )

    def _ptz_pad(self) -> Widget:
        pad = GridLayout(cols=3, spacing=6)
        arrows = {
            "up_left": "Up left",
            "up": "Up",
            "up_right": "Up right",
            "left": "Left",
            "right": "Right",
            "down_left": "Down left",
            "down": "Down",
            "down_right": "Down right",
        }
        for direction in ("up_left", "up", "up_right", "left", None, "right"):
            pad.add_widget(self._ptz_button(direction, arrows))
        for direction in ("down_left", "down", "down_right"):
            pad.add_widget(self._ptz_button(direction, arrows))
        return pad

    def _ptz_button(self, direction: str | None, arrows: dict[str, str]) -> Widget:
        if direction is None:
            return self.action(
                "camera_home", "Home", "devices/camera/home", dict, self._camera_online, size=20
            )
        button = self.action(
            f"ptz_{direction}",
            arrows[direction],
            "devices/camera/move",
            lambda: {"direction": direction},
            self._camera_online,
            size=18,
        )
        # Moving lasts while the finger is down, as on a joystick.
        button.bind(on_release=lambda *_: self.send("devices/camera/move", {"direction": "stop"}))
        return button

    def _presets(self) -> Widget:
        buttons = [
            self.action(
                f"preset_{number}",
                f"Preset {number}",
                "devices/camera/preset",
                partial(dict, number=number),
                self._camera_online,
                size=20,
            )
            for number in PRESETS
        ]
        zoom = column(
            self.action(
                "zoom_out",
                "Zoom \u2212",
                "devices/camera/position",
                lambda: self._zoom(-ZOOM_STEP),
                self._camera_online,
                size=20,
            ),
            self.action(
                "zoom_in",
                "Zoom +",
                "devices/camera/position",
                lambda: self._zoom(ZOOM_STEP),
                self._camera_online,
                size=20,
            ),
            spacing=6,
        )
        return row(column(*buttons, spacing=6), zoom, spacing=6, size_hint_x=0.6)

    def _agenda(self) -> Widget:
        self.agenda_title = self.name_it("agenda_title", Text("", size=26, bold=True))
        self.agenda_list = GridLayout(cols=1, spacing=6, size_hint_y=None)
        self.agenda_list.bind(minimum_height=self.agenda_list.setter("height"))
        scroll = ScrollView(do_scroll_x=False)
        scroll.add_widget(self.agenda_list)
        return card(row(self.agenda_title, size_hint_y=None, height=48), scroll)

    def _settings(self) -> Widget:
        self.pin_label = self.name_it("pin", Text("Enter the admin PIN", size=26, halign="center"))
        pad = GridLayout(cols=3, spacing=8, size_hint=(None, None), size=(420, 400))
        for key in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "clear", "0", "ok"):
            label = {"clear": "Clear", "ok": "OK"}.get(key, key)
            button = self.name_it(f"pin_{key}", TouchButton(label, size=28))
            on_press(button, partial(self._pin_key, key))
            pad.add_widget(button)
        pad_holder = row(Widget(), pad, Widget())
        self.pin_view = column(self.pin_label, pad_holder, Widget(size_hint_y=0.1))

        self.device_lines = GridLayout(cols=1, spacing=4, size_hint_y=None)
        self.device_lines.bind(minimum_height=self.device_lines.setter("height"))
        devices_scroll = ScrollView(do_scroll_x=False)
        devices_scroll.add_widget(self.device_lines)
        self.input_row = row(spacing=8, size_hint_y=None, height=64)
        self.versions_label = self.name_it("versions", Text("", size=18, color=MUTED_TEXT))
        lock = self.name_it("settings_lock", TouchButton("Lock settings", size=22))
        on_press(lock, self._lock_settings)
        self.admin_view = row(
            card(Text("Devices", size=22, bold=True, size_hint_y=None, height=36), devices_scroll),
            card(
                Text("Display", size=22, bold=True, size_hint_y=None, height=36),
                row(
                    self.action(
                        "display_on",
                        "Display on",
                        "devices/display/power",
                        lambda: {"on": True},
                        self._display_online,
                    ),
                    self.action(
                        "display_off",
                        "Standby",
                        "devices/display/power",
                        lambda: {"on": False},
                        self._display_online,
                    ),
                    size_hint_y=None,
                    height=64,
                ),
                self.input_row,
                Text("About", size=22, bold=True, size_hint_y=None, height=36),
                self.versions_label,
                lock,
            ),
        )
        self.settings_screen = column(self.pin_view)
        return self.settings_screen

    # -- running

    def on_start(self) -> None:
        self.client.add_listener(self.render)
        self.render(self.client.state)
        Clock.schedule_interval(lambda dt: self.tick(), 1.0)
        self.tick()
        if self.pairing_view is not None:
            self.pairing_view.begin()

    def _unpaired(self) -> None:
        """The room refused this panel's own token: it was unpaired. Pair again."""
        self.client.stop()
        self._show_pairing()
        assert self.pairing_view is not None
        self.pairing_view.begin()

    def _paired(self, grant: PairingGrant) -> None:
        """Paired: from now on the normal panel, following the room with its own token."""
        self.client.use(grant.api_url, grant.token)
        self.client.start()
        self.shell.clear_widgets()
        self.shell.add_widget(self.main_view)
        self.pairing_view = None

    def on_stop(self) -> None:
        self.client.stop()

    def show(self, screen: str) -> None:
        if self.manager.current == "settings" and screen != "settings":
            # Leaving Settings locks it again: the next person needs the PIN.
            self._relock_settings()
        self.manager.current = screen

    def send(self, command: str, arguments: Mapping[str, Any]) -> None:
        self.say(f"{command.rsplit('/', 1)[-1].replace('-', ' ').capitalize()}\u2026", MUTED_TEXT)
        self.client.send(command, arguments, self._answered)

    def _answered(self, result: CommandResult) -> None:
        if result.ok:
            self.say("", MUTED_TEXT)
        else:
            logger.info("%s failed (%s): %s", result.path, result.status, result.message)
            self.say(f"Could not do that: {result.message}", DANGER)

    def say(self, text: str, color: tuple[float, float, float, float]) -> None:
        self.toast.text = text
        self.toast.color = color

    def tick(self) -> None:
        """Once a second: the clock, and what time alone changes (a booking moves into Now,
        its check-in opens, the free time shortens)."""
        now = datetime.now(UTC)
        self._show_time(now)
        self._render_home(self.state, now)
        self._enable_actions(self.state)

    def _show_time(self, now: datetime) -> None:
        zone = views.room_zone(self.state)
        self.clock_label.text = views.clock_text(now, zone)
        self.date_label.text = views.date_text(now, zone)

    def _enable_actions(self, state: LinkState) -> None:
        for button, command, enabled in self.actions:
            button.disabled = not (state.offers(command) and enabled(state))

    def render(self, state: LinkState) -> None:
        """Show ``state``: called on the UI thread for every change the room sends."""
        self.state = state
        if state.refused and self.pairing_setup is not None and self.pairing_view is None:
            self._unpaired()
        now = datetime.now(UTC)
        self.room_label.text = views.room_name(state)
        self._render_banners(state, now)
        self._render_home(state, now)
        self._render_meeting(state)
        self._render_agenda(state, now)
        self._render_settings(state)
        self._enable_actions(state)
        self.named["nav_meeting"].disabled = not views.in_meeting(state)
        in_meeting = views.in_meeting(state) and state.connected
        if in_meeting != self._was_in_meeting:
            self._was_in_meeting = in_meeting
            if state.connected:
                self.show("meeting" if in_meeting else "home")
        self._show_time(now)

    def _render_banners(self, state: LinkState, now: datetime) -> None:
        lines = views.banners(state, now)
        if (lines, state.connected) == self._banners_shown:
            return
        self._banners_shown = (lines, state.connected)
        self.banners.clear_widgets()
        for number, line in enumerate(lines[:3]):
            tone = DANGER if not state.connected else WARNING
            label = Text(line, size=20, size_hint_y=None, height=44, padding=(12, 0))
            paint(label, tone)
            self.banners.add_widget(self.name_it(f"banner_{number}", label))
        self.banners.height = 48 * min(len(lines), 3)
        self.banner_text = " | ".join(lines)

    def _render_home(self, state: LinkState, now: datetime) -> None:
        zone = views.room_zone(state)
        calendar = views.bookings(state)
        current, coming = views.now_and_next(state, now)
        if calendar is None:
            self.now_label.text = f"Calendar {views.NOT_AVAILABLE}"
        elif current is not None:
            who = f"\n{current.organizer}" if current.organizer else ""
            self.now_label.text = f"{current.title}\n{current.span(zone)}{who}"
        elif coming:
            self.now_label.text = f"Free until {views.clock_text(coming[0].start, zone)}"
        else:
            self.now_label.text = "Free for the rest of the day"
        for label, booking in zip(self.next_labels, [*coming[:3], None, None, None], strict=False):
            label.text = f"{booking.span(zone)}  {booking.title}" if booking else ""
        self.named["start"].text = f"Start: {current.title}" if current else "Start"
        meeting_on = views.in_meeting(state)
        self.named["meet_now"].text = "Back to the meeting" if meeting_on else "Meet now"
        share = views.sharing(state)
        if share is None or not (share.share_url or share.key):
            self.share_label.text = f"Sharing {views.NOT_AVAILABLE}"
            self.key_label.text = ""
        else:
            self.share_label.text = f"Open {share.share_url or views.NOT_AVAILABLE}"
            self.key_label.text = f"Key {views.format_key(share.key)}"
        self.book_label.text = (
            "Book now" if state.offers("calendar/book") else f"Book now: {views.NOT_AVAILABLE}"
        )
        self._render_check_in(now)

    def _render_check_in(self, now: datetime) -> None:
        current = self._booking_waiting_for_check_in(self.state, now)
        if current is None or current.release_at is None:
            self.checkin_label.text = ""
        else:
            left = views.countdown(current.release_at, now)
            self.checkin_label.text = f"Released in {left} without check-in"

    def _render_meeting(self, state: LinkState) -> None:
        meeting = views.meeting(state) or {}
        if meeting.get("in_meeting"):
            meeting_id = views.format_meeting_id(str(meeting.get("id", "")))
            self.meeting_label.text = (
                f"Meeting ID {meeting_id}   Passcode {meeting.get('passcode', '')}"
            )
        else:
            self.meeting_label.text = "No meeting running"
        recording = bool(meeting.get("recording"))
        self.recording_label.text = "\u25cf Recording" if recording else ""
        self.record_button.text = "Stop recording" if recording else "Record"
        self.lock_button.text = "Unlock" if meeting.get("locked") else "Lock"
        audio = views.audio(state)
        mic = self.named["mic_mute"]
        if audio is None:
            mic.text = f"Mic {views.NOT_AVAILABLE}"
        else:
            muted = bool(audio.get("mic_muted"))
            mic.text = "Mic muted" if muted else "Mic on"
            mic.set_tone(DANGER if muted else GOOD)
            self.volume_label.text = f"Volume {audio.get('volume', '?')}"
        camera = self.named["camera_video"]
        camera.text = "Camera on" if self._camera_on() else "Camera off"
        if not state.offers(CAMERA_VIDEO_COMMAND):
            camera.text = f"Camera on/off {views.NOT_AVAILABLE}"
        self._render_participants(state)

    def _render_participants(self, state: LinkState) -> None:
        people = (views.participants(state), state.offers("meeting/remove"))
        if people == self._participants_shown:
            return
        self._participants_shown = people
        self.participant_list.clear_widgets()
        if not people[0]:
            self.participant_list.add_widget(
                Text(
                    "No one has joined yet", size=20, color=MUTED_TEXT, size_hint_y=None, height=56
                )
            )
        for person in people[0]:
            self.participant_list.add_widget(self._participant_row(person, state))

    def _participant_row(self, person: views.Participant, state: LinkState) -> Widget:
        flags = [
            "waiting" if person.waiting else "",
            "co-host" if person.role != "participant" else "",
            "muted" if person.muted else "",
            "hand up" if person.hand else "",
        ]
        details = " \u00b7 ".join(f for f in flags if f)
        label = Text(f"[b]{escape_markup(person.name)}[/b]\n{details}", size=20, markup=True)
        buttons: list[Widget] = [label]

        def button(name: str, text: str, command: str, arguments: Mapping[str, Any]) -> None:
            widget = self.name_it(
                f"{name}_{person.id}", TouchButton(text, size=18, size_hint_x=None, width=140)
            )
            on_press(widget, lambda: self.send(command, arguments))
            widget.disabled = not state.offers(command)
            buttons.append(widget)

        target = {"participant": person.id}
        if person.waiting:
            button("admit", "Admit", "meeting/admit", target)
        else:
            if person.muted:
                button("mute", "Ask to unmute", "meeting/ask-unmute", target)
            else:
                button("mute", "Mute", "meeting/mute", target)
            cohost = person.role == "co_host"
            button(
                "cohost",
                "No co-host" if cohost else "Co-host",
                "meeting/cohost",
                {**target, "on": not cohost},
            )
        button("remove", "Remove", "meeting/remove", target)
        return row(*buttons, spacing=6, size_hint_y=None, height=64)

    def _render_agenda(self, state: LinkState, now: datetime) -> None:
        zone = views.room_zone(state)
        self.agenda_title.text = f"Today, {views.date_text(now, zone)}"
        calendar = views.bookings(state)
        entries = views.today(state, now)
        if calendar is None:
            lines = [f"Calendar {views.NOT_AVAILABLE}"]
        elif not entries:
            lines = ["No bookings today"]
        else:
            lines = [f"{b.span(zone)}   {b.title}   {b.organizer}" for b in entries]
        if lines == self._agenda_shown:
            return
        self._agenda_shown = lines
        self.agenda_list.clear_widgets()
        for line in lines:
            self.agenda_list.add_widget(Text(line, size=22, size_hint_y=None, height=56))

    def _render_settings(self, state: LinkState) -> None:
        devices = views.devices(state)
        shown = (tuple(views.device_line(d) for d in devices), state.connected)
        if shown != self._devices_shown:
            self._devices_shown = shown
            self.device_lines.clear_widgets()
            lines = shown[0] or (f"Devices {views.NOT_AVAILABLE}",)
            for line in lines:
                color = TEXT if "OFFLINE" not in line else DANGER
                self.device_lines.add_widget(
                    Text(line, size=18, color=color, size_hint_y=None, height=64)
                )
            self._render_inputs(state)
        room = state.section("room") or {}
        self.versions_label.text = (
            f"Room {room.get('name', '?')} ({room.get('id', '?')})\n"
            f"Room system {room.get('version', views.NOT_AVAILABLE)}, panel {__version__}\n"
            f"API {self.client.api_url}"
        )

    def _render_inputs(self, state: LinkState) -> None:
        # The buttons are made anew each time: forget the old ones, or the list only grows.
        self.actions = [a for a in self.actions if a[0].parent is not self.input_row]
        self.input_row.clear_widgets()
        display = views.first_device(state, "display")
        raw = display.get("inputs") if display else None
        inputs = tuple(str(i) for i in raw) if isinstance(raw, list | tuple) else ()
        for source in inputs[:5]:
            self.input_row.add_widget(
                self.action(
                    f"input_{source}",
                    str(source).upper(),
                    "devices/display/input",
                    partial(dict, source=source),
                    self._display_online,
                    size=18,
                )
            )
        if not inputs:
            self.input_row.add_widget(Text(f"Inputs {views.NOT_AVAILABLE}", size=18))
        for button, command, enabled in self.actions:
            if button.parent is self.input_row:
                button.disabled = not (state.offers(command) and enabled(state))

    # -- settings PIN

    def _pin_key(self, key: str) -> None:
        if key == "clear":
            self._pin_typed = ""
        elif key == "ok":
            if self._pin_typed == self.admin_pin:
                self.settings_screen.clear_widgets()
                self.settings_screen.add_widget(self.admin_view)
                self._pin_typed = ""
                return
            self._pin_typed = ""
            self.pin_label.text = "Wrong PIN, try again"
            return
        elif len(self._pin_typed) < 12:
            self._pin_typed += key
        self.pin_label.text = "\u2022" * len(self._pin_typed) or "Enter the admin PIN"

    def _lock_settings(self) -> None:
        self.show("home")

    def _relock_settings(self) -> None:
        self._pin_typed = ""
        self.pin_label.text = "Enter the admin PIN"
        if self.admin_view.parent is not None:
            self.settings_screen.clear_widgets()
            self.settings_screen.add_widget(self.pin_view)

    # -- what the snapshot allows

    def _in_meeting(self, state: LinkState) -> bool:
        return views.in_meeting(state)

    def _meet_now(self) -> None:
        if views.in_meeting(self.state):
            self.show("meeting")
        else:
            self.send("meeting/start", {})

    def _sharing_active(self, state: LinkState) -> bool:
        share = views.sharing(state)
        return share is not None and share.active

    def _can_start_booked(self, state: LinkState) -> bool:
        current, _ = views.now_and_next(state, datetime.now(UTC))
        return current is not None and not views.in_meeting(state)

    def _free_for(self, state: LinkState, minutes: int) -> bool:
        free = views.free_minutes(state, datetime.now(UTC))
        return views.bookings(state) is not None and (free is None or free >= minutes)

    def _booking_waiting_for_check_in(
        self, state: LinkState, now: datetime
    ) -> views.Booking | None:
        for booking in views.bookings(state) or []:
            if booking.waits_for_check_in(now):
                return booking
        return None

    def _waits_for_check_in(self, state: LinkState) -> bool:
        return self._booking_waiting_for_check_in(state, datetime.now(UTC)) is not None

    def _current_booking_id(self) -> str | None:
        now = datetime.now(UTC)
        waiting = self._booking_waiting_for_check_in(self.state, now)
        current, _ = views.now_and_next(self.state, now)
        booking = waiting or current
        return booking.id if booking else None

    def _camera(self, state: LinkState) -> Mapping[str, Any] | None:
        return views.first_device(state, "camera")

    def _camera_online(self, state: LinkState) -> bool:
        camera = self._camera(state)
        return bool(camera and camera.get("online"))

    def _display_online(self, state: LinkState) -> bool:
        display = views.first_device(state, "display")
        return bool(display and display.get("online"))

    def _camera_on(self) -> bool:
        media = self.state.section("media") or {}
        return media.get("camera_on") is not False

    def _flag(self, name: str) -> bool:
        return bool((views.meeting(self.state) or {}).get(name))

    def _volume(self, step: int) -> dict[str, int]:
        audio = views.audio(self.state) or {}
        level = views.number(audio.get("volume"), 50) + step
        return {"level": max(0, min(100, level))}

    def _zoom(self, step: int) -> dict[str, int]:
        camera = self._camera(self.state) or {}
        return {"zoom": max(0, views.number(camera.get("zoom"), 0) + step)}
