"""The chat's answers, offscreen: Markdown rendered (headings, lists, tables, code), a Copy button
per code block that really fills the clipboard, and each answer's speed and machines, stored
with it (older databases migrated, nothing lost)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication, QToolButton

from meshdesk.node.chat_service import ChatService, serving_machines
from meshdesk.node.chat_store import ChatStore, Message
from meshdesk.ui.chat_text import answer_facts, fenced_line_counts
from meshdesk.ui.chat_view import ChatView
from meshdesk.ui.machine_strip import machine_line
from meshdesk.ui.transcript import is_code_block
from tests.test_ui_chat import Heard, TalkingNode
from tests.test_ui_snapshots import QWEN, solo, split

ANSWER = """## Two ways

1. a loop
2. a comprehension

| way | lines |
|-----|-------|
| loop | 3 |

```python
squares = [n * n for n in range(4)]
```
```
print(squares)
```"""


def answer(content=ANSWER, **facts) -> list[Message]:
    return [Message(1, 1, "user", "Squares?", None, None, 0),
            Message(2, 1, "assistant", content, QWEN, "stop", 0, **facts)]


@pytest.fixture
def view(qtbot):
    shown = ChatView()
    qtbot.addWidget(shown)
    shown.resize(700, 600)
    shown.show()
    return shown


def blocks(view):
    block = view.transcript.document().begin()
    while block.isValid():
        yield block
        block = block.next()


def test_headings_lists_and_tables_are_rendered(view):
    view.show_messages(answer())
    by_text = {block.text(): block for block in blocks(view)}
    assert by_text["Two ways"].blockFormat().headingLevel() == 2
    assert by_text["a loop"].textList() is not None and by_text["a comprehension"].textList() is not None
    cursor = QTextCursor(by_text["loop"])
    assert cursor.currentTable() is not None and cursor.currentTable().columns() == 2
    assert "##" not in view.transcript.toPlainText() and "|" not in view.transcript.toPlainText()


@pytest.mark.parametrize("hostile", ["It returns Vec<String> or Option<Box<T>>.",
                                     'hi <img src="file:///etc/hostname"> there', "the <title> tag",
                                     '<div style="font-size:300pt">big</div>'])
def test_html_in_an_answer_is_text_and_hides_nothing_after_it(view, hostile):
    """A model (or the user) writing a tag outside backticks: Qt's Markdown would parse it as
    HTML and drop everything after it, later messages too."""
    view.show_messages(answer(hostile) + [Message(3, 1, "user", "next message", None, None, 0)])
    shown = view.transcript.toPlainText()
    assert "next message" in shown
    visible = hostile.replace('<div style="font-size:300pt">', "").replace("</div>", "")
    assert visible in shown or hostile in shown
    assert not view.transcript.document().toHtml().count("<img")


def test_each_code_block_has_a_copy_button_that_fills_the_clipboard(view, qtbot):
    view.show_messages(answer())
    transcript = view.transcript
    assert is_code_block(transcript, "squares = [n * n") and is_code_block(transcript, "print(squares)")
    buttons = [b for b in transcript.viewport().findChildren(QToolButton) if b.isVisible()]
    assert [b.text() for b in buttons] == ["Copy", "Copy"]  # back-to-back blocks, one button each
    for button, code in zip(buttons, ["squares = [n * n for n in range(4)]", "print(squares)"]):
        area = transcript.code_block_area(transcript.code_blocks[buttons.index(button)])
        assert area.contains(button.geometry().center().toPointF()) or \
            area.top() <= button.geometry().top() <= area.bottom()
        QApplication.clipboard().clear()
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        assert QApplication.clipboard().text() == code
        assert button.text() == "Copied"
    view.show_messages(answer("No code here."))
    assert not any(b.isVisible() for b in transcript.viewport().findChildren(QToolButton))


def test_a_streamed_code_block_gets_its_button_as_it_arrives(view, qtbot):
    view.show_models([QWEN])
    view.begin_reply(QWEN)
    view.append_delta("```sh\nls -l\n")  # the fence is still open: closed for showing only
    qtbot.waitUntil(lambda: len(view.transcript.code_blocks) == 1, timeout=2000)
    assert view.transcript.code_blocks[0].code == "ls -l"


@pytest.mark.parametrize("markdown, counts", [
    ("text", []),
    ("```\na\nb\n```", [2]),
    ("```py\na\n```\n```\nb\nc\n```", [1, 2]),
    ("~~~\n```\nstill code\n~~~", [2]),      # another fence character does not close it
    ("````\n```\n````", [1]),
    ("```\nopen to the end", [1]),
    ("``` not`a fence\ntext", []),          # an info string with a backtick is inline code
])
def test_fenced_blocks_are_counted_as_commonmark_does(markdown, counts):
    assert fenced_line_counts(markdown) == counts


def test_an_answer_shows_its_speed_and_the_machines_that_served_it(view):
    view.show_messages(answer(tokens_per_second=23.456, served_by=("alice", "bob-desktop")))
    text = view.transcript.toPlainText()
    assert "23.5 tok/s · served by alice, bob-desktop" in text
    assert answer_facts(None, ()) == "" and answer_facts(None, ("*x*",)) == r"served by \*x\*"


class SplitNode(TalkingNode):
    """Answers as the split snapshot's mesh would: alice hosts, bob and carol hold layers."""

    def __init__(self, usage):
        super().__init__(words=["one", " two", " three", " four"])
        self.usage = usage

    async def generate(self, request):
        async for event in super().generate(request):
            yield event | ({"usage": self.usage} if event["type"] == "finish" else {})

    def status(self):
        return split()


