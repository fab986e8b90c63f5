"""The Join view's model: what an invite offer shows and which confirmations a join needs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from meshdesk.core.invite import InviteToken
from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.join_offer import expiry_line, join_offer
from tests.test_ui_snapshots import solo_wire

NOW = 1_800_000_000
INVITER_KEY = bytes(range(32))
MESH = "0123456789abcdef"


def token(mesh_id: str = MESH, expires_at: int = NOW + 7 * 86400,
          addresses=(("192.168.1.20", 38489), ("2001:db8::1", 38489))) -> InviteToken:
    return InviteToken(mesh_id=mesh_id, join_secret=bytes(16), inviter_key=INVITER_KEY,
                       addresses=addresses, expires_at=expires_at).signed(lambda payload: bytes(64))


def snapshot(mesh_id: str = "4b18fd3f932dfff5", members: int = 1, peers=()) -> StatusSnapshot:
    wire = solo_wire()
    wire["mesh"].update(id=mesh_id, members=members)
    wire["peers"] = list(peers)
    return StatusSnapshot.from_wire(wire)


def test_an_offer_names_the_mesh_the_inviter_the_addresses_and_the_expiry():
    offer = join_offer("LINK", token(), NOW, None, leaving=None)
    assert offer.title == "Join mesh 01234567?" and offer.confirm_label == "Join mesh 01234567"
    mesh, inviter, addresses, expiry = offer.details
    assert mesh == "Mesh: 01234567 (id 0123456789abcdef)"
    assert inviter == f"Invited by: node {token().inviter_id[:8]} (name not known yet)"
    assert addresses == "Addresses: 192.168.1.20:38489, [2001:db8::1]:38489"
    assert expiry == "Invite expires in 7 d (2027-01-22 08:00 UTC)"
    assert offer.can_join and not offer.needs_leave_confirmation and offer.text == "LINK"


def test_the_inviter_is_named_when_the_node_knows_it():
    peer = {"id": token().inviter_id, "name": "bob's laptop", "role": "host", "capacity_bytes": 0,
            "rtt_ms": None, "models": [], "state": "alive", "last_seen_s": 0.1, "linked": True,
            "addresses": [], "versions": {}}
    offer = join_offer("LINK", token(), NOW, snapshot(members=2, peers=[peer]), leaving=None)
    assert offer.details[1] == f"Invited by: bob's laptop ({token().inviter_id[:8]})"


def test_leaving_a_mesh_with_members_is_said_plainly_and_needs_its_own_tick():
    offer = join_offer("LINK", token(), NOW, snapshot(members=3), leaving=("4b18fd3f932dfff5", 3))
    assert offer.leaving == "You are in mesh 4b18fd3f with 3 members; joining 01234567 leaves it."
    assert offer.needs_leave_confirmation and offer.can_join
    assert offer.leave_label == "Yes, leave mesh 4b18fd3f and its 3 members"
    assert offer.confirm_label == "Leave mesh 4b18fd3f and join 01234567"
    assert offer.leaving in offer.lines()


def test_a_node_alone_in_its_own_mesh_is_told_it_is_replaced_without_a_second_tick():
    offer = join_offer("LINK", token(), NOW, snapshot(members=1), leaving=None)
    assert offer.note == "This node's own mesh 4b18fd3f has no other members; joining 01234567 replaces it."
    assert not offer.needs_leave_confirmation and offer.can_join


def test_what_cannot_be_joined_is_shown_but_not_joinable():
    expired = join_offer("LINK", token(expires_at=NOW - 7200), NOW, None, leaving=None,
                         problem="invite token expired 2 h ago")
    assert not expired.can_join and expired.problem == "invite token expired 2 h ago"
    assert expired.details[3] == "Invite expired 2 h ago (2027-01-15 06:00 UTC)"
    same = join_offer("LINK", token(mesh_id="4b18fd3f932dfff5"), NOW, snapshot(members=4), leaving=None)
    assert not same.can_join and same.problem == "This node is already in mesh 4b18fd3f."
    removed = replace(snapshot(), mesh=replace(snapshot().mesh, removed_from_mesh=True))
    assert join_offer("LINK", token(mesh_id="4b18fd3f932dfff5"), NOW, removed, leaving=None).can_join


def test_a_token_that_never_expires_says_so():
    assert expiry_line(0, NOW) == "never expires"


@given(st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFFFF_FFFF))
def test_every_expiry_reads_as_one_line(expires_at, now):
    line = expiry_line(expires_at, now)
    assert line and "\n" not in line
    assert line.startswith("never" if expires_at == 0 else "expired" if now >= expires_at else "expires in")

