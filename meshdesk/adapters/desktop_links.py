"""One desktop app per home: a link opened while MeshDesk runs goes to the running window.

The running desktop listens on a local socket (QLocalServer: a Unix socket in the home on
Linux and macOS, a named pipe on Windows), readable by this user only. A second launch with
a link connects, writes the link, and exits; the running app shows it in the Join view,
where joining still needs the user's confirmation. Whatever arrives is only ever shown: the
inbox reads one line of at most MAX_LINK_BYTES and hands it on as text.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

MAX_LINK_BYTES = 4096
CONNECT_MS = 1000
SOCKET_NAME = "desktop.sock"
MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) to 108 (Linux) bytes


def inbox_address(home: Path) -> str | None:
    """Where the desktop for `home` listens; None when the home's path is too long for a socket."""
    if sys.platform == "win32":
        return "meshdesk-" + hashlib.sha256(str(home).encode()).hexdigest()[:24]
    path = str(home / SOCKET_NAME)
    return path if len(path.encode()) <= MAX_UNIX_SOCKET_PATH else None


def hand_over(address: str, link: str | None) -> bool:
    """Gives `link` to the desktop listening at `address`; False when none listens there.
    With `link` None, only asks whether one listens."""
    from PySide6.QtNetwork import QLocalSocket

    socket = QLocalSocket()
    socket.connectToServer(address)
    if not socket.waitForConnected(CONNECT_MS):
        return False
    if link is None:
        socket.abort()
        return True
    socket.write(link.encode("utf-8")[:MAX_LINK_BYTES - 1] + b"\n")
    written = socket.waitForBytesWritten(CONNECT_MS)
    socket.disconnectFromServer()
    return written


class LinkInbox:
    """Listens at `address` while the desktop runs; `on_link(text)` gets each link handed over."""

    def __init__(self, address: str, on_link: Callable[[str], None]):
        from PySide6.QtNetwork import QLocalServer

        self.address, self.on_link = address, on_link
        self.server = QLocalServer()
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._accept)
        self.buffers: dict = {}

    def listen(self) -> bool:
        """True when listening; a socket left by a crashed desktop is replaced, a live one is not
        (Qt would: with access options it binds elsewhere and renames over the name)."""
        from PySide6.QtNetwork import QLocalServer

        if hand_over(self.address, None):
            log.warning("another MeshDesk desktop listens for links at %s", self.address)
            return False
        QLocalServer.removeServer(self.address)  # left by a desktop that crashed, if anything
        if self.server.listen(self.address):
            return True
        log.warning("cannot listen for links at %s: %s", self.address, self.server.errorString())
        return False

    def _accept(self) -> None:
        while (connection := self.server.nextPendingConnection()) is not None:
            self.buffers[connection] = b""
            connection.readyRead.connect(lambda connection=connection: self._read(connection))
            connection.disconnected.connect(lambda connection=connection: self._drop(connection))

    def _read(self, connection) -> None:
        data = self.buffers.get(connection, b"") + bytes(connection.readAll())
        if b"\n" not in data and len(data) < MAX_LINK_BYTES:
            self.buffers[connection] = data
            return
        self._drop(connection)
        line = data.split(b"\n", 1)[0][:MAX_LINK_BYTES]
        text = line.decode("utf-8", errors="replace").strip()
        if text:
            self.on_link(text)

    def _drop(self, connection) -> None:
        if self.buffers.pop(connection, None) is not None:
            connection.disconnectFromServer()
            connection.deleteLater()

    def close(self) -> None:
        for connection in list(self.buffers):
            self._drop(connection)
        self.server.close()
