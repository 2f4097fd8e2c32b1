"""``roomsystem-panel``: the touch panel, a client of the room's API."""

from __future__ import annotations

import sys

from controlpanel.client import RoomClient, read_token
from controlpanel.common import configure_kivy, parse_options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(
        "roomsystem-panel", "The room's touch panel: start and run meetings.", argv
    )
    try:
        token = read_token(options.token_file)
    except OSError as exc:
        print(f"roomsystem-panel: cannot read the token: {exc}", file=sys.stderr)
        return 2
    configure_kivy(options)
    from kivy.clock import Clock

    from controlpanel.panel_app import PanelApp

    client = RoomClient(
        options.api, token, deliver=lambda call: Clock.schedule_once(lambda dt: call())
    )
    app = PanelApp(client, options.admin_pin)
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
