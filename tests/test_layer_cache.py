"""A member's layer cache on a real disk: kept only when the digest holds, verified again at each
use, a torn or tampered tensor dropped; the room for layers, and a share that does not fit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest

from meshdesk.core.layer_manifest import LayerManifest, ManifestTensor
from meshdesk.core.rpc_expander import KeptPiece
from meshdesk.node.interfaces import LinkClosed
from meshdesk.node.layer_member import SPACE_STEP, LayerProgress, LayerStore, NoRoom, negotiate
from tests.fakes import link_pair, within
from tests.test_core_rpc_stream import ATTN_Q, DIGEST, EMBD, GGUF, weight_bytes


def manifest(*tensors) -> LayerManifest:
    return LayerManifest(DIGEST, len(GGUF), tuple(ManifestTensor(
        t.name, t.file_offset, t.nbytes, hashlib.sha256(weight_bytes(t)).hexdigest()) for t in tensors))


def receive(cache, wanted: LayerManifest, data: dict[str, bytes], piece: int = 100) -> LayerProgress:
    progress = LayerProgress()
    cache.prepare()
    writer = cache.writer(wanted, frozenset(data), progress)
    for name, content in data.items():
        for start in range(0, len(content), piece):
            chunk = content[start:start + piece]
            writer.keep(KeptPiece(name, start, chunk, start + len(chunk) == len(content)))
    writer.close()
    return progress


def test_kept_layers_are_held_once_their_digest_holds_and_a_tampered_one_is_dropped(tmp_path):
    store = LayerStore(tmp_path / "layers")
    wanted = manifest(EMBD, ATTN_Q)
    cache = store.cache(DIGEST, len(GGUF))
    progress = receive(cache, wanted, {EMBD.name: weight_bytes(EMBD), ATTN_Q.name: b"x" * ATTN_Q.nbytes})
    assert progress.received_bytes == EMBD.nbytes + ATTN_Q.nbytes
    assert cache.verified(wanted) == {EMBD.name}  # the wrong bytes were never held
    assert cache.read(EMBD.file_offset, EMBD.nbytes) == weight_bytes(EMBD)
    assert cache.path.stat().st_size == len(GGUF)

    fresh = store.__class__(store.root).cache(DIGEST, len(GGUF))  # a new process: verified by hashing
    assert fresh.verified(wanted) == {EMBD.name}
    with open(fresh.path, "r+b") as file:
        file.seek(EMBD.file_offset + 7)
        file.write(b"\xff")
    assert fresh.verified(wanted) == frozenset()  # tampered: dropped, and so fetched again
    assert json.loads((fresh.folder / "held.json").read_text()) == {}


def test_a_held_tensor_whose_digest_the_host_names_otherwise_is_not_used(tmp_path):
    cache = LayerStore(tmp_path / "layers").cache(DIGEST, len(GGUF))
    receive(cache, manifest(EMBD), {EMBD.name: weight_bytes(EMBD)})
    other = LayerManifest(DIGEST, len(GGUF), (ManifestTensor(EMBD.name, EMBD.file_offset, EMBD.nbytes, "cd" * 32),))
    assert cache.verified(other) == frozenset()


def test_the_room_for_layers_counts_what_the_caches_hold_and_a_quota_caps_it(tmp_path):
    store = LayerStore(tmp_path / "layers", quota_bytes=3 * SPACE_STEP + 5)
    assert store.space_bytes() == 3 * SPACE_STEP
    assert LayerStore(tmp_path / "layers", quota_bytes=SPACE_STEP - 1).space_bytes() == 0
    store.note_space(0)
    assert "no disk space for layers" in store.progress.problem


def test_a_share_that_does_not_fit_is_refused_before_anything_is_written(tmp_path):
    async def scenario():
        store = LayerStore(tmp_path / "layers", quota_bytes=0)
        host_end, member_end = link_pair(("host", "member"))
        await host_end.send(manifest(EMBD).to_wire())
        with pytest.raises(NoRoom):
            await within(negotiate(member_end, frozenset({DIGEST}), lambda digest: len(GGUF),
                                   lambda digest: None, store))
        assert not (tmp_path / "layers" / DIGEST / "model.layers").exists()

    asyncio.run(scenario())


def test_a_host_that_hangs_up_before_the_answer_leaves_no_tensor_reserved(tmp_path):
    """The member's reply fails: the tunnel is refused, and its writer must let the tensors go,
    or every later load would send them again without keeping them."""
    async def scenario():
        store = LayerStore(tmp_path / "layers")
        host_end, member_end = link_pair(("host", "member"))
        await host_end.send(manifest(EMBD).to_wire())
        host_end.close("gave up waiting")
        with pytest.raises(LinkClosed):
            await within(negotiate(member_end, frozenset({DIGEST}), lambda digest: len(GGUF),
                                   lambda digest: None, store))
        cache = store.cache(DIGEST, len(GGUF))
        assert set(cache.writer(manifest(EMBD), frozenset({EMBD.name}), LayerProgress()).table()) == {EMBD.name}

    asyncio.run(scenario())


def test_a_second_upload_of_a_kept_tensor_leaves_the_kept_bytes_be(tmp_path):
    cache = LayerStore(tmp_path / "layers").cache(DIGEST, len(GGUF))
    wanted = manifest(EMBD)
    cache.prepare()
    writer = cache.writer(wanted, frozenset({EMBD.name}), LayerProgress())
    writer.keep(KeptPiece(EMBD.name, 0, weight_bytes(EMBD), True))
    writer.keep(KeptPiece(EMBD.name, 0, b"\0" * EMBD.nbytes, True))  # the same tensor again, other bytes
    writer.close()
    assert cache.read(EMBD.file_offset, EMBD.nbytes) == weight_bytes(EMBD)
    assert LayerStore(tmp_path / "layers").cache(DIGEST, len(GGUF)).verified(wanted) == {EMBD.name}


def test_an_old_cache_of_another_model_is_forgotten_to_make_room_for_this_share(tmp_path):
    """The gossiped room counts what caches hold, so a plan may give this member a share that
    only fits once another model's cache goes; one a tunnel writes now stays."""
    async def scenario():
        store = LayerStore(tmp_path / "layers", quota_bytes=SPACE_STEP)
        busy = store.cache("12" * 32, len(GGUF))  # the least recently written, but in use
        busy.prepare()
        busy_share = LayerManifest(busy.digest, len(GGUF), (ManifestTensor(EMBD.name, EMBD.file_offset,
                                                                             EMBD.nbytes, "00" * 32),))
        writer = busy.writer(busy_share, frozenset({EMBD.name}), LayerProgress())
        old = store.cache("ef" * 32, SPACE_STEP)
        old.prepare()
        with open(old.path, "r+b") as file:  # really allocated, as kept layers are
            file.write(b"\1" * SPACE_STEP)
        os.utime(busy.folder, (1, 1))
        assert store.free_bytes() == 0
        host_end, member_end = link_pair(("host", "member"))
        await host_end.send(manifest(EMBD).to_wire())
        await within(negotiate(member_end, frozenset({DIGEST}), lambda digest: len(GGUF),
                               lambda digest: None, store))
        assert not old.folder.exists() and busy.folder.exists()
        writer.close()

    asyncio.run(scenario())


