"""The desktop bootstrap: the node's asyncio loop inside Qt's, through qasync."""

from __future__ import annotations

import asyncio
import sys

from meshdesk.app.launch import ReadinessPrinter, fail, start_api
from meshdesk.node.node import Node


def run_desktop(node: Node, port: int) -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    from meshdesk.ui.main_window import MainWindow

    application = QApplication.instance() or QApplication(sys.argv)
    application.setApplicationName("MeshDesk")
    window = MainWindow()
    node.subscribe(lambda: window.show_status(node.status()))
    node.subscribe(ReadinessPrinter(node))

    async def serve() -> int:
        closed = asyncio.Event()
        application.lastWindowClosed.connect(closed.set)
        try:
            server = await start_api(node, port)
        except OSError as error:
            return fail(f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}; choose another --port")
        window.show_status(node.status())
        window.show()
        node_task = asyncio.create_task(node.run())
        await asyncio.wait([node_task, asyncio.create_task(closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        node_task.cancel()
        await asyncio.gather(node_task, return_exceptions=True)
        await server.stop()
        return 0

    return qasync.run(serve())
