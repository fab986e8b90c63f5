"""The main window: a header with the node's state, and one tab per concern; before the home's
first choice, the first-run page in their place (`show_first_run`)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QLabel, QMainWindow, QScrollArea, QStackedWidget, QTabWidget,
                               QVBoxLayout, QWidget)

from meshdesk.ui.chat_view import ChatView
from meshdesk.ui.first_run import FirstRunPage
from meshdesk.ui.icons import state_icon
from meshdesk.ui.invite_view import InviteView
from meshdesk.ui.join_view import JoinView
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.mesh_model import TrayState, api_line, tray_state
from meshdesk.ui.mesh_view import MeshView
from meshdesk.ui.models_view import ModelsView
from meshdesk.ui.settings_view import SettingsView

STATE_WORDS = {TrayState.READY: "Ready", TrayState.LOADING: "Loading", TrayState.FAILED: "Failed",
               TrayState.NO_MESH: "No mesh yet"}


def scrollable(view: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(view)
    return area


class MainWindow(QMainWindow):
    """Call `show_status(snapshot)` to redraw every tab; the views' signals carry intents."""

    closed = Signal()  # the window really closed (not hidden to the tray): the app should end
    hidden_to_tray = Signal()

    def __init__(self):
        super().__init__()
        self.setWindowTitle("MeshDesk")
        self.resize(900, 640)
        self.keep_running_in_tray = False
        self.state: TrayState | None = None
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.api_address = QLabel()
        self.api_address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.mesh, self.chat, self.models = MeshView(), ChatView(), ModelsView()
        self.invite, self.join, self.settings = InviteView(), JoinView(), SettingsView()
        self.tabs = QTabWidget()
        for view, name in self.views():
            self.tabs.addTab(scrollable(view) if view is self.settings else view, name)
        self.chat.strip.details_requested.connect(lambda: self.show_tab(self.mesh))
        layout = QVBoxLayout()
        layout.addWidget(self.title)
        layout.addWidget(self.api_address)
        layout.addWidget(self.tabs, 1)
        body = QWidget()
        body.setLayout(layout)
        self.first_run = FirstRunPage()
        self.pages = QStackedWidget()
        self.pages.addWidget(body)
        self.pages.addWidget(self.first_run)
        self.setCentralWidget(self.pages)
        self.show_tab(self.chat)

    def views(self) -> list[tuple[QWidget, str]]:
        return [(self.mesh, "Mesh"), (self.chat, "Chat"), (self.models, "Models"),
                (self.invite, "Invite"), (self.join, "Join"), (self.settings, "Settings")]

    def show_tab(self, view: QWidget) -> None:
        """Leaves the first-run page, if it shows, for the tabs with `view`'s tab current."""
        self.pages.setCurrentIndex(0)
        self.tabs.setCurrentIndex([shown for shown, _ in self.views()].index(view))

    def show_first_run(self) -> None:
        self.first_run.show_question()
        self.pages.setCurrentWidget(self.first_run)

    def showing_first_run(self) -> bool:
        return self.pages.currentWidget() is self.first_run

    def show_status(self, snapshot: StatusSnapshot) -> None:
        node = snapshot.node
        state = tray_state(snapshot)
        self.title.setText(f"{node.name}  ·  {STATE_WORDS[state]}  ·  MeshDesk {node.version}")
        self.api_address.setText(f"API: {api_line(snapshot)}")
        if state != self.state:
            self.state = state
            self.setWindowIcon(state_icon(state))
        for view, _ in self.views():
            view.show_status(snapshot)
        self.first_run.show_status(snapshot)

    def bring_forward(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    def closeEvent(self, event) -> None:
        if self.keep_running_in_tray:
            event.ignore()
            self.hide()
            self.hidden_to_tray.emit()
            return
        event.accept()
        self.closed.emit()
