"""Screenshots of every view, taken from the real widgets, for docs/screenshots/ and the README.

Running this test refreshes the committed PNGs; a PNG changes only when a view's look does.
Beyond "an image exists", each checks what a person would look for in it (the chat's code is
rendered in a shaded block with a Copy button; the first run asks its one question).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QRect
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication, QToolButton

from meshdesk.node.chat_store import Message
from meshdesk.ui.main_window import MainWindow
from meshdesk.ui.transcript import CODE_BACKGROUND
from meshdesk.ui.tray import TrayMenu
from meshdesk.ui.model_table import DownloadProgress
from tests.test_ui_controller import LINK
from tests.test_ui_models import listing
from tests.test_ui_snapshots import QWEN, split, waiting

FOLDER = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
SIZE = (900, 620)
NOW = 1_750_000_000
ANSWER = """Here is one way:

```python
def double(number: float) -> float:
    return 2 * number

print(double(21))  # 42
```

It multiplies its argument by two:

- `double(21)` gives **42**
- `double(0.5)` gives **1.0**"""


def conversation() -> list[Message]:
    return [Message(1, 1, "user", "Write a Python function that doubles a number", None, None, NOW),
            Message(2, 1, "assistant", ANSWER, QWEN, "stop", NOW, 18.4,
                    ("alice", "bob-desktop", "carol-laptop"))]


@pytest.fixture
def window(qtbot):
    shown = MainWindow()
    qtbot.addWidget(shown)
    shown.invite.clock = lambda: NOW
    shown.resize(*SIZE)
    shown.show_status(split())
    shown.invite.show_invite({"token": LINK.removeprefix("meshdesk://join/"), "link": LINK,
                              "expires_at": NOW + 7 * 86400, "token_id": "x"})
    shown.chat.show_conversations([(1, "Write a Python function that doubles a number"),
                                   (2, "What is a tensor split?")], 1)
    shown.chat.show_messages(conversation())
    shown.join.show_scan_result([LINK], "the clipboard")
    show_models(shown.models)
    shown.show()
    return shown


def show_models(view) -> None:
    """The catalog with a download running and the served model selected."""
    view.show_catalog(listing())
    view.show_downloads({"Llama-3.3-70B-Instruct": DownloadProgress("Llama-3.3-70B-Instruct",
                                                                   17_008_159_053, 42_520_397_632)})
    view.table.selectRow(3)
    view.show_message("Downloaded Qwen2.5-0.5B-Instruct to /home/alice/.local/share/MeshDesk/models/"
                      "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf.")


def save(widget, name: str, qtbot) -> Path:
    QApplication.sendPostedEvents()  # the pending layout requests, so the grab shows the settled layout
    QApplication.processEvents()
    path = FOLDER / f"{name}.png"
    FOLDER.mkdir(parents=True, exist_ok=True)
    assert widget.grab().save(str(path))
    return path


def check(path: Path) -> None:
    image = QImage(str(path))
    assert not image.isNull() and image.width() >= 200 and image.height() >= 100
    assert path.stat().st_size < 250_000  # modest enough to commit


TABS = ["mesh", "chat", "models", "invite", "join", "settings"]


@pytest.mark.parametrize("index, name", [(index, name) for index, name in enumerate(TABS)
                                         if name != "mesh"])  # mesh.png: tests/test_ui_mesh_screenshot.py
def test_screenshot_of_each_tab(window, qtbot, index, name):
    window.tabs.setCurrentIndex(index)
    check(save(window, name, qtbot))


def test_the_chat_screenshot_shows_rendered_code_with_a_copy_button(window, qtbot):
    window.tabs.setCurrentWidget(window.chat)
    path = save(window, "chat", qtbot)
    transcript = window.chat.transcript
    [code] = transcript.code_blocks
    assert code.code.startswith("def double(number: float)") and "```" not in transcript.toPlainText()
    code_format = transcript.document().findBlockByNumber(code.first).charFormat()
    assert "monospace" in (code_format.fontFamilies() or []) or code_format.fontFixedPitch()
    [button] = [b for b in transcript.viewport().findChildren(QToolButton) if b.isVisible()]
    area = transcript.code_block_area(code).toRect()
    assert button.text() == "Copy" and area.contains(button.geometry())
    # In the saved pixels: the block's shade right of the code, below the button.
    image = QImage(str(path))
    inside = transcript.viewport().mapTo(window, QPoint(area.right() - 10, area.bottom() - 4))
    assert QColor(image.pixel(inside)) == CODE_BACKGROUND
    # And the button drawn there: its pixels differ from the shade around it.
    corner = transcript.viewport().mapTo(window, button.geometry().topLeft())
    shades = {image.pixel(corner.x() + dx, corner.y() + dy) for dx in range(button.width())
              for dy in range(button.height())}
    assert len(shades) > 3
    assert "18.4 tok/s · served by alice, bob-desktop, carol-laptop" in transcript.toPlainText()
    assert window.chat.strip.isVisible() and window.chat.strip.line.text().startswith("This machine (alice)")


def test_screenshot_of_the_first_run(window, qtbot):
    window.show_first_run()
    path = save(window, "first-run", qtbot)
    check(path)
    first_run = window.first_run
    assert first_run.welcome.text() == "Welcome to MeshDesk" and not window.tabs.isVisible()
    for button, title in ((first_run.start_button, "Start a mesh"),
                          (first_run.join_button, "Join a friend's mesh")):
        assert button.isVisible() and button.title.text() == title and button.caption.isVisible()
        assert window.rect().contains(QRect(button.mapTo(window, QPoint()), button.size()))


def test_screenshot_of_the_first_run_joining(window, qtbot):
    window.show_first_run()
    window.first_run.join_button.click()
    join = window.first_run.join
    join.show_scan_result([LINK], "the camera")
    check(save(window, "first-run-join", qtbot))
    assert join.isVisible() and join is not window.join and join.token.text() == LINK
    assert join.file_button.isVisible() and join.clipboard_button.isVisible()
    assert window.first_run.back_button.isVisible()


def test_screenshot_of_a_mesh_waiting_for_peers(window, qtbot):
    window.show_status(waiting())
    window.tabs.setCurrentIndex(0)
    check(save(window, "mesh-waiting", qtbot))


def test_screenshot_of_the_tray_menu(qtbot):
    menu = TrayMenu()
    qtbot.addWidget(menu)
    menu.show_status(split())
    menu.adjustSize()
    check(save(menu, "tray-menu", qtbot))


def test_the_app_icon_for_installers_is_drawn_by_the_same_code(qapp):
    """resources/meshdesk.png (256 px), for .desktop files and installers, from `ui.icons`."""
    from meshdesk.ui.icons import state_pixmap

    path = FOLDER.parent.parent / "resources" / "meshdesk.png"
    drawn = state_pixmap("ready", 256)
    if not path.exists() or os.environ.get("MESHDESK_WRITE_ICON"):  # set it to redraw the file
        path.parent.mkdir(exist_ok=True)
        assert drawn.save(str(path))
    check(path)
    # Compared, not rewritten: the checkout stays clean, and anti-aliasing may differ by a pixel.
    committed = QImage(str(path)).convertToFormat(QImage.Format.Format_ARGB32)
    image = drawn.toImage().convertToFormat(QImage.Format.Format_ARGB32)
    assert committed.size() == image.size()
    differing = sum(committed.pixel(x, y) != image.pixel(x, y)
                    for x in range(image.width()) for y in range(image.height()))
    assert differing <= image.width() * image.height() // 100, \
        f"{differing} pixels differ: redraw it with MESHDESK_WRITE_ICON=1"
