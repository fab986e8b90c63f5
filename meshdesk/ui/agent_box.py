"""One coding agent's launch command (and config file, if it needs one) with copy buttons."""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from meshdesk.ui.agents import AgentCommand
from meshdesk.ui.widgets import CopyField


class AgentBox(QWidget):
    def __init__(self, agent: str, parent=None):
        super().__init__(parent)
        monospace = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.command = CopyField()
        self.command.field.setFont(monospace)
        self.setup_title = QLabel()
        self.setup = QPlainTextEdit()
        self.setup.setReadOnly(True)
        self.setup.setFont(monospace)
        self.setup.setMaximumHeight(110)
        self.copy_setup = QPushButton("Copy")
        self.copy_setup.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.setup.toPlainText()))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(QLabel(f"<b>{agent}</b>"))
        layout.addWidget(self.command)
        row = QHBoxLayout()
        row.addWidget(self.setup, 1)
        row.addWidget(self.copy_setup)
        layout.addWidget(self.setup_title)
        layout.addLayout(row)

    def show_command(self, command: AgentCommand) -> None:
        self.command.set_text(command.command)
        has_setup = bool(command.setup)
        self.setup_title.setText(f"first put this in {command.setup_path}:" if has_setup else "")
        for widget in (self.setup_title, self.setup, self.copy_setup):
            widget.setVisible(has_setup)
        if self.setup.toPlainText() != command.setup:
            self.setup.setPlainText(command.setup)
