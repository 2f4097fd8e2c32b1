"""``roomsystem-display``: the room's main display, a client of the room's API."""

from __future__ import annotations

import sys

from controlpanel.client import RoomClient, read_token
from controlpanel.common import configure_kivy, parse_options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(
        "roomsystem-display",
        "The room's main display: the room, its bookings, how to share, the meeting.",
        argv,
        panel=False,
    )
    try:
        token = read_token(options.token_file)
    except OSError as exc:
        print(f"roomsystem-display: cannot read the token: {exc}", file=sys.stderr)
        return 2
    configure_kivy(options)
    from kivy.clock import Clock

    from controlpanel.display_app import DisplayApp

    client = RoomClient(
        options.api, token, deliver=lambda call: Clock.schedule_once(lambda dt: call())
    )
    app = DisplayApp(client)
    client.start()
    if options.pilot:
        from controlpanel.pilot import PilotServer

        PilotServer(app).start()
    try:
        app.run()
    finally:
        client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
