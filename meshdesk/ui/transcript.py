"""The chat transcript widget: Markdown (from `chat_text`) with fenced code in shaded, monospaced
blocks, each with a Copy button at its top right that puts the block's code on the clipboard.

The buttons are real widgets on the viewport, placed over the document's code blocks whenever
the text, the size or the scroll position changes."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, QTimer, QUrl
from PySide6.QtGui import (QColor, QDesktopServices, QGuiApplication, QTextBlock, QTextBlockFormat, QTextCursor,
                           QTextDocument, QTextFormat)
from PySide6.QtWidgets import QTextBrowser, QToolButton

from meshdesk.ui.chat_text import fenced_line_counts

MARKDOWN_WITHOUT_HTML = (QTextDocument.MarkdownFeature.MarkdownDialectGitHub
                         | QTextDocument.MarkdownFeature.MarkdownNoHTML)

CODE_BACKGROUND = QColor("#f1f3f6")
COPIED_NOTE_MS = 1500
BUTTON_STYLE = ("QToolButton { background: #ffffff; border: 1px solid #c4c9d2; border-radius: 4px;"
                " padding: 1px 8px; color: #344054; } QToolButton:hover { background: #e8ecf2; }")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced code block of the document: its first and last text blocks, and its code."""

    first: int  # block numbers
    last: int
    code: str


class Transcript(QTextBrowser):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenLinks(False)  # copy buttons aside, a link opens in the browser, not in here
        self.anchorClicked.connect(open_web_link)
        self.shown = ""
        self.code_blocks: list[CodeBlock] = []
        self.copy_buttons: list[QToolButton] = []
        self.verticalScrollBar().valueChanged.connect(self.place_copy_buttons)
        self.horizontalScrollBar().valueChanged.connect(self.place_copy_buttons)

    def show_markdown(self, markdown: str) -> None:
        if markdown == self.shown:
            return
        self.shown = markdown
        scroll = self.verticalScrollBar()
        following = scroll.value() >= scroll.maximum() - 4
        self.code_blocks = []  # the scroll moves while the text is replaced: no stale blocks
        # No raw HTML: an answer's `Vec<String>` or `<img src=file:...>` would otherwise be taken
        # for a tag, and everything after it, later messages too, would vanish.
        self.document().setMarkdown(markdown, MARKDOWN_WITHOUT_HTML)
        shade_code_blocks(self)
        self.code_blocks = code_blocks(self, fenced_line_counts(markdown))
        if following:
            scroll.setValue(scroll.maximum())
        self.place_copy_buttons()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.place_copy_buttons()

    def place_copy_buttons(self) -> None:
        while len(self.copy_buttons) < len(self.code_blocks):
            self.copy_buttons.append(self._new_copy_button(len(self.copy_buttons)))
        for index, button in enumerate(self.copy_buttons):
            button.setVisible(index < len(self.code_blocks))
            if index < len(self.code_blocks):
                area = self.code_block_area(self.code_blocks[index])
                button.move(int(area.right()) - button.width() - 4, int(area.top()) + 3)

    def code_block_area(self, block: CodeBlock) -> QRectF:
        """Where a code block is drawn, in viewport coordinates."""
        layout, document = self.document().documentLayout(), self.document()
        area = layout.blockBoundingRect(document.findBlockByNumber(block.first)).united(
            layout.blockBoundingRect(document.findBlockByNumber(block.last)))
        return area.translated(-self.horizontalScrollBar().value(), -self.verticalScrollBar().value())

    def _new_copy_button(self, index: int) -> QToolButton:
        button = QToolButton(self.viewport())
        button.setText("Copy")
        button.setToolTip("Copy this code")
        button.setStyleSheet(BUTTON_STYLE)
        button.adjustSize()
        button.clicked.connect(lambda: self.copy_code(index))
        return button

    def copy_code(self, index: int) -> None:
        if index >= len(self.code_blocks):
            return
        QGuiApplication.clipboard().setText(self.code_blocks[index].code)
        button = self.copy_buttons[index]
        button.setText("Copied")
        QTimer.singleShot(COPIED_NOTE_MS, button, lambda: button.setText("Copy"))


def open_web_link(url: QUrl) -> None:
    if url.scheme() in ("http", "https", "mailto"):
        QDesktopServices.openUrl(url)


def is_code(block: QTextBlock) -> bool:
    return block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence)


def code_runs(browser: QTextBrowser) -> list[list[QTextBlock]]:
    """Runs of consecutive code lines in the document (back-to-back fenced blocks make one run)."""
    runs, block = [], browser.document().begin()
    while block.isValid():
        if is_code(block):
            runs.append([])
            while block.isValid() and is_code(block):
                runs[-1].append(block)
                block = block.next()
            continue
        block = block.next()
    return runs


def code_blocks(browser: QTextBrowser, line_counts: list[int]) -> list[CodeBlock]:
    """The document's fenced code blocks: its runs of code lines, split by the Markdown's line
    counts where they add up (else a run stays one block, and the counts are no longer used)."""
    found, counts = [], list(line_counts)
    for run in code_runs(browser):
        pieces, taken = [], 0
        while counts and counts[0] > 0 and taken + counts[0] <= len(run):
            pieces.append(run[taken:taken + counts[0]])
            taken += counts.pop(0)
        if taken != len(run):
            pieces, counts = [run], []
        for piece in pieces:
            found.append(CodeBlock(piece[0].blockNumber(), piece[-1].blockNumber(),
                                   "\n".join(block.text() for block in piece)))
    return found


def shade_code_blocks(browser: QTextBrowser) -> None:
    block = browser.document().begin()
    shaded = QTextBlockFormat()
    shaded.setBackground(CODE_BACKGROUND)
    shaded.setLeftMargin(6)
    while block.isValid():
        if is_code(block):
            QTextCursor(block).mergeBlockFormat(shaded)
        block = block.next()


def is_code_block(browser: QTextBrowser, text: str) -> bool:
    """Whether the block holding `text` is a monospaced code block (for tests)."""
    block = browser.document().begin()
    while block.isValid():
        if text in block.text():
            return is_code(block)
        block = block.next()
    return False
