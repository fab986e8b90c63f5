"""A chat transcript as Markdown, shown with fenced code in shaded, monospaced blocks."""

from __future__ import annotations

from PySide6.QtGui import QColor, QTextBlockFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import QTextBrowser

CODE_BACKGROUND = QColor("#f1f3f6")
FINISH_NOTES = {"stopped": "stopped", "length": "cut off at the length limit", "error": "failed"}


def message_markdown(role: str, content: str, model: str | None, finish_reason: str | None) -> str:
    speaker = "You" if role == "user" else (model or role)
    note = FINISH_NOTES.get(finish_reason or "")
    body = content if content.strip() else "…"
    if note:
        body += f"\n\n*({note})*"
    # A code fence left open by a cut-off reply must not swallow the next message.
    if body.count("```") % 2:
        body += "\n```"
    return f"**{speaker}**\n\n{body}"


def transcript_markdown(messages: list, streaming: str | None = None, streaming_model: str = "") -> str:
    parts = [message_markdown(m.role, m.content, m.model, m.finish_reason) for m in messages]
    if streaming is not None:
        parts.append(message_markdown("assistant", streaming, streaming_model, None))
    return "\n\n".join(parts)


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
