"""The chat transcript widget: Markdown (from `chat_text`) with fenced code in shaded, monospaced
blocks."""

from __future__ import annotations

from PySide6.QtGui import QColor, QTextBlockFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import QTextBrowser

CODE_BACKGROUND = QColor("#f1f3f6")


class Transcript(QTextBrowser):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.shown = ""

    def show_markdown(self, markdown: str) -> None:
        if markdown == self.shown:
            return
        self.shown = markdown
        scroll = self.verticalScrollBar()
        following = scroll.value() >= scroll.maximum() - 4
        self.setMarkdown(markdown)
        shade_code_blocks(self)
        if following:
            scroll.setValue(scroll.maximum())


def shade_code_blocks(browser: QTextBrowser) -> None:
    block = browser.document().begin()
    shaded = QTextBlockFormat()
    shaded.setBackground(CODE_BACKGROUND)
    shaded.setLeftMargin(6)
    while block.isValid():
        if block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence):
            QTextCursor(block).mergeBlockFormat(shaded)
        block = block.next()


def is_code_block(browser: QTextBrowser, text: str) -> bool:
    """Whether the block holding `text` is a monospaced code block (for tests)."""
    block = browser.document().begin()
    while block.isValid():
        if text in block.text():
            return block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence)
        block = block.next()
    return False
