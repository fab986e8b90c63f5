"""The controller between views and node: intents reach the node, changes reach the views."""

from __future__ import annotations

import asyncio

import pytest
from PySide6.QtGui import QGuiApplication

from meshdesk.app.assembly import build_runtime
from meshdesk.app.cli import build_parser
from meshdesk.app.home import Home
from meshdesk.core.invite import decode_token
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.controller import DesktopController, DesktopServices
from meshdesk.ui.main_window import MainWindow
from meshdesk.ui.qr_images import qr_image
from meshdesk.ui.tray import TrayMenu
from tests.test_ui_snapshots import GB, solo

LINK = ("meshdesk://join/AUsY_T-TLf_1QCqfoppvVrlYe96oyePNBHIRjLvlvZYnNO_dMIiDPjVEwgXHWKHvTTxZcHLbZe1Fawt"
        "ougEEfwAAAZZZopxe4cMzNONbLB7PULBNhUS-LIBVQkUXcJgptJRj9MNiv5UTrgRvBzr9vhxXawQO4pw76LaFyfSmZO68zT8ZAg")


class Services(DesktopServices):
    def __init__(self):
        from meshdesk.app.desktop import decode_image

        self.quits = 0
        self.autostart = False
        self.choices: list[str] = []  # what the first run asked the app to remember
        super().__init__(decode_image=decode_image, decode_file=lambda path: [],
                         autostart_enabled=lambda: self.autostart, set_autostart=self._set, quit=self._quit,
                         remember_choice=self.choices.append)

    def _set(self, enabled: bool) -> str:
        self.autostart = enabled
        return "wrote it" if enabled else ""

    def _quit(self) -> None:
        self.quits += 1


class FakeMeshNode:
    """A node in a mesh, with the intents the desktop uses and a record of what it was told."""

    def __init__(self):
        self.snapshot = solo()
        self.listeners, self.minted, self.revoked, self.join_error = [], [], [], None

    def status(self) -> StatusSnapshot:
        return self.snapshot

    def subscribe(self, listener) -> None:
        self.listeners.append(listener)

    def mint_invite(self, expires_in: int) -> dict:
        self.minted.append(expires_in)
        return {"token": LINK.removeprefix("meshdesk://join/"), "link": LINK,
                "expires_at": 0, "token_id": f"t{len(self.minted)}"}

    def revoke(self, token: str) -> None:
        self.revoked.append(token)

    async def join(self, text: str, leave_current: bool = False) -> None:
        if self.join_error:
            raise ValueError(self.join_error)

    def mesh_left_by(self, token) -> tuple[str, int] | None:
        return None

    def invite_problem(self, token) -> str | None:
        return None

    def set_capacity_cap(self, gigabytes) -> None: ...

    def set_donating(self, donating: bool) -> None: ...


class QuietTray:
    """Stands in for the tray icon, which offscreen Qt cannot show."""

    def __init__(self):
        self.told = 0

    def show_status(self, snapshot: StatusSnapshot) -> None: ...

    def say_still_running(self) -> None:
        self.told += 1


def desktop(qtbot, node, tray=None):
    window, menu, services = MainWindow(), TrayMenu(), Services()
    qtbot.addWidget(window)
    controller = DesktopController(node, window, menu, services, tray=tray)
    controller.redraw()
    return controller, window, menu, services


@pytest.fixture
def real_node(tmp_path):
    """A real node as the app assembles it (no model), in a mesh of its own, with its
    measured memory pinned to 16 GB so the numbers are the same on every machine."""
    loop = asyncio.new_event_loop()
    arguments = build_parser().parse_args(["--home", str(tmp_path), "--port", "0",
                                           "--bind-host", "127.0.0.1", "--name", "alice"])
    home = Home(tmp_path)
    home.prepare()
    runtime = build_runtime(arguments, home, [], [])
    runtime.node.offer.measured_bytes = 16 * GB
    loop.run_until_complete(runtime.mesh.bind())
    runtime.mesh.load_or_create_mesh()
    yield runtime.node
    loop.run_until_complete(runtime.mesh.leave())
    loop.close()


@pytest.fixture
def node_outside_a_mesh(tmp_path):
    arguments = build_parser().parse_args(["--home", str(tmp_path), "--port", "0", "--client"])
    home = Home(tmp_path)
    home.prepare()
    return build_runtime(arguments, home, [], []).node


