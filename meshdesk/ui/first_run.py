"""The first run's one question: start a mesh, or join a friend's.

Joining shows a Join view (the same class as the Join tab, so its camera, paste and image
inputs are the tab's) with a way back to the question. The page only emits intents; the
controller remembers the choice and opens the chat."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout,
                               QWidget)

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.join_view import JoinView

CHOICE_STYLE = ("QPushButton { border: 1px solid #c4c9d2; border-radius: 8px; background: #ffffff; }"
                " QPushButton:hover { border-color: #2f6fde; background: #f3f7ff; }")
COLUMN_WIDTH = 560


def choice_button(title: str, caption: str) -> QPushButton:
    """A large button with a bold title over a grey caption (labels the clicks pass through)."""
    button = QPushButton()
    button.setAccessibleName(title)
    button.setStyleSheet(CHOICE_STYLE)
    button.setMinimumHeight(78)
    heading, explanation = QLabel(title), QLabel(caption)
    heading.setStyleSheet("font-size: 16px; font-weight: 600; border: none; background: transparent;")
    explanation.setStyleSheet("color: #475467; border: none; background: transparent;")
    explanation.setWordWrap(True)
    layout = QVBoxLayout(button)
    layout.setContentsMargins(18, 10, 18, 10)
    for label in (heading, explanation):
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        layout.addWidget(label)
    button.title, button.caption = heading, explanation
    return button


def centred(*widgets: QWidget) -> QHBoxLayout:
    """The widgets in one column of fixed width, in the middle of the page."""
    column = QWidget()
    column.setFixedWidth(COLUMN_WIDTH)
    inner = QVBoxLayout(column)
    inner.setSpacing(14)
    for widget in widgets:
        inner.addWidget(widget)
    outer = QHBoxLayout()
    outer.addStretch(1)
    middle = QVBoxLayout()
    middle.addStretch(1)
    middle.addWidget(column)
    middle.addStretch(2)
    outer.addLayout(middle)
    outer.addStretch(1)
    return outer


class FirstRunPage(QWidget):
    start_chosen = Signal()   # "Start a mesh": this machine founds (or resumes) its own mesh
    join_chosen = Signal()    # "Join a friend's": the Join view is showing

    def __init__(self, parent=None):
        super().__init__(parent)
        self.join = JoinView()
        self.pages = QStackedWidget()
        self.pages.addWidget(self._question())
        self.pages.addWidget(self._join_page())
        layout = QVBoxLayout(self)
        layout.addWidget(self.pages)

    def _question(self) -> QWidget:
        page = QWidget()
        self.welcome = QLabel("Welcome to MeshDesk")
        self.welcome.setStyleSheet("font-size: 24px; font-weight: 600;")
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        explanation = QLabel("Run a language model together with your friends' computers. "
                             "Do you want to start a mesh, or join one a friend started?")
        explanation.setWordWrap(True)
        explanation.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.start_button = choice_button("Start a mesh", "Chat with a model on this computer now; "
                                          "invite friends whenever you like.")
        self.start_button.clicked.connect(self.start_chosen)
        self.join_button = choice_button("Join a friend's mesh", "Scan their QR code with the camera, "
                                         "paste their invite, or pick an image of it.")
        self.join_button.clicked.connect(self.show_join)
        page.setLayout(centred(self.welcome, explanation, self.start_button, self.join_button))
        return page

    def _join_page(self) -> QWidget:
        page = QWidget()
        self.back_button = QPushButton("← Back")
        self.back_button.clicked.connect(self.show_question)
        heading = QLabel("Join a friend's mesh")
        heading.setStyleSheet("font-size: 20px; font-weight: 600;")
        top = QHBoxLayout()
        top.addWidget(self.back_button)
        top.addWidget(heading, 1)
        layout = QVBoxLayout(page)
        layout.addLayout(top)
        layout.addWidget(self.join, 1)
        return page

    def show_question(self) -> None:
        self.pages.setCurrentIndex(0)

    def show_join(self) -> None:
        self.pages.setCurrentIndex(1)
        self.join_chosen.emit()

    def joining(self) -> bool:
        return self.pages.currentIndex() == 1

    def show_status(self, snapshot: StatusSnapshot) -> None:
        self.join.show_status(snapshot)
