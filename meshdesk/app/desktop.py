"""The desktop bootstrap: the node's asyncio loop inside Qt's, through qasync, with the window,
the tray (where the desktop has one) and what the views need from files and decoders."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from meshdesk.adapters.desktop_links import LinkInbox, hand_over, inbox_address
from meshdesk.adapters.qr_decoder import decode_qr_texts
from meshdesk.app.download_controller import DownloadController
from meshdesk.app.first_run_choice import choice_made, remember_choice
from meshdesk.app.home import Home
from meshdesk.app.model_choice import bundled_catalog
from meshdesk.app.readiness import ReadinessPrinter
from meshdesk.app.runtime import Runtime, StartupFailed
from meshdesk.node.chat_service import ChatService
from meshdesk.node.chat_store import ChatStore
from meshdesk.node.child_process import app_command
from meshdesk.ui.autostart import AutostartEntry, autostart_entry

SIGNAL_POLL_MS = 200
log = logging.getLogger(__name__)


def stop_on_signals(application, stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM close the app cleanly, through the same path as closing the window.

    Python runs signal handlers only when it gets control, and Qt's loop is C++, so a timer
    hands control back a few times a second.
    """
    from PySide6.QtCore import QTimer

    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: loop.call_soon_threadsafe(stop.set))
    timer = QTimer(application)
    timer.timeout.connect(lambda: None)
    timer.start(SIGNAL_POLL_MS)


# --- what the views may not do themselves: files and decoders (run in worker threads) -------

def decode_image(image) -> list[str]:
    from meshdesk.ui.qr_images import scan_pixels

    scan = scan_pixels(image)
    return decode_qr_texts(scan.pixels, scan.width, scan.height, scan.row_stride, scan.pixel_format)


def decode_file(path: str) -> list[str]:
    from PySide6.QtGui import QImage

    image = QImage(path)  # QImage, unlike QPixmap, may be loaded off the GUI thread
    if image.isNull():
        raise ValueError("not an image this app can read")
    return decode_image(image)


def launch_command(home: Path) -> list[str]:
    return app_command("--home", str(home))  # the bundle's own launcher inside a bundle


class StartAtLogin:
    def __init__(self, home: Path):
        config_home = os.environ.get("XDG_CONFIG_HOME")
        try:
            self.entry: AutostartEntry | None = autostart_entry(
                sys.platform, launch_command(home), Path.home(), Path(config_home) if config_home else None)
        except ValueError:  # an OS without a known autostart mechanism
            self.entry = None

    def enabled(self) -> bool:
        if self.entry is None:
            return False
        if self.entry.kind == "registry":
            return self._registry().contains(self.entry.name)
        return Path(self.entry.location).exists()

    def set(self, enabled: bool) -> str:
        if self.entry is None:
            return f"Start at login is not supported on {sys.platform}."
        if self.entry.kind == "registry":
            settings = self._registry()
            if enabled:
                settings.setValue(self.entry.name, self.entry.content)
            else:
                settings.remove(self.entry.name)
            return ""
        path = Path(self.entry.location)
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.entry.content)
            return f"Wrote {path}"
        path.unlink(missing_ok=True)
        return ""

    def _registry(self):
        from PySide6.QtCore import QSettings

        return QSettings(self.entry.location, QSettings.Format.NativeFormat)


def settle_garbage_collector() -> None:
    """Moves everything built at startup (modules, Qt wrappers, the node) out of the collector's
    sight: a full collection then scans only what came later. Without this, a full collection
    stalls the event loop for 40-70 ms at random moments (measured by bench/gui_latency.py)."""
    gc.collect()
    gc.freeze()


# --- composition --------------------------------------------------------------------------

def earlier_choice(runtime: Runtime) -> str | None:
    """The first run's answer that this home gave without it: a `--join` on the command line, or
    a mesh shared with other machines from an earlier run (headless, or an older version),
    founded here ("start") or joined ("join")."""
    if runtime.join_tokens:
        return "join"
    memory = runtime.mesh.memory
    if not memory.mesh_id or len(set(memory.members)) < 2:
        return None
    return "start" if memory.authority == runtime.mesh.credentials.public_key.hex() else "join"


def remember(home: Path, choice: str) -> None:
    try:
        remember_choice(home, choice)
    except OSError as error:  # the next start asks again; nothing else is lost
        log.warning("cannot remember the first run's choice in %s: %s", home, error)


