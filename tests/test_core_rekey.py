"""Rekeys (core.rekey): their wire form, who may make them, and that nothing else verifies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.core.errors import Fault, PeerProtocolError
from meshdesk.core.identity import node_id_for
from meshdesk.core.rekey import MAX_EPOCH, Rekey, RekeyError, check_rekey, is_newer

MESH = "a1b2c3d4e5f60718"
KEY = NodeKey.generate()
OTHER = NodeKey.generate()
BY = node_id_for(KEY.public_bytes)


def a_rekey(epoch: int = 1, key: NodeKey = KEY) -> Rekey:
    return Rekey(MESH, epoch, bytes(range(32)), node_id_for(key.public_bytes)).signed(key.sign)


def test_a_signed_rekey_round_trips_and_verifies():
    rekey = a_rekey()
    again = Rekey.from_wire(json.loads(json.dumps(rekey.to_wire())))
    assert again == rekey
    check_rekey(again, MESH, KEY.public_bytes, True, verify_signature)


@pytest.mark.parametrize("mesh, key, allowed, fault", [
    ("ffffffffffffffff", KEY.public_bytes, True, Fault.REFUSED),       # another mesh
    (MESH, KEY.public_bytes, False, Fault.REFUSED),                    # may not remove
    (MESH, OTHER.public_bytes, True, Fault.UNAUTHENTICATED),           # not its signature
    (MESH, None, True, Fault.UNAUTHENTICATED),                         # an unknown signer
])
def test_a_rekey_is_refused_with_the_reason(mesh, key, allowed, fault):
    with pytest.raises(RekeyError) as refused:
        check_rekey(a_rekey(), mesh, key, allowed, verify_signature)
    assert refused.value.fault is fault


def test_the_signature_covers_the_secret_epoch_mesh_and_signer():
    rekey = a_rekey()
    for changed in (Rekey(MESH, 2, rekey.secret, rekey.by, rekey.signature),
                    Rekey(MESH, 1, bytes(32), rekey.by, rekey.signature),
                    Rekey("ffffffffffffffff", 1, rekey.secret, rekey.by, rekey.signature),
                    Rekey(MESH, 1, rekey.secret, "0" * 20, rekey.signature)):
        assert not verify_signature(KEY.public_bytes, changed.statement(), changed.signature)


def test_only_a_later_epoch_is_newer():
    assert is_newer(a_rekey(3), 2) and not is_newer(a_rekey(2), 2) and not is_newer(a_rekey(1), 2)


@pytest.mark.parametrize("change", [
    {"epoch": 0}, {"epoch": MAX_EPOCH + 1}, {"epoch": True}, {"epoch": 1.0},
    {"secret": "00"}, {"secret": "zz" * 32}, {"signature": "ab"}, {"by": ""}, {"by": 7},
    {"mesh_id": "x" * 65}, {"extra": 1}, {"type": "gossip"},
])
def test_malformed_rekeys_are_refused_as_the_peers_fault(change):
    message = {**a_rekey().to_wire(), **change}
    with pytest.raises(RekeyError):
        Rekey.from_wire(message)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["mesh_id", "epoch", "secret", "by", "signature"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=80),
                       st.binary(max_size=40).map(bytes.hex), st.lists(st.integers(), max_size=3)))
def test_a_mutated_rekey_never_verifies_and_never_crashes(field, value):
    original = a_rekey()
    message = {**original.to_wire(), field: value}
    try:
        rekey = Rekey.from_wire(message)
    except PeerProtocolError:
        return
    if rekey == original:
        return  # the mutation changed nothing
    with pytest.raises(RekeyError):
        check_rekey(rekey, MESH, KEY.public_bytes, True, verify_signature)
