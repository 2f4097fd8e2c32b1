"""``roomsystem-panel``: the touch panel, a client of the room's API."""

from __future__ import annotations

import sys
from collections.abc import Callable

from controlpanel.client import PairingSetup, RoomClient, Worker, read_token
from controlpanel.common import Options, configure_kivy, paired_api, parse_options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(
        "roomsystem-panel",
        "The room's touch panel: start and run meetings. Without a token file yet (or with"
        " --pair) it first pairs with a room found on the network.",
        argv,
    )
    try:
        token = "" if options.pair else read_token(options.token_file)
    except OSError as exc:
        print(f"roomsystem-panel: cannot read the token: {exc}", file=sys.stderr)
        return 2
    configure_kivy(options)
    from kivy.clock import Clock

    from controlpanel.panel_app import PanelApp

    def deliver(call: Callable[[], None]) -> None:
        Clock.schedule_once(lambda dt: call())

    client = RoomClient(options.api, token, deliver=deliver)
    # A panel with a token of its own (paired before, or pairing now) can pair again.
    pairs = options.pair or paired_api(options.token_file) is not None
    worker = Worker(deliver, name="panel-pairing") if pairs else None
    setup = None if worker is None else pairing_setup(options, worker)
    app = PanelApp(client, options.admin_pin, pairing=setup, pair_first=options.pair)
    if worker is not None:
        worker.start()
    if not options.pair:
        client.start()
    if options.pilot:
        from controlpanel.pilot import PilotServer

        PilotServer(app).start()
    try:
        app.run()
    finally:
        client.stop()
        if worker is not None:
            worker.stop()
    return 0


def pairing_setup(options: Options, worker: Worker) -> PairingSetup:
    assert options.token_file is not None  # a panel always has one (parse_options)
    return PairingSetup(
        worker=worker,
        token_file=options.token_file,
        panel_name=options.panel_name,
        interface=options.interface,
        api=options.api if options.api_given else None,
    )


if __name__ == "__main__":
    sys.exit(main())
