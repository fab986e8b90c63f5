"""`meshdesk relay --port N`: a standalone relay (`node.relay_server`) for friends behind
routers that no punch gets through; anyone can host one on a small server.

It needs no mesh, no model and no data folder: it forwards datagrams it cannot read between
registered nodes and whoever dials them, and logs registrations and sessions to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from meshdesk.adapters.node_keys import verify_signature
from meshdesk.app.command_line import OneLineErrorParser, ip_address, port_number
from meshdesk.core.relay_protocol import parse_port_range
from meshdesk.node.relay_server import RelayLimits, RelayServer

DEFAULT_RELAY_PORT = 9338


def port_range(text: str) -> tuple[int, int] | None:
    try:
        return parse_port_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def relay_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="meshdesk relay",
        description="Relay for MeshDesk members whose routers let no direct link through. It carries "
        "only their end-to-end encrypted QUIC packets: it cannot read them or join a mesh. Name it "
        "with `meshdesk --relay HOST:PORT`.")
    parser.add_argument("--port", type=port_number, default=DEFAULT_RELAY_PORT,
                        help=f"TCP port for registrations (default: {DEFAULT_RELAY_PORT}); open it in the firewall")
    parser.add_argument("--host", type=ip_address, default="0.0.0.0", metavar="ADDRESS",
                        help="address to listen on (default: all)")
    parser.add_argument("--ports", type=port_range, default=None, metavar="LOW-HIGH",
                        help="UDP ports for relayed traffic, to open in the firewall (default: any free "
                        "ones; with a range, a node gets the same port after a relay restart, so its "
                        "invites keep working)")
    parser.add_argument("--max-registrations", type=int, default=RelayLimits.registrations, metavar="N",
                        help=f"nodes registered at once (default: {RelayLimits.registrations})")
    parser.add_argument("--rate", type=float, default=RelayLimits.bytes_per_second / (1 << 20), metavar="MIB",
                        help="MiB per second each session may carry each way (default: %(default)g)")
    return parser


def run_relay_command(argv: list[str]) -> int:
    arguments = relay_parser().parse_args(argv)
    if arguments.max_registrations < 1 or arguments.rate <= 0:
        relay_parser().error("--max-registrations and --rate must be positive")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    limits = RelayLimits(registrations=arguments.max_registrations,
                         bytes_per_second=int(arguments.rate * (1 << 20)))
    try:
        asyncio.run(_serve(RelayServer(verify_signature, arguments.host, arguments.port, arguments.ports, limits)))
    except OSError as error:
        sys.stderr.write(f"meshdesk relay: error: {error}\n")
        return 2
    return 0


async def _serve(relay: RelayServer) -> None:
    port = await relay.start()
    print(f"meshdesk relay: listening on {relay.host} port {port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
            loop.add_signal_handler(signal_number, stopping.set)
    try:
        await stopping.wait()
    finally:
        await relay.stop()
