"""A compromised host attacks a member's layer cache through real sockets: manifests that reach
outside the model file or beyond its advertised size, and layer bytes that are not the model's.
The member refuses or keeps nothing, writes nothing outside its cache, and the split answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct

import pytest

from meshdesk.adapters.gguf_metadata import read_tensor_infos
from meshdesk.core.invite import decode_token
from meshdesk.node import handshake
from meshdesk.node.interfaces import LinkClosed
from meshdesk.node.model_inventory import file_digest
from tests.mesh_tools import credentials, node_key_of, tls_transport
from tests.nodes import poll
from tests.split_tools import children
from tests.test_layer_transfer import start_pair, wait_for_split
from tests.test_mesh_peers import join_as_peer
from tests.test_rpc_attacks import peer_address
from tests.test_split import completion

pytestmark = pytest.mark.slow


def manifest(digest: str, size: int, tensors) -> dict:
    return {"type": "layers", "digest": digest, "size": size, "tensors": [list(t) for t in tensors]}


async def as_the_host(founder, joiner, folder, messages: list[dict], raw: bytes = b"") -> list:
    """Dials the joiner's rpc purpose with the founder's own key and the mesh secret, sends each
    message (reading an answer after each), then `raw` as the RPC stream; the answers."""
    token = founder.invite_token()
    _, transport, _, identity = await join_as_peer(token)
    link = await tls_transport(node_key_of(founder.home), folder).connect(peer_address(founder, joiner.node_id))
    await handshake.dial(link, credentials(node_key_of(founder.home)), decode_token(token).mesh_id,
                         identity.mesh_secret, purpose="rpc")
    answers = []
    try:
        for message in messages:
            await link.send(message)
            answers.append(await asyncio.wait_for(link.receive(), 15))
        if raw:
            _, writer = link.detach()
            writer.write(raw)  # the worker serves the honest host meanwhile: no answer to wait for
            await writer.drain()
    except LinkClosed:
        answers.append("closed")
    finally:
        link.close()
        await transport.stop()
    return answers


def set_tensor(name: str, data: bytes) -> bytes:
    descriptor = bytearray(296)
    descriptor[228:228 + len(name)] = name.encode()
    payload = bytes(descriptor) + struct.pack("<BQ", 0, 0) + data
    return struct.pack("<BQ", 6, len(payload)) + payload


def test_a_host_cannot_make_a_member_write_outside_its_cache_or_keep_bytes_that_are_not_the_models(
        node_factory, tmp_path, default_model_path):
    founder, joiner = start_pair(node_factory, tmp_path, default_model_path, "--max-vram", "10")
    wait_for_split(founder, joiner)
    (worker_pid,) = children(joiner.process.pid, "meshdesk.adapters.llama.rpc_worker")
    digest, size = file_digest(default_model_path), default_model_path.stat().st_size
    tensor = next(t for t in read_tensor_infos(default_model_path) if t.name == "blk.17.attn_norm.weight")
    good = hashlib.sha256(b"x" * tensor.nbytes).hexdigest()
    attacks = {
        "past the end of the file": manifest(digest, size, [("blk.17.attn_norm.weight", size - 10, 100, good)]),
        "a file larger than advertised": manifest(digest, size * 1000, [("blk.17.x", size * 999, 1 << 30, good)]),
        "overlapping tensors": manifest(digest, size, [("a", 0, 100, good), ("b", 50, 100, good)]),
        "a path for a digest": manifest("../" * 21 + "etc", size, []),
        "a model it does not drive": manifest("ab" * 32, size, []),
    }
    for name, attack in attacks.items():
        assert asyncio.run(as_the_host(founder, joiner, tmp_path / "attacker", [attack])) == ["closed"], name

    # A well-formed manifest for a tensor it lacks, then bytes that are not that tensor's.
    cache = joiner.home / "layers" / digest
    held_before = json.loads((cache / "held.json").read_text())
    assert tensor.name not in held_before  # blk.17 lies on the host's own device
    offer = manifest(digest, size, [(tensor.name, tensor.offset, tensor.nbytes, good)])
    answers = asyncio.run(as_the_host(founder, joiner, tmp_path / "attacker", [offer],
                                      raw=set_tensor(tensor.name, b"y" * tensor.nbytes)))
    assert answers[0] == {"type": "layers_held", "held": [], "whole_file": False}
    poll(lambda: "does not match its digest" in (joiner.home / "logs" / "meshdesk.log").read_text(), 15,
         message="the member to refuse the bytes")
    assert json.loads((cache / "held.json").read_text()) == held_before  # nothing kept
    assert sorted(path.name for path in (joiner.home / "layers").iterdir()) == [digest]
    assert (cache / "model.layers").stat().st_size == size

    assert children(joiner.process.pid, "meshdesk.adapters.llama.rpc_worker") == [worker_pid]  # still up
    refusals = [refusal["reason"] for refusal in joiner.status()["refusals"]]
    assert sum("layer exchange" in reason for reason in refusals) >= 4, refusals
    assert completion(founder, 4)  # the honest split still answers
