"""Small building blocks the views share."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPushButton, QTableWidget, QTableWidgetItem, QWidget)


def selectable_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setWordWrap(True)
    return label


def read_only_table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    return table


def fill_table(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
    """Replaces the rows, keeping the selected row where it still exists."""
    selected = table.currentRow()
    table.setRowCount(len(rows))
    for row, values in enumerate(rows):
        for column, value in enumerate(values):
            item = table.item(row, column)
            if item is None:
                table.setItem(row, column, QTableWidgetItem(value))
            elif item.text() != value:
                item.setText(value)
    if 0 <= selected < len(rows):
        table.selectRow(selected)


class CopyField(QWidget):
    """A read-only line of text with a Copy button that puts it on the clipboard."""

    def __init__(self, button_text: str = "Copy", parent=None):
        super().__init__(parent)
        self.field = QLineEdit()
        self.field.setReadOnly(True)
        self.copy_button = QPushButton(button_text)
        self.copy_button.clicked.connect(self.copy)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.field, 1)
        layout.addWidget(self.copy_button)

    def set_text(self, text: str) -> None:
        if self.field.text() != text:
            self.field.setText(text)
            self.field.setCursorPosition(0)
        self.copy_button.setEnabled(bool(text))

    def text(self) -> str:
        return self.field.text()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.field.text())
