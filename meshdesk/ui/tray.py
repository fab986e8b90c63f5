"""The tray icon and its menu, which keep working while the window is closed."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from meshdesk.ui.icons import state_icon
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.mesh_model import TrayState, tray_state
from meshdesk.ui.models_model import chat_model_choices

STATE_WORDS = {TrayState.READY: "ready", TrayState.LOADING: "loading", TrayState.FAILED: "failed",
               TrayState.NO_MESH: "no mesh yet"}


def tray_available() -> bool:
    return QSystemTrayIcon.isSystemTrayAvailable()


class TrayMenu(QMenu):
    """The menu alone, so it can be built and tested where no tray exists."""

    open_requested = Signal()
    donate_toggled = Signal(bool)
    copy_invite_requested = Signal()
    quit_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.addAction("Open MeshDesk").triggered.connect(self.open_requested)
        self.addSeparator()
        self.donate = self.addAction("Donate spare capacity")
        self.donate.setCheckable(True)
        self.donate.setChecked(True)
        self.donate.toggled.connect(self.donate_toggled)
        self.model = self.addAction("No model")
        self.model.setEnabled(False)
        self.addAction("Copy invite").triggered.connect(self.copy_invite_requested)
        self.addSeparator()
        self.addAction("Quit MeshDesk").triggered.connect(self.quit_requested)

    def show_status(self, snapshot: StatusSnapshot) -> None:
        donating = snapshot.offer.donating
        if self.donate.isChecked() != donating:
            self.donate.blockSignals(True)
            self.donate.setChecked(donating)
            self.donate.blockSignals(False)
        choices = chat_model_choices(snapshot)
        self.model.setText(f"Model: {choices[0]}" if choices else "No model")


class Tray(QObject):
    def __init__(self, menu: TrayMenu, parent=None):
        super().__init__(parent)
        self.menu = menu
        self.state = TrayState.NO_MESH
        self.told_still_running = False
        self.icon = QSystemTrayIcon(state_icon(self.state), self)
        self.icon.setContextMenu(menu)
        self.icon.activated.connect(self._activated)
        self.icon.show()

    def _activated(self, reason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.menu.open_requested.emit()

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.menu.show_status(snapshot)
        state = tray_state(snapshot)
        if state != self.state:
            self.state = state
            self.icon.setIcon(state_icon(state))
        self.icon.setToolTip(f"MeshDesk {snapshot.node.name} — {STATE_WORDS[state]}")

    def say_still_running(self) -> None:
        """Once per run: where the window went, the first time it is closed."""
        if not self.told_still_running:
            self.told_still_running = True
            self.icon.showMessage("MeshDesk is still running",
                                  "It keeps serving the mesh from here; quit from this menu.",
                                  QSystemTrayIcon.MessageIcon.Information, 5000)

    def hide(self) -> None:
        self.icon.hide()
