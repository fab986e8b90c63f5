"""The model advert: what a node gossips about each model file, as older nodes wrote it too."""

from __future__ import annotations

import json

import pytest

from meshdesk.core.gossip_values import MembershipError
from meshdesk.core.model_advert import ModelAdvert, file_stem

DIGEST = "ab" * 32

# What nodes before the typed advert put in their records (the inventory's dict, and the same
# with the split options of a model they asked the mesh to serve).
OLDER_ON_DISK = {"name": "gemma-3-270m.gguf", "size": 253_000_000, "digest": DIGEST, "layers": 18}
OLDER_WANTED = {**OLDER_ON_DISK, "wanted": True, "split": False, "tensor_split": [1, 2.5]}


def test_an_older_nodes_advert_reads_with_the_same_meaning():
    on_disk = ModelAdvert.from_wire(OLDER_ON_DISK)
    assert on_disk == ModelAdvert("gemma-3-270m.gguf", 253_000_000, DIGEST, 18)
    assert not on_disk.wanted and not on_disk.force_split and on_disk.tensor_split is None
    wanted = ModelAdvert.from_wire(OLDER_WANTED)
    assert wanted.wanted and wanted.tensor_split == (1.0, 2.5) and wanted.force_split


def test_the_wire_keeps_the_older_field_names_and_values():
    wire = ModelAdvert.from_wire(OLDER_WANTED).to_wire()
    assert wire == {**OLDER_WANTED, "tensor_split": [1.0, 2.5]}
    assert {key: wire[key] for key in OLDER_ON_DISK} == OLDER_ON_DISK
    on_disk = ModelAdvert.from_wire(OLDER_ON_DISK).to_wire()
    assert on_disk == {**OLDER_ON_DISK, "wanted": False, "split": False, "tensor_split": None}


def test_an_advert_round_trips_through_json():
    advert = ModelAdvert("a.b.gguf", 7, DIGEST, None, wanted=True, split=True, tensor_split=(0.0, 3.0))
    assert ModelAdvert.from_wire(json.loads(json.dumps(advert.to_wire()))) == advert


def test_unknown_fields_are_ignored_so_later_versions_can_add_some():
    assert ModelAdvert.from_wire({**OLDER_ON_DISK, "quantization": "Q4_K_M"}) == ModelAdvert.from_wire(OLDER_ON_DISK)


@pytest.mark.parametrize("name, model_id", [
    ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"), ("a.b.gguf", "a.b"), ("model", "model"),
    (".hidden", ".hidden"), ("dir/x.gguf", "x"),
])
def test_the_model_id_is_the_file_stem(name, model_id):
    assert ModelAdvert(name, 1, DIGEST).model_id == model_id == file_stem(name)


def test_split_options():
    assert ModelAdvert("m.gguf", 1, DIGEST, wanted=True, split=True).force_split
    assert ModelAdvert("m.gguf", 1, DIGEST, wanted=True, tensor_split=[]).tensor_split is None


@pytest.mark.parametrize("changes, problem", [
    ({"size": -1}, "model size is out of range"),
    ({"size": 1.5}, "model size must be an integer"),
    ({"name": ""}, "model name is empty"),
    ({"digest": 5}, "model digest must be a string"),
    ({"layers": -2}, "model layers is out of range"),
    ({"layers": True}, "model layers must be an integer"),
    ({"wanted": 1}, "model wanted must be true or false"),
    ({"tensor_split": [1, "2"]}, "tensor_split ratio must be a number"),
    ({"tensor_split": [float("nan")]}, "tensor_split ratio must be finite and not negative"),
    ({"tensor_split": "1,2"}, "tensor_split must be a list"),
])
def test_a_bad_field_is_refused_in_one_line(changes, problem):
    with pytest.raises(MembershipError) as caught:
        ModelAdvert.from_wire({**OLDER_WANTED, **changes})
    assert str(caught.value) == problem


@pytest.mark.parametrize("junk", [None, [], "x", {"name": "x.gguf", "size": 1}])
def test_junk_is_refused(junk):
    with pytest.raises(MembershipError):
        ModelAdvert.from_wire(junk)