class Desktop:
    """The window, tray and controllers around a runtime; `serve()` runs until asked to stop.

    The window opens on the first run's question until this home has answered it (a `--join`
    on the command line, or a mesh shared with others from before, is an answer), then on the
    chat. `link`, an invite link the app was
    opened with, is shown in a Join view once the node has its mesh; links opened later (a
    second launch) arrive through the link inbox."""

    def __init__(self, runtime: Runtime, application, link: str | None = None):
        from meshdesk.ui.chat_controller import ChatController
        from meshdesk.ui.controller import DesktopController, DesktopServices
        from meshdesk.ui.main_window import MainWindow
        from meshdesk.ui.tray import Tray, TrayMenu, tray_available

        self.runtime, self.application, self.link = runtime, application, link
        self.inbox: LinkInbox | None = None
        self.file_open = file_open_links(application)
        node = runtime.node
        self.stop = asyncio.Event()
        self.window = MainWindow()
        self.menu = TrayMenu()
        self.tray = Tray(self.menu) if tray_available() else None
        self.store = ChatStore.in_home(node.identity.home)
        self.chat_service = ChatService(node, self.store)
        home = node.identity.home
        login = StartAtLogin(home)
        services = DesktopServices(decode_image=decode_image, decode_file=decode_file,
                                   autostart_enabled=login.enabled, set_autostart=login.set,
                                   quit=self.stop.set,
                                   remember_choice=lambda choice: remember(home, choice))
        if not choice_made(home) and (choice := earlier_choice(runtime)):
            remember(home, choice)
        if not choice_made(home):
            self.window.show_first_run()
        self.controller = DesktopController(node, self.window, self.menu, services, tray=self.tray)
        self.chat = ChatController(self.window.chat, self.chat_service, self.store)
        self.downloads = DownloadController(self.window.models, bundled_catalog(),
                                            Home(node.identity.home).models, node.hooks.rescan_models)
        node.subscribe(lambda: self.downloads.show_mesh_download(node.hooks.download_status()))
        node.subscribe(ReadinessPrinter(node))

    async def serve(self) -> int:
        stop_on_signals(self.application, self.stop)
        self.controller.redraw()
        self.downloads.run(self.downloads.refresh_listing())
        settle_garbage_collector()
        self.window.show()
        try:
            try:
                await self.runtime.start()
            except StartupFailed as failure:  # as Runtime.serve does
                sys.stderr.write(f"meshdesk: error: {failure}\n")
                await self.runtime.shutdown()
                return 2
            self.open_inbox()
            if self.link:
                self.controller.open_link(self.link)
            return await self.runtime.run_until(self.stop)
        finally:
            await self.close()

    def open_inbox(self) -> None:
        if self.file_open is not None:  # links macOS handed over since launch, and later ones
            self.file_open.deliver_to(self.controller.open_link)
        address = inbox_address(self.runtime.node.identity.home)
        if address is None:
            log.warning("the home's path is too long for a link socket; links open a second app")
            return
        self.inbox = LinkInbox(address, self.controller.open_link)
        if not self.inbox.listen():
            self.inbox = None

    async def close(self) -> None:
        if self.inbox is not None:
            self.inbox.close()
        self.chat_service.stop()
        self.controller.close()
        self.downloads.close()
        if self.chat_service.reply_task is not None:  # it stores what was said before it stopped
            await asyncio.gather(self.chat_service.reply_task, return_exceptions=True)
        if self.tray is not None:
            self.tray.hide()
        self.window.hide()
        self.store.close()


def file_open_links(application):
    """macOS delivers meshdesk:// links as QFileOpenEvents (adapters/file_open_links.py); an
    application-wide filter sees every event, so it is installed only there."""
    if sys.platform != "darwin":
        return None
    from meshdesk.adapters.file_open_links import FileOpenLinks

    return FileOpenLinks(application)


def hand_link_to_running_desktop(home: Path, link: str) -> bool:
    """True when a desktop already runs for `home` and now shows `link` in its Join view."""
    address = inbox_address(home)
    return address is not None and hand_over(address, link)


def run_desktop(runtime: Runtime, link: str | None = None) -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    application = QApplication.instance() or QApplication(sys.argv)
    application.setApplicationName("MeshDesk")
    # The app ends through `Desktop.stop`, so the node can shut its children down first; the
    # tray keeps working with the window closed.
    application.setQuitOnLastWindowClosed(False)
    desktop = Desktop(runtime, application, link)
    return qasync.run(desktop.serve())
