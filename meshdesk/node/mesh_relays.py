"""Relays (part of MeshService): the relays this node registers at, the one it may run for its
mesh, and what of them its record and invites carry (`core.relay_protocol`).

A node registers at the relays named for it (`--relay HOST:PORT`) and, up to MAX_RELAYS_USED
in all, at those its members run or use (their records' `relays`), so a friend behind a
router no punch gets through stays reachable: at its relayed address, which members dial after
its own addresses, as any other. A link that comes through a relay is marked so: failure
detection gives it longer (`core.link_watch`), peer control goes on trying a direct path and
drops the relayed link for one that works, and no address is learned from it.

A member with a reachable address may run a relay for its mesh (`--serve-relay PORT`; never a
lite client): the same server as `meshdesk relay`, in the node's own process.
"""

from __future__ import annotations

import asyncio
import logging

from meshdesk.core.reachability import usable
from meshdesk.node.relay_client import RelayClient
from meshdesk.node.relay_server import RelayServer

log = logging.getLogger(__name__)

MAX_RELAYS_USED = 2
MEMBER_RELAY_FAILURES = 4  # attempts in a row (about 15 s) before a member's relay is given up

Address = tuple[str, int]


class MeshRelays:
    """Mixed into MeshService; `relay_clients` and `relay_server` are set up in its __init__."""

    relay_clients: dict[Address, RelayClient]
    relay_server: RelayServer | None

    async def start_relaying(self) -> None:
        """After `bind`: the relay this node runs for its mesh, if it does, and the ones named."""
        if self.settings.serve_relay_port is not None:
            self.relay_server = RelayServer(self.credentials.verify, self.settings.bind_host,
                                            self.settings.serve_relay_port, allowed=self._is_member)
            await self.relay_server.start()
        for relay in self.settings.relays:
            self._use_relay(tuple(relay))

    async def stop_relaying(self) -> None:
        for client in self.relay_clients.values():
            await client.stop()
        if self.relay_server is not None:
            await self.relay_server.stop()

    async def wait_for_relays(self, timeout: float) -> None:
        """Until every relay named has registered us once, or `timeout` seconds."""
        waits = [asyncio.ensure_future(self.relay_clients[tuple(relay)].registered.wait())
                 for relay in self.settings.relays if tuple(relay) in self.relay_clients]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for wait in pending:
                wait.cancel()

    def _use_relay(self, relay: Address) -> None:
        if relay in self.relay_clients or len(self.relay_clients) >= MAX_RELAYS_USED or relay in self.relays_run():
            return
        log.info("registering at the relay %s:%d", *relay)
        client = RelayClient(relay, self.credentials.public_key, self.credentials.sign,
                             self.control_transport.send_datagram, self.refresh_own_record)
        self.relay_clients[relay] = client
        client.start()

    def _is_member(self, node_id: str) -> bool:
        """Whom the relay this node runs serves: its mesh's members, no one else."""
        return node_id in {record.node_id for record in self.alive_records()} and \
            node_id not in (self.membership.removed_node_ids if self.membership is not None else ())

    def adopt_member_relays(self) -> None:
        """The relays members run or use (IP literals only: a member's word is no name to look
        up), while this node uses fewer than it may, dropping member relays that never take us;
        and links found to be relayed once the records came (a joiner's link to its inviter's
        relayed address is linked before the joiner holds any record)."""
        named = {tuple(relay) for relay in self.settings.relays}
        for relay, client in list(self.relay_clients.items()):
            if relay not in named and client.failures >= MEMBER_RELAY_FAILURES:
                log.info("giving up on the relay %s:%d", *relay)
                del self.relay_clients[relay]
                asyncio.ensure_future(client.stop())
        for record in self.alive_records():
            if record.node_id != self.node_id:
                for relay in record.relays:
                    if usable(tuple(relay)):
                        self._use_relay(tuple(relay))
        for peer_id in [] if self.control is None else self.control.linked_peers():
            state = self.control.link_to(peer_id)  # peer control's own state: marked in place
            if not state.relayed and self.through_relay(state.address, peer_id):
                state.relayed = True
                log.info("the link with %s goes through a relay", peer_id)

    # --- what the record carries ---------------------------------------------------------

    def relayed_addresses(self) -> list[Address]:
        """Where this node is reachable through the relays it is registered at."""
        return [client.relayed_address for client in self.relay_clients.values()
                if client.relayed_address is not None]

    def relays_run(self) -> list[Address]:
        """The relay this node runs, at each of its own addresses a member could reach."""
        if self.relay_server is None:
            return []
        return [(host, self.relay_server.port) for host, _ in self.advertised_addresses() if usable((host, 1))]

    def relays_offered(self) -> list[Address]:
        """What the record's `relays` says: the relay this node runs, then the ones it was told
        of, by the IP address their names resolved to (members take no names from a record)."""
        named = [(client.relay_ip, relay[1]) for relay, client in self.relay_clients.items()
                 if tuple(relay) in {tuple(r) for r in self.settings.relays} and client.relay_ip is not None]
        return list(dict.fromkeys([*self.relays_run(), *named]))[:4]

    # --- links ---------------------------------------------------------------------------

    def through_relay(self, address: Address | None, peer_id: str) -> bool:
        """Whether a link to `peer_id` whose far end is at `address` goes through a relay: a
        session one of our relays opened for it, or the peer's own relayed address, dialled.
        (Another member's record has no say: it could call anyone's address relayed.)"""
        if address is None:
            return False
        address = tuple(address)
        if any(client.is_session(address) for client in self.relay_clients.values()):
            return True
        record = next((record for record in self.alive_records() if record.node_id == peer_id), None)
        return record is not None and address in {tuple(relayed) for relayed in record.relayed_addresses}

    def relays_wire(self) -> tuple[dict, ...]:
        """For the node's status: each relay used, with our address there while registered."""
        used = tuple({"relay": "%s:%d" % relay,
                      "address": None if client.relayed_address is None else "%s:%d" % client.relayed_address}
                     for relay, client in self.relay_clients.items())
        served = () if self.relay_server is None else ({"serving": self.relay_server.port},)
        return served + used
