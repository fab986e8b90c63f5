"""Gossip that a member forges: records for another node's id, generations pushed to the top,
removals and revocations nobody authorised, and state too large for one frame. Each is tried
against a Membership by hand (no network); tests/test_mesh_gossip_attacks.py tries them over
real sockets against a real node."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdesk.core import authority
from meshdesk.core.authority import MAX_PER_ADMIN, Entry, Ledger, NotAuthorised, make_entry
from meshdesk.core.errors import Fault
from meshdesk.core.frames import MAX_FRAME_BYTES, encode_frame
from meshdesk.core.gossip_message import GossipMessage
from meshdesk.core.gossip_values import MAX_COUNTER, MembershipError
from meshdesk.core.membership import GENERATION_MARGIN_MS, MAX_ADOPTED_HEARTBEAT, Membership
from meshdesk.core.node_record import NodeRecord, check_signed, signed
from tests.gossip_keys import ID, key, key_hex, sign_as, verify
from tests.test_core_membership import gossip_from, make_membership, make_record, state_of

NOW_MS = 1_800_000_000_000  # a wall clock in milliseconds, as a node starts its generation
A, B, C = ID["A"], ID["B"], ID["C"]


def message(*records: NodeRecord, entries=(), heartbeats=None, generations=None, authority_key=None) -> dict:
    return GossipMessage(tuple(records), heartbeats or {}, generations or {}, tuple(entries), authority_key).to_wire()


def founder_and_member():
    """A (the founder) and B, started at NOW_MS, linked, each holding the other's record."""
    a, b = make_membership("A", NOW_MS), make_membership("B", NOW_MS)
    a.receive(0.0, B, gossip_from(b, A))
    b.receive(0.0, A, gossip_from(a, B))
    return a, b


# ---------------------------------------------------------------- signatures and ids


def test_a_signed_record_checks_and_any_change_to_it_does_not():
    record = make_record("B", 5)
    check_signed(record, verify)
    for change in ({"name": "other"}, {"addresses": (("6.6.6.6", 1),)}, {"serving": "evil"},
                   {"generation": 6}, {"public_key": key_hex("C")}, {"signature": ""}):
        with pytest.raises(MembershipError) as caught:
            check_signed(dataclasses.replace(record, **change), verify)
        assert caught.value.fault is Fault.UNAUTHENTICATED


def test_a_record_signed_by_its_own_key_for_another_id_is_refused():
    # C signs, with its own key, a record that claims B's id: the key does not derive to the id.
    forged = signed(dataclasses.replace(make_record("C", NOW_MS + 1), node_id=B, name="forged B"), sign_as("C"))
    with pytest.raises(MembershipError, match="not its own"):
        check_signed(forged, verify)


def test_a_forged_record_for_another_node_drops_the_sender_and_changes_nothing():
    a, b = founder_and_member()
    before = state_of(a)
    forged = signed(dataclasses.replace(b.own, addresses=(("6.6.6.6", 9400),), generation=b.own.generation + 1),
                    sign_as("C"))
    with pytest.raises(MembershipError) as caught:
        a.receive(1.0, C, message(forged))
    assert caught.value.fault is Fault.UNAUTHENTICATED
    assert state_of(a) == before
    assert [r.addresses for r in a.alive_records(1.0) if r.node_id == B] == [(("10.0.0.1", 9400),)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_of_a_signed_records_wire_form_never_verify_and_never_crash(data):
    original = make_record("B", NOW_MS)
    wire = json.loads(json.dumps(original.to_wire()))
    field = data.draw(st.sampled_from(sorted(wire)))
    junk = data.draw(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=80) | st.lists(st.integers(), max_size=3)
                     | st.just(key_hex("C")) | st.just(ID["C"]) | st.just(original.signature.upper()))
    wire[field] = junk
    try:
        mutated = NodeRecord.from_wire(wire)
    except MembershipError:
        return  # malformed: refused before any signature is looked at
    if mutated == original:
        return  # the same record, spelled the same after normalising (an int rtt as a float ...)
    with pytest.raises(MembershipError) as caught:
        check_signed(mutated, verify)
    assert caught.value.fault is Fault.UNAUTHENTICATED


