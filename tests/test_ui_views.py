"""Each view against status snapshots, synchronously (pytest-qt, offscreen)."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtWidgets import QSystemTrayIcon

from meshdesk.ui.chat_view import ChatView
from meshdesk.ui.main_window import MainWindow
from meshdesk.ui.mesh_view import MeshView
from meshdesk.ui.settings_view import SettingsView, cap_to_position, position_to_cap
from meshdesk.ui.throttle import Throttle
from meshdesk.ui.tray import TrayMenu, tray_available
from meshdesk.ui.transcript import is_code_block
from meshdesk.core.states import ModelState
from meshdesk.core.status import OfferStatus
from meshdesk.ui.mesh_model import TrayState
from tests.test_ui_snapshots import GB, QWEN, solo, split, starting, unplanned, waiting, with_model_state


def test_mesh_view_shows_the_split_and_the_host(qtbot):
    view = MeshView()
    qtbot.addWidget(view)
    view.resize(800, 400)
    view.show_status(split())
    bar = view.cluster_bar
    assert [s.name for s in bar.segments] == ["alice", "bob-desktop", "carol-laptop", "dave-phone"]
    widths = [rect.width() for rect in bar.segment_rects()]
    assert widths[0] > widths[1] > widths[2] > widths[3] > 0
    assert "alice" in bar.toolTip() and "host · layers 32–63 · 50%" in bar.toolTip()
    assert view.draft.text() == "Qwen2.5-0.5B-Instruct-Q4_K_M"
    assert view.api.text() == "http://127.0.0.1:9337/v1"
    assert view.plans.text() == f"{QWEN} on alice split over bob-desktop, carol-laptop, alice (split)"
    assert view.traffic.text().startswith("weights sent 0 B, by reference 9.9 GB")
    assert view.waiting.isHidden()


def test_mesh_view_explains_waiting_and_shows_a_node_before_any_plan(qtbot):
    view = MeshView()
    qtbot.addWidget(view)
    view.show_status(waiting())
    assert not view.waiting.isHidden()
    assert "need 52.0 GB, have 36.0 GB" in view.waiting.text()
    view.show_status(unplanned())
    assert view.waiting.isHidden() and view.draft.text() == "—" and view.plans.text() == "—"
    assert [s.role for s in view.cluster_bar.segments] == ["standby"]


def test_settings_view_shows_offer_node_ports_and_agent_commands(qtbot):
    view = SettingsView()
    qtbot.addWidget(view)
    view.show_status(split())
    assert view.slider.isEnabled() and view.slider.maximum() == 240 and view.slider.value() == 240
    assert view.cap_label.text() == "all of it"
    assert view.advertised.text() == "24 GB of 24 GB measured"
    assert (view.name.text(), view.api_port.text(), view.mesh_port.text()) == ("alice", "9337", "38489")
    assert view.secrets.text() == "keyring (SecretService)"
    assert set(view.agent_boxes) == {"goose", "pi", "opencode", "claude", "codex"}
    assert "OPENAI_HOST=http://127.0.0.1:9337" in view.agent_boxes["goose"].command.text()
    assert QWEN in view.agent_boxes["opencode"].command.text()
    view.show_status(waiting())
    assert view.slider.value() == 200 and view.cap_label.text() == "20.0 GB"


def test_settings_view_without_a_measurement_or_a_model(qtbot):
    view = SettingsView()
    qtbot.addWidget(view)
    view.show_status(replace(starting(), offer=OfferStatus(measured_bytes=0, cap_bytes=None, donating=True,
                                                           capacity_bytes=0)))
    assert not view.slider.isEnabled() and view.advertised.text() == "0.0 GB"
    assert view.agent_boxes == {} and not view.agents_note.isHidden()


def test_slider_positions_map_to_caps():
    assert cap_to_position(None, 24 * GB) == 240 and cap_to_position(8 * GB, 24 * GB) == 80
    assert cap_to_position(99 * GB, 24 * GB) == 240
    assert position_to_cap(240, 240) is None and position_to_cap(85, 240) == 8.5


def test_chat_view_renders_code_blocks_monospaced_and_streams(qtbot):
    from meshdesk.node.chat_store import Message

    view = ChatView()
    qtbot.addWidget(view)
    view.show_status(split())
    assert view.model() == QWEN and view.send_button.isEnabled() and not view.stop_button.isEnabled()
    asked = Message(1, 1, "user", "Double a number in Python", None, None, 0)
    view.show_messages([asked])
    view.begin_reply(QWEN)
    assert view.stop_button.isEnabled() and not view.send_button.isEnabled()
    view.append_delta("Here:\n\n```python\ndef double(x):\n")
    view.append_delta("    return 2 * x\n```\n")
    qtbot.waitUntil(lambda: "return 2 * x" in view.transcript.toPlainText())
    assert is_code_block(view.transcript, "return 2 * x")
    assert not is_code_block(view.transcript, "Double a number")
    answer = Message(2, 1, "assistant", "Here:\n\n```python\ndef double(x):\n    return 2 * x\n```",
                     QWEN, "stopped", 0)
    view.end_reply([asked, answer])
    assert "(stopped)" in view.transcript.toPlainText() and view.regenerate_button.isEnabled()


def test_chat_view_sends_what_was_typed_with_the_chosen_model(qtbot):
    view = ChatView()
    qtbot.addWidget(view)
    view.show_status(solo())
    sent = []
    view.send_requested.connect(lambda text, model: sent.append((text, model)))
    view.input.setPlainText("  hello  ")
    view.send_button.click()
    assert sent == [("hello", "gemma-3-270m-q4_k_m")] and view.input.toPlainText() == ""


def test_window_has_every_tab_and_shows_the_node_state(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    names = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert names == ["Mesh", "Chat", "Models", "Invite", "Join", "Settings"]
    window.show_status(replace(with_model_state(solo(), ModelState.LOADING), api_port=None))
    assert "alice" in window.title.text() and "Loading" in window.title.text()
    assert window.api_address.text() == "API: starting…"
    window.show_status(with_model_state(solo(), ModelState.FAILED, "bad file"))
    assert "Failed" in window.title.text()
    assert window.models.local.item(0, 4).text() == "bad file"


def test_tray_menu_reflects_donating_and_the_model(qtbot):
    menu = TrayMenu()
    qtbot.addWidget(menu)
    toggled = []
    menu.donate_toggled.connect(toggled.append)
    menu.show_status(replace(split(), offer=replace(split().offer, donating=False)))
    assert not menu.donate.isChecked() and toggled == []  # a redraw is not a user's intent
    assert menu.model.text() == f"Model: {QWEN}" and not menu.model.isEnabled()
    menu.donate.trigger()
    assert toggled == [True]
    texts = [action.text() for action in menu.actions() if action.text()]
    assert texts == ["Open MeshDesk", "Donate spare capacity", f"Model: {QWEN}", "Copy invite",
                     "Quit MeshDesk"]


def test_offscreen_has_no_tray():
    assert not tray_available() and not QSystemTrayIcon.isSystemTrayAvailable()


def test_throttle_coalesces_bursts_and_ends_on_the_latest(qtbot):
    calls = []
    throttle = Throttle(lambda: calls.append(len(calls)), interval_ms=50)
    for _ in range(100):
        throttle.poke()
    assert len(calls) == 1  # the first poke draws at once
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=1000)
    qtbot.waitUntil(lambda: not throttle.timer.isActive(), timeout=1000)  # the interval after it ended
    assert len(calls) == 2  # one trailing redraw for the whole burst, then quiet


def test_tray_icon_follows_the_node_state(qtbot):
    from meshdesk.ui.icons import STATE_COLOURS, state_pixmap
    from meshdesk.ui.tray import Tray

    tray = Tray(TrayMenu())  # constructible offscreen, though no tray will show it
    tray.show_status(with_model_state(solo(), ModelState.LOADING))
    assert tray.state == "loading" and "alice — loading" in tray.icon.toolTip()
    tray.show_status(solo())
    assert tray.state == "ready" and tray.menu.model.text() == "Model: gemma-3-270m-q4_k_m"
    corner_colours = {state: state_pixmap(state, 32).toImage().pixelColor(8, 4).name()
                      for state in STATE_COLOURS}
    assert corner_colours == STATE_COLOURS  # one colour a state, as the icon's background
    assert set(STATE_COLOURS) == set(TrayState)
    tray.hide()
