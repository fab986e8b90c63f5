"""The desktop bootstrap: the node's asyncio loop inside Qt's, through qasync."""

from __future__ import annotations

import asyncio
import signal
import sys

from meshdesk.app.launch import ReadinessPrinter
from meshdesk.app.runtime import Runtime

SIGNAL_POLL_MS = 200


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


def run_desktop(runtime: Runtime) -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    from meshdesk.ui.main_window import MainWindow

    application = QApplication.instance() or QApplication(sys.argv)
    application.setApplicationName("MeshDesk")
    # The app ends through `stop`, so the node can shut its children down first.
    application.setQuitOnLastWindowClosed(False)
    node = runtime.node
    window = MainWindow()
    node.subscribe(lambda: window.show_status(node.status()))
    node.subscribe(ReadinessPrinter(node))

    async def serve() -> int:
        stop = asyncio.Event()
        stop_on_signals(application, stop)
        application.lastWindowClosed.connect(stop.set)
        window.show_status(node.status())
        window.show()
        return await runtime.serve(stop)

    return qasync.run(serve())
