"""mDNS on the LAN, with zeroconf: announces this node's mesh port and hears other nodes'.

What an announcement says, and whose it is, is `core.lan_discovery`'s: this module only runs
zeroconf in the node's event loop, registers the service under a random instance and host
name (never the machine's name, which is often the node's), and hands every announcement of
the service it resolves to `on_heard(properties, hosts, port)`.

Where multicast cannot work (no interface that carries it, a sandbox without it), mDNS stays
off and says so in one log line; the node works as before.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from zeroconf import BadTypeInNameException, IPVersion, NonUniqueNameException, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshdesk.core.lan_discovery import SERVICE_TYPE

log = logging.getLogger(__name__)

RESOLVE_MILLISECONDS = 3000
MAX_RESOLVING = 16  # a LAN flooding announcements gets this many lookups at a time, no more

OnHeard = Callable[[dict, list[str], int], None]


class LanPresence:
    """Our announcement and the browser for everyone else's; `start`, then `stop`."""

    def __init__(self, on_heard: OnHeard):
        self.on_heard = on_heard
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._resolving: set[asyncio.Task] = set()

    async def start(self, port: int, hosts: list[str], properties: dict[str, str]) -> bool:
        """Announces `port` at `hosts` (IPv4 LAN addresses) and starts listening; False, with
        one log line, when multicast is not available here."""
        instance = f"meshdesk-{secrets.token_hex(6)}"
        info = AsyncServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=port, properties=properties,
                                server=f"{instance}.local.", parsed_addresses=hosts)
        try:
            self._zeroconf = AsyncZeroconf(interfaces=hosts, ip_version=IPVersion.V4Only)
            await self._zeroconf.async_register_service(info)
            self._browser = AsyncServiceBrowser(self._zeroconf.zeroconf, SERVICE_TYPE, handlers=[self._changed])
        except (OSError, NonUniqueNameException, BadTypeInNameException) as error:
            log.warning("mDNS is off (members on this LAN are found only by their addresses): %s", error)
            await self.stop()
            return False
        log.info("mDNS: announcing the mesh port on %s", ", ".join(hosts))
        return True

    def _changed(self, zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated) \
                and len(self._resolving) < MAX_RESOLVING:
            task = asyncio.ensure_future(self._resolve(name))
            self._resolving.add(task)
            task.add_done_callback(self._resolving.discard)

    async def _resolve(self, name: str) -> None:
        if self._zeroconf is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        try:
            found = await info.async_request(self._zeroconf.zeroconf, RESOLVE_MILLISECONDS)
        except (OSError, BadTypeInNameException) as error:
            log.debug("mDNS: could not resolve %s: %s", name, error)
            return
        if found and info.port:
            self.on_heard(dict(info.properties), info.parsed_addresses(IPVersion.V4Only), info.port)

    async def stop(self) -> None:
        for task in list(self._resolving):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zeroconf is not None:
            zeroconf, self._zeroconf = self._zeroconf, None
            try:
                await zeroconf.async_unregister_all_services()  # says goodbye on the LAN
            finally:
                await zeroconf.async_close()
