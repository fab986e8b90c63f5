"""One coding agent in Settings: `meshdesk run AGENT` to copy or to open in a terminal, and the
same by hand (its environment, and the config file it needs first, if any)."""

from __future__ import annotations

import shutil
import sys

from PySide6.QtCore import QProcess
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from meshdesk.ui.agents import AgentCommand, terminal_command
from meshdesk.ui.widgets import CopyField, selectable_label


class AgentBox(QWidget):
    def __init__(self, agent: str, parent=None, platform: str = sys.platform, installed=shutil.which):
        super().__init__(parent)
        self.platform, self.installed = platform, installed
        monospace = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.run = CopyField()
        self.run.field.setFont(monospace)
        self.launch = QPushButton("Open in terminal")
        self.launch.clicked.connect(self.open_in_terminal)
        self.command = CopyField()
        self.command.field.setFont(monospace)
        self.install = selectable_label()
        self.setup_title = QLabel()
        self.setup = QPlainTextEdit()
        self.setup.setReadOnly(True)
        self.setup.setFont(monospace)
        self.setup.setMaximumHeight(110)
        self.note = selectable_label()
        self.copy_setup = QPushButton("Copy")
        self.copy_setup.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.setup.toPlainText()))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(QLabel(f"<b>{agent}</b>"))
        run_row = QHBoxLayout()
        run_row.addWidget(self.run, 1)
        run_row.addWidget(self.launch)
        layout.addLayout(run_row)
        layout.addWidget(self.install)
        layout.addWidget(QLabel("or by hand:"))
        layout.addWidget(self.command)
        row = QHBoxLayout()
        row.addWidget(self.setup, 1)
        row.addWidget(self.copy_setup)
        layout.addWidget(self.setup_title)
        layout.addLayout(row)
        layout.addWidget(self.note)

    def show_command(self, command: AgentCommand) -> None:
        self.run.set_text(command.run)
        present = bool(self.installed(command.agent))
        self.install.setText("" if present else f"not installed here; install it with: {command.install}")
        self.install.setVisible(not present)
        terminal = terminal_command(self.platform, command.run, self.installed)
        self.launch.setEnabled(present and terminal is not None)
        self.launch.setToolTip("" if terminal else "no terminal program found")
        self.command.set_text(command.command)
        has_setup = bool(command.setup)
        self.setup_title.setText(f"first put this in {command.setup_path}:" if has_setup else "")
        for widget in (self.setup_title, self.setup, self.copy_setup):
            widget.setVisible(has_setup)
        self.note.setText(command.note)
        self.note.setVisible(bool(command.note))
        if self.setup.toPlainText() != command.setup:
            self.setup.setPlainText(command.setup)

    def terminal(self) -> list[str] | None:
        return terminal_command(self.platform, self.run.text(), self.installed)

    def open_in_terminal(self) -> bool:
        command = self.terminal()
        return bool(command) and QProcess.startDetached(command[0], command[1:])[0]
