"""The first run, offscreen: one question (start a mesh, or join a friend's), remembered in the
home; then the chat. Driven through the real widgets, around a fake node and a real one."""

from __future__ import annotations

import asyncio
import json

import pytest
from PySide6.QtWidgets import QApplication

from meshdesk.app.assembly import build_runtime
from meshdesk.app.cli import build_parser
from meshdesk.app.desktop import Desktop
from meshdesk.app.first_run_choice import FILE_NAME, choice_made, remember_choice
from meshdesk.app.home import Home
from meshdesk.core.invite import decode_token
from meshdesk.ui.join_view import JoinView
from tests.test_ui_controller import desktop
from tests.test_ui_join import LINK, JoiningNode, drain, loop  # noqa: F401 (fixture)


def test_a_fresh_home_has_not_chosen_and_a_choice_is_kept(tmp_path):
    assert not choice_made(tmp_path)
    remember_choice(tmp_path, "join")
    assert choice_made(tmp_path)
    assert json.loads((tmp_path / FILE_NAME).read_text())["choice"] == "join"
    assert [path.name for path in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"choice": "dance"}', "", "[" * 100_000 + "]" * 100_000])
def test_an_unreadable_choice_counts_as_chosen(tmp_path, content):
    (tmp_path / FILE_NAME).write_text(content)
    assert choice_made(tmp_path)


def test_an_unknown_choice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown first-run choice"):
        remember_choice(tmp_path, "maybe")
    assert not choice_made(tmp_path)


def test_start_remembers_the_choice_and_opens_the_chat(qtbot):
    _, window, _, services = desktop(qtbot, JoiningNode())
    window.show_first_run()
    assert window.showing_first_run() and window.first_run.start_button.isVisibleTo(window)
    window.first_run.start_button.click()
    assert services.choices == ["start"]
    assert not window.showing_first_run() and window.tabs.currentWidget() is window.chat


def test_join_shows_the_join_inputs_and_a_join_opens_the_chat(qtbot, loop):
    node = JoiningNode()
    controller, window, _, services = desktop(qtbot, node)
    window.show_first_run()
    first_run = window.first_run
    first_run.join_button.click()
    join = first_run.join
    assert isinstance(join, JoinView) and join is not window.join and first_run.joining()
    assert {button.text() for button in (join.file_button, join.clipboard_button)} == {
        "Scan image file…", "Scan clipboard"}
    join.token.setText(LINK)
    join.join_button.click()  # the offer first, in the first run's own Join view
    assert join.offer is not None and window.join.offer is None and node.joins == []
    join.confirm_button.click()
    drain(qtbot, controller)
    assert node.joins == [(LINK, False)] and services.choices == ["join"]
    assert not window.showing_first_run() and window.tabs.currentWidget() is window.chat


def test_going_back_and_a_failed_join_keep_the_question_open(qtbot, loop):
    node = JoiningNode()
    controller, window, _, services = desktop(qtbot, node)
    window.show_first_run()
    window.first_run.join_button.click()
    window.first_run.back_button.click()
    assert window.showing_first_run() and not window.first_run.joining()
    node.join_error = "the inviter's mesh refused: invite revoked"

    async def refuse(text, leave_current=False):
        raise ValueError(node.join_error)

    node.join = refuse
    window.first_run.join_button.click()
    controller.review(LINK, window.first_run.join)
    window.first_run.join.confirm_button.click()
    drain(qtbot, controller)
    assert window.first_run.join.result.text() == "the inviter's mesh refused: invite revoked"
    assert window.showing_first_run() and services.choices == []


def test_a_link_opened_during_the_first_run_is_its_answer(qtbot, loop):
    controller, window, _, _ = desktop(qtbot, JoiningNode())
    window.show_first_run()
    controller.open_link(LINK)
    join = window.first_run.join
    assert window.showing_first_run() and window.first_run.joining()
    assert join.token.text() == LINK and join.offer_box.title().startswith("Join mesh ")


# --- the real Desktop around a real runtime ----------------------------------------------------

def runtime_in(home_path, *options, join_tokens=()):
    arguments = build_parser().parse_args(["--home", str(home_path), "--port", "0",
                                           "--bind-host", "127.0.0.1", "--client", *options])
    home = Home(home_path)
    home.prepare()
    return build_runtime(arguments, home, [], list(join_tokens))


@pytest.fixture
def opened(qtbot, loop):
    """Desktops made by the test, closed (store, runtime) at its end."""
    made = []

    def open_desktop(runtime) -> Desktop:
        shown = Desktop(runtime, QApplication.instance())
        qtbot.addWidget(shown.window)
        made.append(shown)
        return shown

    yield open_desktop
    for shown in made:
        shown.store.close()
        if shown.runtime.node.api_port:
            loop.run_until_complete(shown.runtime.shutdown())


def test_a_fresh_home_opens_on_the_question_and_start_founds_a_mesh(tmp_path, opened, loop):
    shown = opened(runtime_in(tmp_path))
    window = shown.window
    assert window.showing_first_run()
    loop.run_until_complete(shown.runtime.start())  # as Desktop.serve does, with the window shown
    window.first_run.start_button.click()
    assert choice_made(tmp_path) and window.tabs.currentWidget() is window.chat
    assert shown.runtime.node.status().mesh is not None  # this machine's own mesh
    shown.controller.redraw()
    assert window.chat.strip.line.text().startswith("This machine (")


def test_after_the_first_run_the_window_opens_on_the_chat(tmp_path, opened):
    remember_choice(tmp_path, "start")
    window = opened(runtime_in(tmp_path)).window
    assert not window.showing_first_run() and window.tabs.currentWidget() is window.chat


def test_join_on_the_command_line_is_the_choice(tmp_path, opened):
    token = decode_token(LINK)
    window = opened(runtime_in(tmp_path, "--join", LINK, join_tokens=[token])).window
    assert not window.showing_first_run() and window.tabs.currentWidget() is window.chat
    assert json.loads((tmp_path / FILE_NAME).read_text())["choice"] == "join"


def test_a_home_that_cannot_be_written_asks_again_next_time(tmp_path, opened, qtbot):
    shown = opened(runtime_in(tmp_path))
    (tmp_path / (FILE_NAME + ".tmp")).mkdir()  # the temporary file cannot be created
    shown.window.first_run.start_button.click()
    assert shown.window.tabs.currentWidget() is shown.window.chat and not choice_made(tmp_path)


def test_a_home_in_a_mesh_with_others_from_before_has_chosen(tmp_path, opened):
    """E.g. a home that joined headless (`--headless --join`), opened in the window later."""
    runtime = runtime_in(tmp_path)
    runtime.mesh.memory.mesh_id = "4b18fd3f932dfff5"
    runtime.mesh.memory.members = [runtime.mesh.node_id, "b2" * 10]
    runtime.mesh.memory.authority = "00" * 32  # founded elsewhere
    window = opened(runtime).window
    assert not window.showing_first_run()
    assert json.loads((tmp_path / FILE_NAME).read_text())["choice"] == "join"
