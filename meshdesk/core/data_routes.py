"""Test-only data-plane routes: dial another address in place of a member's advertised one.

Benches and tests put a delaying proxy on a host-to-member link (`tests/delay_proxy.py`) by
starting the host node with `MESHDESK_TEST_DATA_ROUTES="HOST:PORT=HOST:PORT[,...]"`: when
the node dials the data-plane address on the left, it dials the one on the right instead.
Nothing else changes: the link still authenticates the member by its node key, so a route can
slow a link down or break it, never stand in for a member. A malformed value stops the node
at start with a one-line error: a typo must not let a bench measure an undelayed link.
"""

from __future__ import annotations

Address = tuple[str, int]
ENVIRONMENT_VARIABLE = "MESHDESK_TEST_DATA_ROUTES"


class DataRoutesError(ValueError):
    """The variable's value does not parse; str() is one line that names it."""


def parse_data_routes(text: str) -> dict[Address, Address]:
    """{advertised address: address to dial}; an empty or blank value is no routes."""
    routes: dict[Address, Address] = {}
    if not text.strip():
        return routes
    for entry in text.split(","):
        left, equals, right = entry.strip().partition("=")
        if not equals:
            raise DataRoutesError(f"{ENVIRONMENT_VARIABLE}: {entry.strip()!r} is not HOST:PORT=HOST:PORT")
        advertised = parse_address(left)
        if advertised in routes:
            raise DataRoutesError(f"{ENVIRONMENT_VARIABLE}: {left.strip()} is routed twice")
        routes[advertised] = parse_address(right)
    return routes


def parse_address(text: str) -> Address:
    """"host:port" or "[v6 host]:port"."""
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DataRoutesError(f"{ENVIRONMENT_VARIABLE}: {text.strip()!r} is not HOST:PORT")
    return host, int(port)


def routed(address: Address, routes: dict[Address, Address]) -> Address:
    """The address to dial for an advertised one."""
    if not routes:  # every node but a test's: the address as advertised, whatever its form
        return address
    host, port = address
    return routes.get((host, int(port)), address)
