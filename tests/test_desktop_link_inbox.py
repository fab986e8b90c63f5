"""The running desktop's link inbox over a real local socket: a link handed over arrives as
text, only this user can open the socket, what arrives is bounded, a second desktop never
takes over a live inbox, and a socket left by a crash is replaced."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from meshdesk.adapters.desktop_links import MAX_LINK_BYTES, LinkInbox, hand_over, inbox_address

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets in the home")


@pytest.fixture
def inbox(qtbot, tmp_path):
    received: list[str] = []
    inbox = LinkInbox(inbox_address(tmp_path), received.append)
    assert inbox.listen()
    yield inbox, received
    inbox.close()


def test_a_link_handed_over_arrives_as_text(qtbot, inbox, tmp_path):
    inbox, received = inbox
    assert hand_over(inbox_address(tmp_path), "meshdesk://join/ABC")
    qtbot.waitUntil(lambda: received == ["meshdesk://join/ABC"], timeout=3000)


def test_only_this_user_may_open_the_socket(inbox, tmp_path):
    mode = os.stat(tmp_path / "desktop.sock").st_mode
    assert stat.S_ISSOCK(mode) and mode & 0o077 == 0


def test_what_arrives_is_one_bounded_line(qtbot, inbox, tmp_path):
    inbox, received = inbox
    assert hand_over(inbox_address(tmp_path), "x" * (10 * MAX_LINK_BYTES))
    qtbot.waitUntil(lambda: len(received) == 1, timeout=3000)
    assert len(received[0]) < MAX_LINK_BYTES
    assert hand_over(inbox_address(tmp_path), "meshdesk://join/A\nmeshdesk://join/B")
    qtbot.waitUntil(lambda: len(received) == 2, timeout=3000)
    assert received[1] == "meshdesk://join/A"


def test_a_second_desktop_never_takes_a_live_inbox(qtbot, inbox, tmp_path):
    inbox, received = inbox
    second = LinkInbox(inbox_address(tmp_path), received.append)
    assert not second.listen()
    assert hand_over(inbox_address(tmp_path), "meshdesk://join/ABC")
    qtbot.waitUntil(lambda: received == ["meshdesk://join/ABC"], timeout=3000)


def test_a_socket_left_by_a_crash_is_replaced(qtbot, tmp_path):
    import socket

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "desktop.sock"))
    stale.close()  # the file stays, nobody listens: what a crashed desktop leaves
    assert not hand_over(inbox_address(tmp_path), "meshdesk://join/ABC")
    received: list[str] = []
    inbox = LinkInbox(inbox_address(tmp_path), received.append)
    try:
        assert inbox.listen()
        assert hand_over(inbox_address(tmp_path), "meshdesk://join/ABC")
        qtbot.waitUntil(lambda: received == ["meshdesk://join/ABC"], timeout=3000)
    finally:
        inbox.close()


def test_a_home_too_deep_for_a_socket_has_no_inbox(tmp_path):
    assert inbox_address(tmp_path / ("d" * 120)) is None
