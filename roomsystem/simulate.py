"""``roomsystem simulate``: run one simulated device, speaking its real wire protocol.

The first line printed says where to reach it (the pty path, or HOST:PORT); it runs until
SIGTERM or Ctrl-C. Any client for that protocol can drive it, ours or someone else's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roomsystem.config import split_listen
from roomsystem.drivers.lg_sim import LgSimulator
from roomsystem.drivers.mdc_sim import MdcSimulator
from roomsystem.drivers.nec_sim import NecSimulator
from roomsystem.drivers.pjlink_sim import PjlinkSimulator
from roomsystem.drivers.simulator import PtyServer, SimulatedDevice, serve_tcp
from roomsystem.drivers.visca_sim import ViscaSimulator, serve_visca_ip
from roomsystem.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Simulated:
    summary: str
    make: Callable[[argparse.Namespace], SimulatedDevice]
    transports: tuple[str, ...]
    default_port: int


SIMULATORS: dict[str, Simulated] = {
    "visca": Simulated(
        "Sony VISCA PTZ camera on a serial line",
        lambda a: ViscaSimulator(address=a.address or 1),
        ("pty",),
        0,
    ),
    "visca-ip": Simulated(
        "Sony VISCA over IP PTZ camera (UDP)",
        lambda a: ViscaSimulator(address=a.address or 1),
        ("udp",),
        52381,
    ),
    "mdc": Simulated(
        "Samsung display, MDC protocol",
        lambda a: MdcSimulator(display_id=a.id if a.id is not None else 1),
        ("tcp", "pty"),
        1515,
    ),
    "pjlink": Simulated(
        "PJLink projector (class 2)",
        lambda a: PjlinkSimulator(password=a.password),
        ("tcp",),
        4352,
    ),
    "nec": Simulated(
        "NEC large-format display, external control protocol",
        lambda a: NecSimulator(monitor_id=a.id if a.id is not None else 1),
        ("tcp", "pty"),
        7142,
    ),
    "lg": Simulated(
        "LG display, RS-232 protocol",
        lambda a: LgSimulator(set_id=a.id if a.id is not None else 1),
        ("pty", "tcp"),
        9761,
    ),
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser("simulate", help="run a simulated device")
    kinds = simulate.add_subparsers(required=True, metavar="DEVICE")
    for name, simulated in SIMULATORS.items():
        parser = kinds.add_parser(name, help=simulated.summary)
        where = parser.add_mutually_exclusive_group(required=True)
        if "pty" in simulated.transports:
            where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
        if "tcp" in simulated.transports:
            where.add_argument("--tcp", metavar="HOST:PORT", help="serve on TCP")
        if "udp" in simulated.transports:
            where.add_argument("--udp", metavar="HOST:PORT", help="serve on UDP")
        if "pty" in simulated.transports:
            parser.add_argument("--link", type=Path, help="also make this path a link to the pty")
            parser.add_argument("--baud", type=int, help="pace the pty like a line at this rate")
        parser.add_argument("--id", type=int, help="display / set id")
        parser.add_argument("--address", type=int, help="camera address")
        parser.add_argument("--password", help="PJLink password (none: no authentication)")
        parser.set_defaults(func=run, simulator=name)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    device = SIMULATORS[args.simulator].make(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    close: Callable[[], object]
    if getattr(args, "pty", False):
        pty = PtyServer(device, baudrate=args.baud, link=args.link)
        pty.start()
        print(pty.pty_path, flush=True)
        close = pty.close
    elif getattr(args, "tcp", None):
        server = await serve_tcp(device, *_address(args.tcp))
        host, port = server.sockets[0].getsockname()[:2]
        print(f"{host}:{port}", flush=True)
        close = server.close
    else:
        assert isinstance(device, ViscaSimulator)  # the only simulator on UDP
        transport = await serve_visca_ip(device, *_address(args.udp))
        host, port = transport.get_extra_info("sockname")[:2]
        print(f"{host}:{port}", flush=True)
        close = transport.close
    try:
        await stop.wait()
    finally:
        close()
    return 0


def _address(text: str) -> tuple[str, int]:
    try:
        return split_listen(text)
    except ValueError as exc:
        raise ConfigError(f"address: {exc}") from None
