"""Layer manifests and the member's share (pure): llama.cpp's layer assignment, the bounds on what
a host may send, and the expander keeping the bytes of the tensors a member's cache lacks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.core.layer_manifest import (MAX_TENSORS, LayerManifest, LayerManifestError, held_reply,
                                          layer_devices, read_held_reply, share_tensor_names)
from meshdesk.core.rpc_expander import KeptPiece, ReferenceExpander
from tests.test_core_rpc_stream import ATTN_Q, DIGEST, EMBD, HELLO, message, set_tensor, weight_bytes

SHA = "ab" * 32


def manifest_wire(size=1000, tensors=(("blk.0.a", 0, 10, SHA),), digest=DIGEST) -> dict:
    return {"type": "layers", "digest": digest, "size": size, "tensors": [list(t) for t in tensors]}


# --- which layers a device gets -------------------------------------------------------------------

def test_layers_follow_the_cumulative_split_as_llama_cpp_assigns_them():
    # 18 layers + output: layer il goes to the first device whose split point exceeds il / 19
    assert layer_devices(18, [0.5, 0.5]) == [0] * 10 + [1] * 9
    assert layer_devices(18, [0.2381, 0.7619]) == [0] * 5 + [1] * 14
    assert layer_devices(3, [1, 1, 2]) == [0, 1, 2, 2]


@given(st.integers(1, 200), st.lists(st.floats(0.01, 100), min_size=1, max_size=8))
def test_every_layer_goes_to_one_device_in_order_each_in_proportion_to_its_share(layer_count, shares):
    devices = layer_devices(layer_count, shares)
    assert len(devices) == layer_count + 1
    assert devices == sorted(devices) and all(0 <= device < len(shares) for device in devices)
    for device, share in enumerate(shares):
        assert abs(devices.count(device) - share / sum(shares) * (layer_count + 1)) <= 1.001


def test_a_share_names_its_repeating_layers_and_only_the_last_device_the_output():
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_up.weight", "blk.10.attn_q.weight",
             "output_norm.weight", "output.weight"]
    assert share_tensor_names(names, 2, [0.5, 0.5], 0) == ["blk.0.attn_q.weight", "blk.1.ffn_up.weight"]
    assert share_tensor_names(names, 2, [0.5, 0.5], 1) == ["output_norm.weight", "output.weight"]


# --- what a host may send ---------------------------------------------------------------------------

def test_a_manifest_round_trips_and_the_answer_names_held_tensors_by_index():
    manifest = LayerManifest.from_wire(manifest_wire(tensors=(("a", 0, 10, SHA), ("b", 10, 5, SHA))), 1000)
    assert manifest.nbytes == 15 and LayerManifest.from_wire(manifest.to_wire(), 1000) == manifest
    reply = held_reply(manifest, ["b", "not listed"])
    assert reply == {"type": "layers_held", "held": [1], "whole_file": False}
    assert read_held_reply(reply, manifest) == (frozenset({"b"}), False)


@pytest.mark.parametrize("wire", [
    manifest_wire(size=1001),                                   # larger than the advertised file
    manifest_wire(size=0),
    manifest_wire(tensors=(("a", 995, 10, SHA),)),               # past the end of the file
    manifest_wire(tensors=(("a", -1, 10, SHA),)),
    manifest_wire(tensors=(("a", 0, 0, SHA),)),
    manifest_wire(tensors=(("a", 0, 10, SHA), ("b", 5, 10, SHA))),  # overlapping
    manifest_wire(tensors=(("a", 0, 10, SHA), ("a", 20, 10, SHA))),  # named twice
    manifest_wire(tensors=(("a" * 64, 0, 10, SHA),)),            # longer than an rpc_tensor name
    manifest_wire(tensors=(("a\n", 0, 10, SHA),)),
    manifest_wire(tensors=(("a", 0, 10, "zz"),)),
    manifest_wire(tensors=(("a", 0, 10.0, SHA),)),
    manifest_wire(tensors=(("a", 0, 10),)),
    manifest_wire(digest="../" * 21 + "etc"),
    manifest_wire(tensors=tuple((f"t{i}", i, 1, SHA) for i in range(MAX_TENSORS + 1))),
    {"type": "other"},
    "not an object",
], ids=lambda wire: str(wire)[:40])
def test_a_manifest_outside_its_bounds_is_refused(wire):
    size = MAX_TENSORS + 1000 if isinstance(wire, dict) and len(wire.get("tensors", ())) > MAX_TENSORS else 1000
    with pytest.raises(LayerManifestError):
        LayerManifest.from_wire(wire, size)


@pytest.mark.parametrize("reply", [{"type": "layers_held", "held": [2]}, {"type": "layers_held", "held": [-1]},
                                   {"type": "layers_held", "held": "0"}, {"type": "layers_held", "held": [True]},
                                   {"type": "layers_held", "held": [], "whole_file": 1}, {"type": "x"}])
def test_a_malformed_answer_is_refused(reply):
    manifest = LayerManifest.from_wire(manifest_wire(tensors=(("a", 0, 10, SHA), ("b", 10, 5, SHA))), 1000)
    with pytest.raises(LayerManifestError):
        read_held_reply(reply, manifest)


# --- the member keeping what it lacks ---------------------------------------------------------------

def joined(pieces) -> bytes:
    return b"".join(piece.data if isinstance(piece, KeptPiece) else piece for piece in pieces)


@given(st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_a_kept_tensor_reaches_the_worker_unchanged_and_its_bytes_are_kept_in_order(cuts):
    expander = ReferenceExpander({DIGEST: {}}, keep={"token_embd.weight": EMBD})
    stream = message(HELLO, bytes(24)) + set_tensor("token_embd.weight", 0, weight_bytes(EMBD)) \
        + set_tensor("blk.0.attn_q.weight", 0, weight_bytes(ATTN_Q))
    pieces, position = [], 0
    for cut in cuts * 20:
        pieces += expander.feed(stream[position:position + cut])
        position += cut
        if position >= len(stream):
            break
    pieces += expander.feed(stream[position:]) if position < len(stream) else []
    assert joined(pieces) == stream
    kept = [piece for piece in pieces if isinstance(piece, KeptPiece)]
    assert b"".join(piece.data for piece in kept) == weight_bytes(EMBD)
    assert [piece.start for piece in kept] == [sum(len(p.data) for p in kept[:i]) for i in range(len(kept))]
    assert [piece.last for piece in kept].count(True) == 1 and kept[-1].last
    assert expander.counts.weights_sent_bytes == EMBD.nbytes


def test_only_a_whole_upload_of_a_kept_tensor_is_kept():
    expander = ReferenceExpander({DIGEST: {}}, keep={"token_embd.weight": EMBD})
    partial = set_tensor("token_embd.weight", 10, weight_bytes(EMBD, 10, 100))
    pieces = expander.feed(partial)
    assert joined(pieces) == partial and not any(isinstance(piece, KeptPiece) for piece in pieces)