# ---------------------------------------------------------------- generations


def test_a_generation_far_ahead_of_the_clock_is_left_out_and_a_restart_still_wins():
    a, b = founder_and_member()
    top = signed(dataclasses.replace(b.own, name="frozen?", generation=MAX_COUNTER), sign_as("B"))
    a.receive(1.0, B, message(top))
    assert a.refused_records == 1
    assert [r.name for r in a.alive_records(1.0) if r.node_id == B] == ["node B"]
    # B restarts an hour later: its wall-clock generation is taken at once.
    hour = 3600 * 1000
    restarted = make_record("B", NOW_MS + hour, name="B, restarted")
    a.receive(3600.0, B, message(restarted))
    assert [r.name for r in a.alive_records(3600.0) if r.node_id == B] == ["B, restarted"]
    # A clock running a little fast is fine; one beyond the margin is not.
    fast = make_record("B", NOW_MS + hour + GENERATION_MARGIN_MS // 2, name="fast clock")
    a.receive(3600.0, B, message(fast))
    assert [r.name for r in a.alive_records(3600.0) if r.node_id == B] == ["fast clock"]


def test_a_rival_for_our_own_id_at_the_top_cannot_freeze_or_crash_us():
    a, _ = founder_and_member()
    copied_key_rival = make_record("A", MAX_COUNTER, name="copied key")  # only a copied key can sign this
    a.receive(1.0, B, message(copied_key_rival, heartbeats={A: MAX_COUNTER}, generations={A: MAX_COUNTER}))
    assert a.own.generation == NOW_MS and a.own_id_conflicts == 0
    a.update_own(2.0, name="still mine")
    assert a.own.generation == NOW_MS + 1 and a.own.name == "still mine"
    check_signed(a.own, verify)
    [(_, sent)] = [(peer, m) for peer, m in a.messages_to_send(2.0) if peer == B]
    assert MAX_ADOPTED_HEARTBEAT <= sent["heartbeats"][A] < MAX_COUNTER


def test_our_generation_at_the_top_saturates_and_never_raises():
    node = make_membership("A", MAX_COUNTER)
    node.update_own(0.0, name="again")
    node.leave(0.0)
    assert node.own.generation == MAX_COUNTER and node.own.leaving


# ---------------------------------------------------------------- who may remove and revoke


def test_only_the_founder_and_its_admins_may_remove_and_revoke():
    a, b = founder_and_member()
    with pytest.raises(NotAuthorised, match="only the mesh's founder"):
        b.remove(1.0, C)
    with pytest.raises(NotAuthorised, match="only the mesh's founder"):
        b.revoke_token(1.0, "token-1")
    with pytest.raises(NotAuthorised, match="founder cannot be removed"):
        b.remove(1.0, A)
    a.grant_admin(1.0, key("B").public_bytes)
    b.receive(1.1, A, dict(a.messages_to_send(1.1))[B])
    b.remove(1.2, C)
    b.revoke_token(1.2, "token-1")
    with pytest.raises(NotAuthorised, match="only the mesh's founder can name admins"):
        b.grant_admin(1.2, key("C").public_bytes)
    with pytest.raises(NotAuthorised, match="founder cannot be removed"):
        b.remove(1.2, A)
    a.receive(1.3, B, dict(b.messages_to_send(1.3))[A])
    assert a.removed_node_ids == {C} and a.revoked_token_ids == {"token-1"}


def test_entries_nobody_authorised_are_ignored_and_counted():
    a, _ = founder_and_member()
    by_member = make_entry(authority.REMOVE, C, key("B").public_bytes, 1, sign_as("B"))
    founder_removed = make_entry(authority.REMOVE, A, key("A").public_bytes, 1, sign_as("A"))
    self_granted = make_entry(authority.ADMIN, key_hex("B"), key("B").public_bytes, 1, sign_as("B"))
    a.receive(1.0, B, message(entries=[by_member, founder_removed, self_granted]))
    assert a.removed_node_ids == frozenset() and a.authority.subjects(authority.ADMIN) == set()
    assert a.authority.ignored == 3


def test_an_entry_forged_in_the_founders_name_drops_the_sender_and_changes_nothing():
    a, _ = founder_and_member()
    before = state_of(a)
    good = make_entry(authority.REVOKE, "t1", key("A").public_bytes, 1, sign_as("A"))
    forged = Entry(authority.REMOVE, C, key_hex("A"), 1, "00" * 64)
    with pytest.raises(MembershipError) as caught:
        a.receive(1.0, B, message(entries=[good, forged]))
    assert caught.value.fault is Fault.UNAUTHENTICATED and state_of(a) == before


def test_a_flood_of_removals_fills_nothing():
    a, _ = founder_and_member()
    bogus = [make_entry(authority.REMOVE, f"{index:020x}", key("B").public_bytes, 1, sign_as("B"))
             for index in range(4096)]
    for start in range(0, len(bogus), 1024):
        a.receive(1.0, B, message(entries=bogus[start:start + 1024]))
    assert a.removed_node_ids == frozenset() and a.authority.ignored == 4096
    a.revoke_token(2.0, "still-possible")
    assert a.revoked_token_ids == {"still-possible"}


def test_each_admin_is_bounded_and_the_founder_keeps_room():
    ledger = Ledger(key_hex("A"), verify)
    assert ledger.admit(make_entry(authority.ADMIN, key_hex("B"), key("A").public_bytes,
                                   1, sign_as("A")))
    made = sum(ledger.admit(make_entry(authority.REVOKE, f"t{index}", key("B").public_bytes, 1, sign_as("B")))
               for index in range(MAX_PER_ADMIN + 10))
    assert made == MAX_PER_ADMIN and ledger.ignored == 10
    assert "as many" in ledger.refusal(authority.REVOKE, key_hex("B"))
    assert ledger.refusal(authority.REVOKE, key_hex("A")) is None


def test_a_removed_admin_decides_no_more():
    ledger = Ledger(key_hex("A"), verify)
    ledger.admit(make_entry(authority.ADMIN, key_hex("B"), key("A").public_bytes, 1, sign_as("A")))
    ledger.admit(make_entry(authority.REMOVE, B, key("A").public_bytes, 2, sign_as("A")))
    assert not ledger.admit(make_entry(authority.REVOKE, "t", key("B").public_bytes, 3, sign_as("B")))


def test_a_joiner_learns_the_authority_from_its_inviter_only():
    a = make_membership("A", NOW_MS)
    joiner = Membership(make_record("C", NOW_MS), sign=sign_as("C"), verify=verify, learn_authority_from=A)
    b = make_membership("B", NOW_MS)
    joiner.receive(0.0, B, message(authority_key=key_hex("B")))  # not the inviter: not believed
    assert joiner.authority.authority is None
    with pytest.raises(NotAuthorised):
        joiner.revoke_token(0.0, "t")
    joiner.receive(0.1, A, gossip_from(a, C))
    assert joiner.authority.authority == key_hex("A")
    joiner.receive(0.2, A, message(authority_key=key_hex("B")))  # and never replaced
    assert joiner.authority.authority == key_hex("A") and b


# ---------------------------------------------------------------- frames


def test_a_full_state_larger_than_a_frame_goes_out_in_several_frames():
    a = make_membership("A", NOW_MS)
    bulky = {"notes": ["x" * 1000] * 300}  # about 300 kB per record
    for index, label in enumerate(["B", "C", "D", "E", "F", "G"]):
        a.receive(0.0, ID[label], message(make_record(label, NOW_MS, versions=bulky)))
    a.peer_connected(1.0, ID["H"])
    sent = [m for peer, m in a.messages_to_send(1.0) if peer == ID["H"]]
    assert len(sent) > 1
    assert all(len(encode_frame(m)) <= MAX_FRAME_BYTES for m in sent)
    newcomer = make_membership("H", NOW_MS)
    for part in sent:
        newcomer.receive(1.1, A, part)
    assert len(newcomer.alive_records(1.1)) == 8


def test_a_record_too_large_for_any_frame_is_left_out_not_raised():
    huge = make_record("B", NOW_MS, versions={"notes": ["x" * 1000] * 1100})
    parts, left_out = GossipMessage((huge, make_record("C", NOW_MS)), {}, {}).split()
    assert left_out == 1 and [r.node_id for part in parts for r in part.records] == [C]


# ---------------------------------------------------------------- nothing a peer sends stops us

forged_parts = st.fixed_dictionaries({}, optional={
    "records": st.lists(st.sampled_from(["own rival", "friend forged", "top", "junk"]), max_size=3),
    "heartbeats": st.dictionaries(st.sampled_from([A, B, C]), st.integers(0, MAX_COUNTER), max_size=3),
    "generations": st.dictionaries(st.sampled_from([A, B, C]), st.integers(0, MAX_COUNTER), max_size=3),
    "entries": st.lists(st.sampled_from(["remove founder", "forged founder", "by member", "junk"]), max_size=3),
})


def forged_gossip(parts: dict, b_record: NodeRecord) -> dict:
    records = {"own rival": signed(dataclasses.replace(make_record("A", MAX_COUNTER)), sign_as("C")).to_wire(),
               "friend forged": {**b_record.to_wire(), "name": "forged", "generation": MAX_COUNTER},
               "top": make_record("C", MAX_COUNTER).to_wire(), "junk": {"node_id": 1}}
    entries = {"remove founder": make_entry(authority.REMOVE, A, key("C").public_bytes, 1, sign_as("C")).to_wire(),
               "forged founder": Entry(authority.REMOVE, B, key_hex("A"), 1, "00" * 64).to_wire(),
               "by member": make_entry(authority.REVOKE, "t", key("B").public_bytes, 1, sign_as("B")).to_wire(),
               "junk": {"kind": 5}}
    wire = message(heartbeats=parts.get("heartbeats"), generations=parts.get("generations"))
    wire["records"] = [records[name] for name in dict.fromkeys(parts.get("records", []))]
    wire["entries"] = [entries[name] for name in parts.get("entries", [])]
    return wire


@settings(max_examples=200, deadline=None)
@given(st.lists(forged_parts, min_size=1, max_size=4))
def test_forged_gossip_through_peer_control_never_raises_and_never_freezes_or_removes_us(messages):
    from meshdesk.core import peer_control as pc

    a, b = founder_and_member()
    control = pc.PeerControl(a, 0.0)
    control.link_up(0.0, 1, C, dialled_by_us=False)
    for now, parts in enumerate(messages, start=1):
        control.message_received(float(now), 1, forged_gossip(parts, b.own))
        control.link_up(float(now), 1, C, dialled_by_us=False)  # dropped: it comes back
        control.handle_timer(float(now))
    assert not control.removed_from_mesh
    before = a.own.generation
    control.update_own(5.0, {"name": "still changing"})
    assert a.own.generation == before + 1 < MAX_COUNTER and a.own.name == "still changing"
    assert [r.name for r in a.alive_records(5.0) if r.node_id == B] == ["node B"]


def test_a_damaged_memory_of_entries_and_authority_is_ignored_not_fatal():
    node = Membership(make_record("A", NOW_MS), sign=sign_as("A"), verify=verify, authority_key=5)
    node.restore_entries(0.0, 7)
    node.restore_entries(0.0, ["x", {"kind": "remove"}, None])
    assert node.authority.authority is None and node.authority.ignored == 3
    with pytest.raises(NotAuthorised):
        node.remove(0.0, B)
