"""macOS: a meshdesk:// link opened in a browser or the Finder reaches the app as an Apple
Event, which Qt turns into a QFileOpenEvent sent to the QApplication, never as an argument
(the bundle declares the scheme in Info.plist: CFBundleURLTypes in briefcase.toml).

`FileOpenLinks` is an event filter on the application. Links that arrive before the window can
show them (the one that launched the app comes first) wait until `deliver_to` is called, then
go where the link inbox sends its links: the Join view, where joining needs the user's consent.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject

SCHEME = "meshdesk"
MAX_LINK_CHARACTERS = 4096  # as the link inbox's MAX_LINK_BYTES


class FileOpenLinks(QObject):
    """Takes QFileOpenEvents for meshdesk:// URLs; any other file or URL is left to Qt."""

    def __init__(self, application):
        super().__init__(application)
        self.pending: list[str] = []
        self.on_link: Callable[[str], None] | None = None
        application.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.FileOpen:
            return False
        url = event.url()
        if url.scheme().lower() != SCHEME:
            return False
        link = url.toString()[:MAX_LINK_CHARACTERS]
        if self.on_link is None:
            self.pending.append(link)
        else:
            self.on_link(link)
        return True

    def deliver_to(self, on_link: Callable[[str], None]) -> None:
        """From now on links go to `on_link`; those that came earlier go first, in order."""
        self.on_link = on_link
        pending, self.pending = self.pending, []
        for link in pending:
            on_link(link)
