"""The planner counts the KV cache for the context a host runs (16k by default), not only a
margin on the weights: from the GGUF header to the advert to the plan."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from meshdesk.adapters.gguf_metadata import read_kv_bytes_per_token
from meshdesk.app.assembly import describe_model
from meshdesk.app.command_line import DEFAULT_CONTEXT
from meshdesk.core.assignment import MeshNode, WantedModel, plan_mesh
from meshdesk.core.catalog import entry_kv_cache_bytes, parse_catalog
from meshdesk.core.download_choice import MeshModel, NodeSide, choose_download, wanted_from
from meshdesk.core.gossip_values import MembershipError
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.node_record import NodeRecord
from meshdesk.core.planning import (MESH_CONTEXT, SOLO, SPLIT, Candidate, ModelNeeds, member_needed_bytes,
                                    needed_bytes, plan_model)
from meshdesk.core.serving_plan import plan_serving
from meshdesk.node.model_inventory import ModelInventory

GB = 10**9
MIB = 2**20
DIGEST = "cd" * 32
# Qwen2.5-14B-Instruct Q4_K_M: 48 layers, 8 KV heads of 128: 196608 bytes a token, 3.2 GB at 16k
QWEN_14B = ModelNeeds("Qwen2.5-14B-Instruct-Q4_K_M", 8_988_110_976, 48, 196_608, 16384)
QWEN_14B_ADVERT = ModelAdvert("Qwen2.5-14B-Instruct-Q4_K_M.gguf", 8_988_110_976, DIGEST, 48,
                              context_length=32768, kv_bytes_per_token=196_608)
ROOM_FOR_WEIGHTS = 11 * GB  # 9.9 GB of weights with the margin fit; 13.1 GB with the KV do not


def write_gguf(path: Path, *, heads=8, kv_heads: int | list | None = 2, key_length=None, value_length=None,
               arch="llama") -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(4)
    writer.add_context_length(2048)
    writer.add_embedding_length(256)  # head size 256 / 8 = 32 when the lengths are not written
    if heads is not None:
        writer.add_head_count(heads)
    if isinstance(kv_heads, list):
        writer.add_array(f"{arch}.attention.head_count_kv", kv_heads)
    elif kv_heads is not None:
        writer.add_head_count_kv(kv_heads)
    if key_length is not None:
        writer.add_key_length(key_length)
    if value_length is not None:
        writer.add_value_length(value_length)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---------------------------------------------------------------- from the GGUF header


def test_the_bundled_gemma_needs_what_llama_cpp_allocates(default_model_path):
    # llama.cpp 0.3.36 at n_ctx 16384 logs a 48 MiB global and a 240 MiB SWA cache (swa_full)
    assert read_kv_bytes_per_token(default_model_path) * 16384 == (48 + 240) * MIB
    catalog = parse_catalog((Path(__file__).parents[1] / "meshdesk/core/catalog.json").read_text())
    gemma = catalog.resolve("gemma-3-270m")
    assert read_kv_bytes_per_token(default_model_path) * 16384 == entry_kv_cache_bytes(gemma, 16384)


@pytest.mark.parametrize("options, per_token", [
    ({}, 4 * 2 * (32 + 32) * 2),                                          # GQA, head size from the width
    ({"kv_heads": None}, 4 * 8 * (32 + 32) * 2),                          # no KV heads written: all heads
    ({"key_length": 48, "value_length": 16}, 4 * 2 * (48 + 16) * 2),      # lengths as written
    ({"kv_heads": [2, 0, 2, 0]}, 4 * 8 * (32 + 32) * 2),                  # per-layer heads: an upper bound
    ({"heads": None, "kv_heads": None}, None),                             # no attention: not known
])
def test_kv_bytes_per_token_from_the_header(tmp_path, options, per_token):
    assert read_kv_bytes_per_token(write_gguf(tmp_path / "m.gguf", **options)) == per_token


def test_the_node_describes_its_files_for_the_advert(tmp_path, default_model_path):
    assert describe_model(default_model_path) == {"layers": 18, "context_length": 32768, "kv_bytes_per_token": 18432}
    models = tmp_path / "models"
    models.mkdir()
    write_gguf(models / "tiny.gguf")
    inventory = ModelInventory(tmp_path, [models], [], describe_model)
    inventory.scan()
    (advert,) = inventory.public_models()
    assert (advert.layers, advert.context_length, advert.kv_bytes_per_token) == (4, 2048, 1024)
    assert advert.needs() == ModelNeeds("tiny", advert.size, 4, 1024, 2048)


# ---------------------------------------------------------------- the advert


def test_the_advert_carries_the_kv_and_the_mesh_context_is_capped_at_the_trained_one():
    wire = QWEN_14B_ADVERT.to_wire()
    assert (wire["context_length"], wire["kv_bytes_per_token"]) == (32768, 196_608)
    assert ModelAdvert.from_wire(json.loads(json.dumps(wire))) == QWEN_14B_ADVERT
    assert QWEN_14B_ADVERT.needs() == QWEN_14B
    short = ModelAdvert("s.gguf", 1, DIGEST, 30, context_length=8192, kv_bytes_per_token=23040)
    assert short.needs().context == 8192 and short.needs().kv_bytes == 8192 * 23040
    assert MESH_CONTEXT == DEFAULT_CONTEXT  # the planner assumes what a host runs by default


def test_an_advert_without_the_kv_reads_and_re_signs_the_same():
    older = {"name": "m.gguf", "size": 5, "digest": DIGEST, "layers": 2, "wanted": False, "split": False,
             "tensor_split": None}
    advert = ModelAdvert.from_wire(older)
    assert advert.to_wire() == older  # what an earlier protocol-4 build signed, byte for byte
    assert advert.needs() == ModelNeeds("m", 5, 2, 0, MESH_CONTEXT) and advert.needs().kv_bytes == 0
    record = NodeRecord(node_id="A", name="A", addresses=(), capacity_bytes=1, models=(advert,), serving=None,
                        role="standby", versions={}, rtt_ms={}, public_key="", generation=1).to_wire()
    assert NodeRecord.from_wire(json.loads(json.dumps(record))).to_wire() == record


@pytest.mark.parametrize("field, value", [
    ("kv_bytes_per_token", -1), ("kv_bytes_per_token", 1 << 27), ("kv_bytes_per_token", True),
    ("kv_bytes_per_token", 1.5), ("kv_bytes_per_token", "1"), ("context_length", 1 << 25), ("context_length", -5),
])
def test_an_advert_with_a_bad_kv_field_is_refused(field, value):
    with pytest.raises(MembershipError, match=field):
        ModelAdvert.from_wire({**QWEN_14B_ADVERT.to_wire(), field: value})


# ---------------------------------------------------------------- the plans


def test_needs_count_the_kv_cache_at_the_context():
    assert needed_bytes(QWEN_14B) == pytest.approx(8_988_110_976 * 1.1 + 196_608 * 16384)
    assert needed_bytes(ModelNeeds("m", 10 * GB, 40)) == pytest.approx(11 * GB)  # unknown KV: the margin


def test_room_for_the_weights_but_not_the_kv_is_no_solo_host():
    plan = plan_model(QWEN_14B, [Candidate("a", ROOM_FOR_WEIGHTS, {}), Candidate("b", 8 * GB, {})])
    assert plan.state == SPLIT and plan.host == "a"
    assert plan_model(QWEN_14B, [Candidate("a", int(13.2 * GB), {}), Candidate("b", 8 * GB, {})]).state == SOLO


def test_a_split_gives_each_member_its_share_of_the_kv():
    plan = plan_model(QWEN_14B, [Candidate("a", ROOM_FOR_WEIGHTS, {}), Candidate("b", 4 * GB, {})])
    members = {member.node_id: member for member in plan.members}
    assert plan.state == SPLIT and [m.layers for m in plan.members] == [13, 35]  # b, then host a
    capacity = {"a": ROOM_FOR_WEIGHTS, "b": 4 * GB}
    for node_id, member in members.items():
        part = member_needed_bytes(QWEN_14B, member.layers)
        kv_part = QWEN_14B.kv_bytes * member.layers / 48
        assert part == pytest.approx(8_988_110_976 * 1.1 * member.layers / 48 + kv_part)
        assert part <= capacity[node_id] * 1.01  # whole layers: within one layer of its capacity
    # the members' parts add up to the whole model with its cache
    assert sum(member_needed_bytes(QWEN_14B, m.layers) for m in plan.members) == pytest.approx(needed_bytes(QWEN_14B))


def test_the_mesh_plans_no_solo_replica_on_a_node_without_room_for_the_kv():
    wanted = [WantedModel(DIGEST, QWEN_14B)]
    nodes = [MeshNode("a", 20 * GB, frozenset({DIGEST}), DIGEST, {}),
             MeshNode("b", ROOM_FOR_WEIGHTS, frozenset({DIGEST}), None, {})]
    assert [(plan.host, plan.state) for plan in plan_mesh(nodes, wanted)[DIGEST]] == [("a", SOLO)]


def test_gossiped_adverts_plan_with_the_kv():
    def record(node_id, capacity, wanted):
        return NodeRecord(node_id=node_id, name=node_id, addresses=(), capacity_bytes=capacity,
                          models=(ModelAdvert.from_wire({**QWEN_14B_ADVERT.to_wire(), "wanted": wanted}),),
                          serving=DIGEST if wanted else None, role="standby", versions={}, rtt_ms={},
                          public_key="", generation=1)
    plans = plan_serving([record("A", ROOM_FOR_WEIGHTS, True), record("B", ROOM_FOR_WEIGHTS, False)]).plans[DIGEST]
    assert [(plan.state, plan.member_ids()) for plan in plans] == [(SPLIT, ("B", "A"))]


def test_a_node_with_room_for_the_weights_only_downloads_nothing_to_host_solo():
    catalog = parse_catalog((Path(__file__).parents[1] / "meshdesk/core/catalog.json").read_text())
    side = NodeSide(capacity_bytes=ROOM_FOR_WEIGHTS, free_disk_bytes=100 * GB, files={}, serving=False)
    record = NodeRecord(node_id="A", name="A", addresses=(), capacity_bytes=1, models=(QWEN_14B_ADVERT,),
                        serving=None, role="standby", versions={}, rtt_ms={}, public_key="", generation=1)
    (model,) = wanted_from({DIGEST: ()}, [record])
    assert model.kv_bytes == 196_608 * 16384
    assert choose_download([model], side, catalog).download is None
    without_kv = MeshModel(model.name, model.size, DIGEST, 48)
    assert choose_download([without_kv], side, catalog).download is not None


def test_meshdesk_models_labels_a_local_file_with_the_kv_the_planner_counts(default_model_path):
    from meshdesk.app.model_listing import Capacity, local_row
    from meshdesk.core.catalog import FITS_HERE, TOO_LARGE

    needs = ModelNeeds("gemma", default_model_path.stat().st_size, 18, 18432, 16384)
    row = local_row(default_model_path, Capacity(int(needed_bytes(needs)) + 1, None, None))
    assert row["kv_cache_bytes"] == 18432 * 16384 and row["fit_here"] == FITS_HERE
    assert local_row(default_model_path, Capacity(int(needed_bytes(needs)) - 1, None, None))["fit_here"] == TOO_LARGE
