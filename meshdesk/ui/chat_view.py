"""The Chat tab: conversations, a model picker, a streaming transcript, stop and regenerate; a
strip above it shows this machine's part in the mesh."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPlainTextEdit, QPushButton, QSplitter, QVBoxLayout, QWidget)

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.models_model import chat_model_choices
from meshdesk.ui.chat_text import transcript_markdown
from meshdesk.ui.machine_strip import MachineStrip
from meshdesk.ui.transcript import Transcript

RENDER_INTERVAL_MS = 50  # streamed text is redrawn at most 20 times a second


class ChatView(QWidget):
    send_requested = Signal(str, str)        # text, model
    stop_requested = Signal()
    regenerate_requested = Signal(str)       # model
    new_conversation_requested = Signal()
    conversation_selected = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.messages: list = []
        self.streaming: str | None = None
        self.streaming_model = ""
        self.render_timer = QTimer(self, singleShot=True, interval=RENDER_INTERVAL_MS)
        self.render_timer.timeout.connect(self.render)
        splitter = QSplitter()
        splitter.addWidget(self._conversation_column())
        splitter.addWidget(self._chat_column())
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([180, 520])
        self.strip = MachineStrip()
        layout = QVBoxLayout(self)
        layout.addWidget(self.strip)
        layout.addWidget(splitter, 1)
        self.show_busy(False)

    def _conversation_column(self) -> QWidget:
        column = QWidget()
        self.new_button = QPushButton("New chat")
        self.new_button.clicked.connect(self.new_conversation_requested)
        self.conversations = QListWidget()
        self.conversations.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.conversations.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.conversations.itemActivated.connect(self._conversation_clicked)
        self.conversations.itemClicked.connect(self._conversation_clicked)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.new_button)
        layout.addWidget(self.conversations)
        return column

    def _chat_column(self) -> QWidget:
        column = QWidget()
        self.model_picker = QComboBox()
        self.model_picker.setPlaceholderText("no model available yet")
        self.transcript = Transcript()
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Message (Ctrl+Enter sends)")
        self.input.setMaximumHeight(90)
        send_shortcut = QShortcut(QKeySequence("Ctrl+Return"), self.input, activated=self._send)
        send_shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)  # only while typing here
        self.error = QLabel()
        self.error.setStyleSheet("color: #b3261e;")
        self.error.setWordWrap(True)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model_picker, 1)
        layout.addLayout(top)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.error)
        layout.addWidget(self.input)
        layout.addLayout(self._buttons())
        return column

    def _buttons(self) -> QHBoxLayout:
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self._send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_requested)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.clicked.connect(lambda: self.regenerate_requested.emit(self.model()))
        row = QHBoxLayout()
        row.addStretch(1)
        for button in (self.regenerate_button, self.stop_button, self.send_button):
            row.addWidget(button)
        return row

    def model(self) -> str:
        return self.model_picker.currentText()

    def _send(self) -> None:
        text = self.input.toPlainText().strip()
        if text and self.send_button.isEnabled():
            self.input.clear()
            self.send_requested.emit(text, self.model())

    def _conversation_clicked(self, item: QListWidgetItem) -> None:
        self.conversation_selected.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def show_models(self, names: list[str]) -> None:
        current = self.model()
        if [self.model_picker.itemText(i) for i in range(self.model_picker.count())] != names:
            self.model_picker.clear()
            self.model_picker.addItems(names)
            self.model_picker.setCurrentIndex(names.index(current) if current in names else 0)
        self._enable_buttons()

    def show_conversations(self, conversations: list[tuple[int, str]], current: int | None) -> None:
        self.conversations.clear()
        for conversation_id, title in conversations:
            item = QListWidgetItem(title)
            item.setData(Qt.ItemDataRole.UserRole, conversation_id)
            self.conversations.addItem(item)
            if conversation_id == current:
                self.conversations.setCurrentItem(item)

    def show_messages(self, messages: list) -> None:
        """Stored messages, each with role, content, model and finish_reason."""
        self.messages = list(messages)
        self.render()

    def begin_reply(self, model: str) -> None:
        self.streaming, self.streaming_model = "", model
        self.error.clear()
        self.show_busy(True)
        self.render()

    def append_delta(self, text: str) -> None:
        self.streaming = (self.streaming or "") + text
        if not self.render_timer.isActive():
            self.render_timer.start()

    def end_reply(self, messages: list) -> None:
        self.streaming = None
        self.render_timer.stop()
        self.show_busy(False)
        self.show_messages(messages)

    def show_error(self, reason: str) -> None:
        self.error.setText(reason)

    def show_busy(self, busy: bool) -> None:
        self.busy = busy
        self._enable_buttons()

    def _enable_buttons(self) -> None:
        has_model = self.model_picker.count() > 0
        self.send_button.setEnabled(not self.busy and has_model)
        self.regenerate_button.setEnabled(not self.busy and has_model and bool(self.messages))
        self.stop_button.setEnabled(self.busy)

    def render(self) -> None:
        self.transcript.show_markdown(transcript_markdown(self.messages, self.streaming,
                                                          self.streaming_model))

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.strip.show_status(snapshot)
        self.show_models(chat_model_choices(snapshot))
