"""Layers once, then never again: a joiner with nothing on disk takes part in a split at once.

Real node processes, real llama.cpp, the `openai` client. A founds with `--split`; B joins with
an empty home. On B's first load exactly its share's weight bytes cross the mesh and B keeps
them in a sparse copy keyed by the model's digest; later loads are by reference (0 bytes sent),
a tampered cache is fetched again, a new share sends only what is missing, a file of the same
name and another digest is never used, and without room for layers B is a lite member.
"""

from __future__ import annotations

import functools
import json
import subprocess

import pytest

from meshdesk.adapters.gguf_metadata import read_model_info, read_tensor_infos
from meshdesk.core.layer_manifest import share_tensor_names
from meshdesk.node.model_inventory import file_digest
from tests.nodes import poll
from tests.split_tools import direct_rpc_completion
from tests.test_split import PROMPT, completion, post_json, split_plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_digest(default_model_path) -> str:
    return file_digest(default_model_path)


@functools.lru_cache(maxsize=4)
def direct_answer(model_path, shares: tuple[float, ...]) -> str:
    """The same split over plain llama.cpp RPC on loopback (once per split in this module)."""
    return direct_rpc_completion(model_path, list(shares), PROMPT, 24)


def share_of(model_path, plan: dict, member_id: str) -> dict[str, int]:
    """The tensors (name -> bytes) llama.cpp gives `member_id` under `plan`."""
    tensors = {tensor.name: tensor.nbytes for tensor in read_tensor_infos(model_path)}
    shares = [member["share"] for member in plan["members"]]
    device = [member["id"] for member in plan["members"]].index(member_id)
    names = share_tensor_names(tensors, read_model_info(model_path).layer_count, shares, device)
    return {name: tensors[name] for name in names}


def start_pair(node_factory, tmp_path, model_path, *joiner_options, joiner_home=None, environment=None):
    founder = node_factory("--model", str(model_path), "--split", "--threads", "1")
    joiner = node_factory("--join", founder.invite_token(), "--threads", "1", *joiner_options,
                          home=joiner_home or tmp_path / "empty-joiner", environment=environment)
    return founder, joiner


def wait_for_split(founder, joiner, timeout: float = 120) -> dict:
    try:
        poll(lambda: (plan := split_plan(founder)) and joiner.node_id in [m["id"] for m in plan["members"]]
             and founder.model_state() == "ready", timeout, message="the split with the joiner to run")
    except AssertionError as timeout_error:
        raise AssertionError(f"{timeout_error}: FOUNDER {founder.describe()} JOINER {joiner.describe()}") from None
    return split_plan(founder)


def restart_joiner(node_factory, founder, joiner, *options, before_start=lambda: None):
    """B stops; A re-plans solo; B comes back (same home, same options) and the split forms again."""
    home = joiner.home
    joiner.stop()
    poll(lambda: founder.status()["plans"][0]["state"] == "solo", 60, message="the founder to go solo")
    before_start()
    again = node_factory("--join", founder.invite_token(), "--threads", "1", *options, home=home)
    return again, wait_for_split(founder, again)


def sent(node) -> int:
    return node.status()["traffic"]["weights_sent_bytes"]


def referenced(node) -> int:
    return node.status()["traffic"]["weights_referenced_bytes"]


def test_a_joiner_with_nothing_on_disk_receives_its_layers_once_then_loads_by_reference(
        node_factory, tmp_path, default_model_path, model_digest):
    founder, joiner = start_pair(node_factory, tmp_path, default_model_path, "--max-vram", "10")
    plan = wait_for_split(founder, joiner)
    assert plan["host"] == founder.node_id and [m["id"] for m in plan["members"]] == [joiner.node_id,
                                                                                       founder.node_id]
    assert not list((joiner.home / "models").glob("*.gguf"))  # it never got the file
    share = share_of(default_model_path, plan, joiner.node_id)
    share_bytes = sum(share.values())
    assert share_bytes > 10 << 20

    answer = completion(founder)
    assert answer == direct_answer(default_model_path, tuple(member["share"] for member in plan["members"]))
    assert completion(joiner) == answer  # the joiner routes to the host
    assert sent(founder) == share_bytes  # exactly its share, once, as stock RPC sends it
    assert founder.status()["layers_sent"] == {joiner.node_id: share_bytes}  # the host's Mesh view sees it
    layers = joiner.status()["layers"]
    assert layers["received_bytes"] == layers["missing_bytes"] == share_bytes and not layers["receiving"]

    cache = joiner.home / "layers" / model_digest
    held = json.loads((cache / "held.json").read_text())
    assert set(held) == set(share)
    assert (cache / "model.layers").stat().st_size == default_model_path.stat().st_size
    assert (cache / "model.layers").stat().st_blocks * 512 < 2 * share_bytes  # sparse: only its layers

    # B restarts: its layers are verified and referenced, none travel again.
    before_sent, before_referenced = sent(founder), referenced(founder)
    joiner, again = restart_joiner(node_factory, founder, joiner, "--max-vram", "10")
    assert again["members"] == plan["members"]
    assert completion(founder) == answer
    assert sent(founder) == before_sent
    assert referenced(founder) - before_referenced == share_bytes

    # One byte of one cached tensor changes: detected, that tensor alone travels again.
    name = sorted(share)[0]
    offset = held[name][0] + held[name][1] // 2

    def tamper():
        with open(cache / "model.layers", "r+b") as file:
            file.seek(offset)
            byte = file.read(1)
            file.seek(offset)
            file.write(bytes([byte[0] ^ 0xFF]))
    before_sent = sent(founder)
    joiner, _ = restart_joiner(node_factory, founder, joiner, "--max-vram", "10", before_start=tamper)
    assert completion(founder) == answer
    assert sent(founder) - before_sent == share[name]
    with open(cache / "model.layers", "rb") as file, open(default_model_path, "rb") as model:
        file.seek(offset)
        model.seek(offset)
        assert file.read(1) == model.read(1)  # fetched again, and right