def test_a_new_share_finds_held_tensors_this_run_has_not_checked_yet(tmp_path):
    store = LayerStore(tmp_path / "layers")
    receive(store.cache(DIGEST, len(GGUF)), manifest(EMBD, ATTN_Q),
            {EMBD.name: weight_bytes(EMBD), ATTN_Q.name: weight_bytes(ATTN_Q)})
    fresh = LayerStore(store.root).cache(DIGEST, len(GGUF))  # a new run
    assert fresh.verified(manifest(EMBD)) == {EMBD.name}  # a plan with the smaller share first
    assert fresh.verified(manifest(EMBD, ATTN_Q)) == {EMBD.name, ATTN_Q.name}  # then the larger: nothing travels


def test_a_second_tunnel_never_writes_the_tensors_another_one_keeps(tmp_path):
    cache = LayerStore(tmp_path / "layers").cache(DIGEST, len(GGUF))
    cache.prepare()
    wanted = manifest(EMBD, ATTN_Q)
    first = cache.writer(wanted, frozenset({EMBD.name, ATTN_Q.name}), LayerProgress())
    second = cache.writer(wanted, frozenset({EMBD.name, ATTN_Q.name}), LayerProgress())
    assert set(first.table()) == {EMBD.name, ATTN_Q.name} and second.table() == {}
    first.close()
    second.close()
    assert set(cache.writer(wanted, frozenset({EMBD.name}), LayerProgress()).table()) == {EMBD.name}


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system (tmpfs; root only)."""
    import subprocess

    folder = tmp_path / "tiny"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_stops_the_keeping_not_the_tunnel(tiny_disk):
    size = 4 << 20
    big = ManifestTensor("blk.0.big", 0, 2 << 20, hashlib.sha256(bytes(2 << 20)).hexdigest())
    wanted = LayerManifest(DIGEST, size, (big,))
    store = LayerStore(tiny_disk / "layers")
    assert store.space_bytes() == 0  # what the node gossips: no room, so it is left out of plans
    cache = store.cache(DIGEST, size)
    cache.prepare()  # sparse: a 4 MiB file on a 1 MiB disk
    writer = cache.writer(wanted, frozenset({big.name}), LayerProgress())
    for start in range(0, big.nbytes, 1 << 16):
        writer.keep(KeptPiece(big.name, start, bytes(1 << 16), start + (1 << 16) == big.nbytes))
    writer.close()
    assert isinstance(writer.failure, OSError) and cache.verified(wanted) == frozenset()
