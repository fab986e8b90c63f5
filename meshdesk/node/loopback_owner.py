"""Who opened a 127.0.0.1 connection: the owner uid of the connecting socket (Linux).

The host's tunnel listeners stand in for remote members' rpc workers; anyone on this machine
could connect to 127.0.0.1. On Linux the kernel lists every TCP socket with its owner's uid in
/proc/net/tcp (and tcp6): the connecting socket is the entry whose local address is the
peer address our accepted socket sees, and whose remote address is our listener.

Elsewhere (macOS, Windows) there is no such table; `connection_uid` says None and the caller
decides. What stays open everywhere: another process of the same user, which could also read
this node's keys.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
UID_COLUMN = 7


def proc_address(host: str, port: int, width: int) -> str:
    """An address as /proc/net/tcp spells it: the IP in host byte order (little-endian here) in
    hex, ':' and the port in hex. `width` 8 for tcp, 32 for tcp6 (IPv4 as ::ffff:a.b.c.d)."""
    address = ipaddress.ip_address(host)
    if width == 32 and address.version == 4:
        address = ipaddress.IPv6Address(f"::ffff:{address}")
    packed = address.packed
    words = [packed[i:i + 4][::-1].hex().upper() for i in range(0, len(packed), 4)]
    return f"{''.join(words)}:{port:04X}"


def uid_in_table(text: str, local: str, remote: str) -> int | None:
    """The uid of the entry from `local` to `remote` in one /proc/net/tcp* listing."""
    for row in text.splitlines()[1:]:
        fields = row.split()
        if len(fields) > UID_COLUMN and fields[1] == local and fields[2] == remote:
            return int(fields[UID_COLUMN])
    return None


def connection_uid(peer: tuple, listener: tuple, tables=TABLES) -> int | None:
    """The uid owning the socket connected from `peer` to `listener`, or None if unknown."""
    for table in tables:
        width = 32 if table.name.endswith("6") else 8
        try:
            text = table.read_text()
            local, remote = proc_address(peer[0], peer[1], width), proc_address(listener[0], listener[1], width)
        except (OSError, ValueError):
            continue
        uid = uid_in_table(text, local, remote)
        if uid is not None:
            return uid
    return None


def can_check_owners(tables=TABLES) -> bool:
    return any(table.exists() for table in tables)


def from_this_user(peer: tuple, listener: tuple, tables=TABLES) -> bool:
    """True if this process's own user opened the connection, or if this system cannot tell."""
    if not can_check_owners(tables):
        return True
    return connection_uid(peer, listener, tables) == os.getuid()