def ticking_clock(step=0.25):
    """A clock that moves `step` seconds each time it is read: one read per piece, one at the end."""
    now = [100.0]

    def read() -> float:
        now[0] += step
        return now[0]
    return read


@pytest.mark.parametrize("usage, speed", [({"completion_tokens": 7}, 6 / 1.0), ({}, 3 / 1.0)])
def test_the_service_stores_the_speed_and_machines(tmp_path, usage, speed):
    store = ChatStore.in_home(tmp_path)
    service = ChatService(SplitNode(usage), store, clock=ticking_clock())
    conversation = store.create_conversation(QWEN)
    heard = Heard()

    async def chat():
        await service.send(conversation.id, "Count", QWEN, heard.listener())

    asyncio.run(chat())
    [reply] = heard.done
    # Pieces at 100.25 … 101.0, the end read at 101.25: 1.0 s from the first piece to the end.
    assert reply.tokens_per_second == pytest.approx(speed)
    assert reply.served_by == ("alice", "bob-desktop", "carol-laptop")
    store.close()
    [_, kept] = ChatStore.in_home(tmp_path).messages(conversation.id)
    assert (kept.tokens_per_second, kept.served_by) == (reply.tokens_per_second, reply.served_by)


def test_machines_are_read_from_the_plan_of_the_model():
    assert serving_machines(split(), QWEN) == ("alice", "bob-desktop", "carol-laptop")
    assert serving_machines(split(), "another-model") == ()
    assert serving_machines(solo(), solo().plans[0].model) == ("alice",)


OLD_SCHEMA = """
CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL, model TEXT NOT NULL,
                            created_at REAL NOT NULL);
CREATE TABLE messages (id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')), content TEXT NOT NULL,
    model TEXT, finish_reason TEXT, created_at REAL NOT NULL);
INSERT INTO conversations VALUES (1, 'Old chat', 'gemma', 1.0);
INSERT INTO messages VALUES (1, 1, 'user', 'Hello from before', NULL, NULL, 1.0);
INSERT INTO messages VALUES (2, 1, 'assistant', 'An old answer', 'gemma', 'stop', 2.0);
"""


def test_a_database_from_an_older_version_is_migrated_and_loses_nothing(tmp_path):
    old = sqlite3.connect(tmp_path / "chat.sqlite3")
    old.executescript(OLD_SCHEMA)
    old.commit()
    old.close()
    store = ChatStore.in_home(tmp_path)
    [conversation] = store.conversations()
    assert conversation.title == "Old chat"
    assert [(m.content, m.tokens_per_second, m.served_by) for m in store.messages(1)] == [
        ("Hello from before", None, ()), ("An old answer", None, ())]
    store.add_message(1, "assistant", "A new answer", "gemma", "stop", 12.5, ("alice",))
    store.close()
    again = ChatStore.in_home(tmp_path)  # opening a migrated database again changes nothing
    assert [(m.content, m.served_by) for m in again.messages(1)][-1] == ("A new answer", ("alice",))
    again.connection.execute("UPDATE messages SET served_by = 'not json' WHERE id = 3")
    assert again.messages(1)[-1].served_by == ()  # a damaged cell reads as no names
    again.close()


def test_the_strip_shows_this_machines_part(view):
    assert machine_line(split()) == (f"This machine (alice): hosts {QWEN} · layers 32–63 of 64 · "
                                     "50% share · ready · mesh of 4 machines")
    view.show_status(split())
    assert view.strip.line.toolTip() == machine_line(split())
    view.resize(1400, 600)  # wide enough for all of it, else it is elided to fit
    QApplication.processEvents()
    assert view.strip.line.text() == machine_line(split())


def test_the_strips_button_opens_the_mesh_view(qtbot):
    from meshdesk.ui.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    assert window.tabs.currentWidget() is window.chat
    window.chat.strip.details.click()
    assert window.tabs.currentWidget() is window.mesh
