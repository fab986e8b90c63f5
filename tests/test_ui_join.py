"""The Join view, offscreen: an invite is shown first, the confirm button is what joins, cancel
joins nothing, and leaving a mesh with members needs its own tick; the node refuses the
switch by itself too."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.core.invite import InviteToken, decode_token
from meshdesk.node.node import MeshSwitchRefused
from tests.test_ui_controller import FakeMeshNode, desktop, real_node  # noqa: F401 (fixture)

# An invite to a mesh other than the fake node's own (4b18fd3f…), which never expires.
LINK = InviteToken(mesh_id="0123456789abcdef", join_secret=bytes(16), inviter_key=bytes(range(32)),
                   addresses=(("192.168.1.20", 38489),), expires_at=0).signed(lambda payload: bytes(64)).link()

OTHER_MESH_MEMBERS = ("4b18fd3f932dfff5", 3)


class JoiningNode(FakeMeshNode):
    """Records each join it is asked for, and says which mesh a join would leave."""

    def __init__(self, leaving=None):
        super().__init__()
        self.joins: list[tuple[str, bool]] = []
        self.leaving = leaving

    async def join(self, text: str, leave_current: bool = False) -> None:
        self.joins.append((text, leave_current))

    def mesh_left_by(self, token):
        return self.leaving


def drain(qtbot, controller) -> None:
    """Runs what the view's signals started (the join task) to its end."""
    loop = asyncio.get_event_loop()
    if controller.tasks:
        loop.run_until_complete(asyncio.gather(*controller.tasks))


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


def test_a_link_opened_shows_the_offer_and_joins_nothing(qtbot, loop):
    node = JoiningNode()
    controller, window, _, _ = desktop(qtbot, node)
    controller.open_link(LINK)
    join = window.join
    assert window.tabs.currentIndex() == 4 and join.token.text() == LINK
    assert not join.offer_box.isHidden() and join.offer_box.title().startswith("Join mesh ")
    assert "Invited by: node " in join.offer_details.text() and "Addresses: " in join.offer_details.text()
    assert join.leave_check.isHidden() and join.confirm_button.isEnabled()
    assert node.joins == [] and controller.tasks == set()


def test_the_confirm_button_is_what_joins(qtbot, loop):
    node = JoiningNode()
    controller, window, _, _ = desktop(qtbot, node)
    window.join.token.setText(LINK)
    window.join.join_button.click()  # "Join…": the offer, not the join
    assert node.joins == [] and window.join.offer is not None
    window.join.confirm_button.click()
    drain(qtbot, controller)
    assert node.joins == [(LINK, False)]
    assert window.join.result.text() == "Joined the mesh." and window.join.offer_box.isHidden()


def test_cancel_joins_nothing(qtbot, loop):
    node = JoiningNode()
    controller, window, _, _ = desktop(qtbot, node)
    controller.open_link(LINK)
    window.join.cancel_button.click()
    drain(qtbot, controller)
    assert node.joins == [] and window.join.offer is None and window.join.token.text() == ""
    window.join.confirm_button.click()  # hidden, and nothing left to confirm
    drain(qtbot, controller)
    assert node.joins == [] and window.join.result.text() == "Not joined."


def test_leaving_a_mesh_with_members_needs_the_tick_before_the_confirm(qtbot, loop):
    node = JoiningNode(leaving=OTHER_MESH_MEMBERS)
    controller, window, _, _ = desktop(qtbot, node)
    controller.open_link(LINK)
    join = window.join
    assert join.offer_leaving.text().startswith("You are in mesh 4b18fd3f with 3 members; joining ")
    assert not join.leave_check.isHidden() and not join.confirm_button.isEnabled()
    join.confirm_button.click()
    drain(qtbot, controller)
    assert node.joins == []
    join.leave_check.setChecked(True)
    assert join.confirm_button.text() == f"Leave mesh 4b18fd3f and join {decode_token(LINK).mesh_id[:8]}"
    join.confirm_button.click()
    drain(qtbot, controller)
    assert node.joins == [(LINK, True)]


def test_an_invite_the_node_finds_wrong_cannot_be_confirmed(qtbot, loop):
    node = JoiningNode()
    node.invite_problem = lambda token: "invite token signature does not match: it was altered or forged"
    controller, window, _, _ = desktop(qtbot, node)
    controller.open_link(LINK)
    assert not window.join.confirm_button.isEnabled() and "forged" in window.join.offer_note.text()
    window.join.confirm_button.click()
    drain(qtbot, controller)
    assert node.joins == []


def test_text_that_is_no_invite_is_refused_in_one_line(qtbot, loop):
    node = JoiningNode()
    controller, window, _, _ = desktop(qtbot, node)
    controller.open_link("meshdesk://join/not-a-token")
    assert window.join.offer is None and "invite token" in window.join.result.text()


def test_a_real_node_with_members_refuses_to_switch_meshes_unless_told_to_leave(real_node, loop):
    """The node's own check, whatever asks it (the view, an API, --join): nothing is dialled."""
    real_node.mesh.memory.members.append("b2" * 10)  # a member it has met
    current = real_node.status().mesh.id
    other = decode_token(LINK)
    assert real_node.mesh_left_by(other) == (current, 2)
    with pytest.raises(MeshSwitchRefused, match=f"^this node is in mesh {current} with 2 members; joining "
                       f"{other.mesh_id} leaves it"):
        loop.run_until_complete(real_node.join(LINK))
    assert real_node.status().mesh.id == current and real_node.mesh.mesh_secret is not None


def test_a_real_node_alone_in_its_mesh_loses_nothing_by_joining(real_node):
    assert real_node.mesh_left_by(decode_token(LINK)) is None
    same = decode_token(real_node.mint_invite(3600)["link"])
    assert real_node.mesh_left_by(same) is None