def test_a_new_share_sends_only_the_missing_tensors(node_factory, tmp_path, default_model_path):
    founder, joiner = start_pair(node_factory, tmp_path, default_model_path, "--max-vram", "3")
    plan = wait_for_split(founder, joiner)
    first = share_of(default_model_path, plan, joiner.node_id)
    assert sent(founder) == sum(first.values())
    answer = completion(founder)

    post_json(joiner, "/api/capacity", {"max_vram_gb": 12})
    poll(lambda: (new := split_plan(founder)) and new["members"][0]["share"] > plan["members"][0]["share"]
         and founder.model_state() == "ready", 90, message="the split with a larger share")
    second = share_of(default_model_path, split_plan(founder), joiner.node_id)
    missing = {name: size for name, size in second.items() if name not in first}
    assert missing  # the larger share has layers the joiner did not hold
    assert sent(founder) == sum(first.values()) + sum(missing.values())
    assert completion(founder) == answer


def test_a_file_of_the_same_name_and_another_digest_is_never_used(node_factory, tmp_path, default_model_path,
                                                                   model_digest):
    home = tmp_path / "other-file"
    (home / "models").mkdir(parents=True)
    impostor = home / "models" / default_model_path.name
    content = bytearray(default_model_path.read_bytes())
    tensor = next(t for t in read_tensor_infos(default_model_path) if t.name.startswith("blk.0."))
    for index in range(tensor.offset, tensor.offset + tensor.nbytes, 4096):
        content[index] ^= 0x55  # the same GGUF index, other weights
    impostor.write_bytes(content)
    founder, joiner = start_pair(node_factory, tmp_path, default_model_path, "--max-vram", "10", joiner_home=home)
    plan = wait_for_split(founder, joiner)
    share = share_of(default_model_path, plan, joiner.node_id)
    assert sent(founder) == sum(share.values())  # nothing referenced from the impostor
    assert completion(founder) == direct_answer(default_model_path, tuple(m["share"] for m in plan["members"]))
    assert [path.name for path in (home / "layers").iterdir()] == [model_digest]
    assert impostor.read_bytes() == bytes(content)


@pytest.fixture
def small_disk(tmp_path):
    """The joiner's HOME/layers on a real 16 MiB file system (tmpfs; root only)."""
    folder = tmp_path / "empty-joiner" / "layers"
    folder.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("limit", ["quota", "small disk"])
def test_without_room_for_layers_a_joiner_says_so_and_serves_the_api_as_a_lite_member(
        node_factory, tmp_path, default_model_path, request, limit):
    environment = {"MESHDESK_LAYER_QUOTA_BYTES": "1000000"} if limit == "quota" else None
    if limit == "small disk":
        request.getfixturevalue("small_disk")
    founder, joiner = start_pair(node_factory, tmp_path, default_model_path, "--max-vram", "10",
                                 environment=environment)
    founder.wait_until_ready(90)
    poll(lambda: joiner.status()["layers"]["problem"], 30, message="the joiner to say it has no room")
    assert "no disk space for layers" in joiner.status()["layers"]["problem"]
    assert any("no disk space for layers" in line for line in joiner.output) or \
        "no disk space for layers" in (joiner.home / "logs" / "meshdesk.log").read_text()
    poll(lambda: [m["state"] for m in joiner.status()["models"]] == ["remote"], 30,
         message="the joiner to route to the founder")
    plan = founder.status()["plans"][0]
    assert joiner.node_id not in [member["id"] for member in plan["members"]]
    assert completion(joiner, 4)  # the API works through the founder
    assert sent(founder) == 0 and not list((joiner.home / "layers").glob("*/model.layers"))
    assert joiner.status()["node"]["role"] == "standby"
