"""How macOS and Windows hand meshdesk:// links to MeshDesk.

- macOS: a real QFileOpenEvent sent to the real (offscreen) QApplication reaches the filter,
  which keeps links until the window can show them, then hands each on as text; other files
  and URLs stay Qt's.
- Windows: the handler's keys and values under HKCU\\Software\\Classes\\meshdesk, written into
  an in-memory registry (winreg exists only on Windows), exactly; removal takes them all, and
  leaves another install's handler alone. `meshdesk --unregister-links` works off Windows too.
"""

from __future__ import annotations

import pytest

from meshdesk.adapters.windows_links import (COMMAND_KEY, SCHEME_KEY, register_links, scheme_entries,
                                             unregister_links)
from meshdesk.app import link_handlers
from meshdesk.core.invite import decode_token
from tests.nodes import run_meshdesk
from tests.test_core_identity_invite import make_token

LAUNCHER = ["C:\\Users\\Ada Lovelace\\AppData\\Local\\Programs\\MeshDesk\\MeshDesk.exe"]


# --- macOS: QFileOpenEvent --------------------------------------------------------------------

def send_file_open(application, url: str) -> bool:
    from PySide6.QtCore import QUrl
    from PySide6.QtGui import QFileOpenEvent

    return application.sendEvent(application, QFileOpenEvent(QUrl(url)))


@pytest.fixture
def file_open(qapp):
    from meshdesk.adapters.file_open_links import FileOpenLinks

    links = FileOpenLinks(qapp)
    yield links
    qapp.removeEventFilter(links)
    links.deleteLater()


def test_a_link_opened_before_the_window_waits_then_arrives_whole(qapp, file_open):
    link = make_token().link()
    assert send_file_open(qapp, link)  # taken: Qt does not treat it as a file
    assert file_open.pending == [link]
    shown = []
    file_open.deliver_to(shown.append)
    assert shown == [link] and file_open.pending == []
    assert decode_token(shown[0]) == make_token()


def test_later_links_go_straight_to_the_join_view(qapp, file_open):
    shown = []
    file_open.deliver_to(shown.append)
    first, second = make_token().link(), make_token(expires_at=make_token().expires_at + 60).link()
    send_file_open(qapp, first)
    send_file_open(qapp, second)
    assert shown == [first, second]


def test_other_files_and_schemes_are_left_to_qt(qapp, file_open):
    shown = []
    file_open.deliver_to(shown.append)
    send_file_open(qapp, "file:///Users/ada/Downloads/notes.txt")
    send_file_open(qapp, "https://meshdesk.org/join/abc")
    assert shown == [] and file_open.pending == []


def test_a_huge_link_is_cut_to_the_inbox_limit(qapp, file_open):
    shown = []
    file_open.deliver_to(shown.append)
    send_file_open(qapp, "meshdesk://join/" + "A" * 100_000)
    assert len(shown) == 1 and len(shown[0]) == 4096


def test_the_desktop_installs_the_filter_on_macos_only(qapp, monkeypatch):
    import sys

    from meshdesk.app.desktop import file_open_links

    monkeypatch.setattr(sys, "platform", "linux")
    assert file_open_links(qapp) is None
    monkeypatch.setattr(sys, "platform", "darwin")
    links = file_open_links(qapp)
    monkeypatch.undo()
    try:
        shown = []
        links.deliver_to(shown.append)
        assert send_file_open(qapp, "meshdesk://join/abc") and shown == ["meshdesk://join/abc"]
    finally:
        qapp.removeEventFilter(links)
        links.deleteLater()


# --- Windows: the registry ---------------------------------------------------------------------

class MemoryRegistry:
    """HKEY_CURRENT_USER as a dict of key -> {name: value}; keys are case-insensitive there."""

    def __init__(self):
        self.keys: dict[str, dict[str, str]] = {}

    def value(self, key, name):
        return self.keys.get(key.lower(), {}).get(name)

    def set_value(self, key, name, value):
        parts = key.lower().split("\\")
        for depth in range(1, len(parts) + 1):  # parents too, as CreateKeyEx makes them
            self.keys.setdefault("\\".join(parts[:depth]), {})
        self.keys[key.lower()][name] = value

    def delete_tree(self, key):
        prefix = key.lower()
        self.keys = {k: v for k, v in self.keys.items() if k != prefix and not k.startswith(prefix + "\\")}


def test_registering_writes_exactly_the_url_protocol_keys():
    registry = MemoryRegistry()
    assert register_links(registry, LAUNCHER)
    exe = LAUNCHER[0]
    assert registry.keys == {
        "software": {}, "software\\classes": {},
        "software\\classes\\meshdesk": {"": "URL:MeshDesk invite link", "URL Protocol": ""},
        "software\\classes\\meshdesk\\defaulticon": {"": f'"{exe}",0'},
        "software\\classes\\meshdesk\\shell": {}, "software\\classes\\meshdesk\\shell\\open": {},
        "software\\classes\\meshdesk\\shell\\open\\command": {"": f'"{exe}" --opened-link "%1"'},
    }
    assert not register_links(registry, LAUNCHER)  # the next start finds it all in place