def test_the_slider_changes_what_the_node_advertises(qtbot, real_node):
    controller, window, _, _ = desktop(qtbot, real_node)
    settings = window.settings
    assert settings.slider.maximum() == 160 and settings.advertised.text() == "16 GB of 16 GB measured"
    for position in (150, 120, 80):  # a drag: only where it rests is sent
        settings.slider.setValue(position)
    assert real_node.offer.capacity_bytes == 16 * GB
    qtbot.waitUntil(lambda: real_node.offer.capacity_bytes == 8 * GB, timeout=2000)
    assert real_node.status().offer.capacity_bytes == 8 * GB
    [own_record] = real_node.mesh.alive_records()  # what gossip tells the other nodes
    assert own_record.capacity_bytes == 8 * GB
    qtbot.waitUntil(lambda: settings.advertised.text() == "8.0 GB of 16 GB measured", timeout=2000)
    settings.slider.setValue(160)
    qtbot.waitUntil(lambda: real_node.offer.cap_bytes is None, timeout=2000)


def test_the_tray_toggle_stops_and_resumes_donating(qtbot, real_node):
    _, window, menu, _ = desktop(qtbot, real_node)
    menu.donate.trigger()
    assert real_node.offer.capacity_bytes == 0 and not real_node.offer.donating
    qtbot.waitUntil(lambda: "donating is off" in window.settings.advertised.text(), timeout=2000)
    menu.donate.trigger()
    assert real_node.offer.capacity_bytes == 16 * GB


def test_an_invite_is_ready_once_in_a_mesh_and_can_be_revoked_and_copied(qtbot):
    node = FakeMeshNode()
    controller, window, menu, _ = desktop(qtbot, node)
    assert node.minted == [7 * 24 * 3600]
    assert window.invite.link.text() == LINK and window.invite.expires.text() == "never expires"
    controller.redraw()
    assert len(node.minted) == 1  # not a new invite on every redraw
    window.invite.revoke_button.click()
    assert node.revoked == [LINK.removeprefix("meshdesk://join/")]
    assert "revoked" in window.invite.message.text() and window.invite.link.text() == ""
    menu.copy_invite_requested.emit()
    assert QGuiApplication.clipboard().text() == LINK and len(node.minted) == 2


def test_a_real_node_in_a_mesh_gets_a_real_invite(qtbot, real_node):
    _, window, _, _ = desktop(qtbot, real_node)
    token = decode_token(window.invite.link.text())
    assert token.mesh_id == real_node.status().mesh.id
    window.invite.revoke_button.click()
    assert "revoked" in window.invite.message.text()


def test_a_node_outside_a_mesh_mints_nothing_and_says_why(qtbot, node_outside_a_mesh):
    _, window, _, _ = desktop(qtbot, node_outside_a_mesh)
    assert window.invite.invite is None and not window.invite.mint_button.isEnabled()
    assert "Not in a mesh" in window.invite.message.text()


def test_join_shows_the_nodes_reason_or_success(qtbot):
    node = FakeMeshNode()
    controller, window, _, _ = desktop(qtbot, node)
    node.join_error = "cannot join: invite token expired 2 h ago"
    asyncio.run(controller.join(LINK))
    assert window.join.result.text() == "cannot join: invite token expired 2 h ago"
    assert window.join.join_button.isEnabled()
    node.join_error = None
    asyncio.run(controller.join(LINK))
    assert window.join.result.text() == "Joined the mesh."


def test_scanning_finds_an_invite_off_the_gui_thread_and_ignores_other_codes(qtbot):
    node = FakeMeshNode()
    controller, window, _, services = desktop(qtbot, node)
    asyncio.run(controller.scan(services.decode_image, qr_image(LINK), "the clipboard"))
    assert window.join.token.text() == LINK and "Found an invite" in window.join.result.text()
    window.join.token.clear()
    asyncio.run(controller.scan(services.decode_image, qr_image("https://example.org"), "the screen"))
    assert window.join.token.text() == "" and "No MeshDesk invite" in window.join.result.text()


def test_start_at_login_goes_through_the_apps_function(qtbot):
    node = FakeMeshNode()
    _, window, _, services = desktop(qtbot, node)
    window.settings.start_at_login.click()
    assert services.autostart and window.settings.start_at_login.isChecked()
    assert window.settings.login_note.text() == "wrote it"


def test_without_a_tray_closing_the_window_ends_the_app(qtbot):
    _, window, _, services = desktop(qtbot, FakeMeshNode())
    window.show()
    assert window.close()
    assert services.quits == 1 and not window.isVisible()


def test_with_a_tray_closing_the_window_only_hides_it(qtbot):
    tray = QuietTray()
    _, window, menu, services = desktop(qtbot, FakeMeshNode(), tray=tray)
    window.show()
    window.close()
    assert services.quits == 0 and not window.isVisible() and tray.told == 1
    menu.open_requested.emit()
    assert window.isVisible()
    menu.quit_requested.emit()
    assert services.quits == 1


def test_the_fixture_link_is_a_real_token():
    assert decode_token(LINK).encode() == LINK.removeprefix("meshdesk://join/")