def test_a_moved_app_rewrites_only_what_changed():
    registry = MemoryRegistry()
    register_links(registry, LAUNCHER)
    moved = ["D:\\Apps\\MeshDesk\\MeshDesk.exe"]
    assert register_links(registry, moved)
    assert registry.value(COMMAND_KEY, "") == '"D:\\Apps\\MeshDesk\\MeshDesk.exe" --opened-link "%1"'
    assert registry.value(SCHEME_KEY, "URL Protocol") == ""


def test_a_launcher_with_arguments_is_quoted_for_the_command_line():
    command = scheme_entries(["C:\\Py thon\\python.exe", "-m", "meshdesk"])[COMMAND_KEY][""]
    assert command == '"C:\\Py thon\\python.exe" -m meshdesk --opened-link "%1"'


def test_unregistering_removes_every_key_of_the_handler_and_nothing_else():
    registry = MemoryRegistry()
    registry.set_value("Software\\Classes\\.txt", "", "txtfile")
    register_links(registry, LAUNCHER)
    assert unregister_links(registry, LAUNCHER)
    assert not any(key.startswith("software\\classes\\meshdesk") for key in registry.keys)
    assert registry.value("Software\\Classes\\.txt", "") == "txtfile"
    assert not unregister_links(registry, LAUNCHER)  # twice is fine


def test_another_installs_handler_is_left_alone():
    registry = MemoryRegistry()
    register_links(registry, ["D:\\Other\\MeshDesk.exe"])
    assert not unregister_links(registry, LAUNCHER)
    assert registry.value(COMMAND_KEY, "") == '"D:\\Other\\MeshDesk.exe" --opened-link "%1"'


def test_no_launcher_is_a_clear_error():
    with pytest.raises(ValueError, match="launcher"):
        register_links(MemoryRegistry(), [])


def test_the_app_registers_only_inside_a_bundle(monkeypatch):
    registry = MemoryRegistry()
    assert link_handlers.bundle_launcher() is None  # a checkout: python -m meshdesk
    assert not link_handlers.register_windows_links(registry) and registry.keys == {}
    monkeypatch.setattr(link_handlers, "bundle_launcher", lambda: LAUNCHER)
    assert link_handlers.register_windows_links(registry)
    assert link_handlers.unregister_windows_links(registry) == 0 and registry.keys == {"software": {}, "software\\classes": {}}


def test_a_refusing_registry_is_logged_not_fatal(monkeypatch):
    class Refusing(MemoryRegistry):
        def set_value(self, key, name, value):
            raise PermissionError("access denied")

    monkeypatch.setattr(link_handlers, "bundle_launcher", lambda: LAUNCHER)
    assert not link_handlers.register_windows_links(Refusing())


def test_unregister_links_off_windows_says_there_is_nothing_to_remove(tmp_path):
    done = run_meshdesk("--unregister-links", "--home", str(tmp_path / "home"))
    assert done.returncode == 0, done.stderr
    assert "only on Windows" in done.stdout


# --- what the bundles declare -----------------------------------------------------------------

def test_the_bundles_declare_the_scheme_and_the_uninstall_step():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    app = tomllib.loads((root / "briefcase.toml").read_text())["tool"]["briefcase"]["app"]["meshdesk"]
    url_types = app["macOS"]["info"]["CFBundleURLTypes"]
    assert any("meshdesk" in entry["CFBundleURLSchemes"] for entry in url_types)
    script = root / app["windows"]["pre_uninstall_script"]
    assert "MeshDesk.exe\" --unregister-links" in script.read_text()
    assert script.read_bytes().count(b"\r\n") == script.read_bytes().count(b"\n")  # a .bat keeps CRLF


def test_a_link_windows_pastes_in_raw_cannot_add_options():
    """Windows substitutes %1 unescaped: a caller that leaves a `"` in a link splits it into
    more arguments. Behind the handler's marker they are one link to show, never a join."""
    from meshdesk.app.cli import build_parser, links_opened, one_opened_link

    split_by_a_quote = ["--opened-link", "meshdesk://join/x", "--join", "meshdesk://join/EVIL",
                        "--leave-current-mesh", "--home", "/tmp/elsewhere"]
    arguments = build_parser().parse_args(links_opened(one_opened_link(split_by_a_quote)))
    assert not arguments.join and not arguments.leave_current_mesh and arguments.home is None
    assert arguments.open_link == ("meshdesk://join/x --join meshdesk://join/EVIL --leave-current-mesh "
                                   "--home /tmp/elsewhere")
    without_the_marker = build_parser().parse_args(links_opened(one_opened_link(split_by_a_quote[1:])))
    assert without_the_marker.join and without_the_marker.leave_current_mesh  # the attack, were "%1" alone
    honest = build_parser().parse_args(links_opened(one_opened_link(["--opened-link", "meshdesk://join/x"])))
    assert honest.open_link == "meshdesk://join/x" and not honest.join
