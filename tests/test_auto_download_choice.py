"""The pure rule that picks the catalog model a node downloads to serve solo."""

from __future__ import annotations

import pytest

from meshdesk.app.model_choice import bundled_catalog
from meshdesk.core.download_choice import (DOWNLOADING, DownloadStatus, MeshModel, NodeSide, choose_download,
                                           wanted_from)
from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.planning import SOLO, WAITING, Plan, PlanMember
from meshdesk.core.status import StatusSnapshot

GB = 10**9
CATALOG = bundled_catalog()
SMALL = MeshModel("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", 491_400_032, "a" * 64, 24)
MID = MeshModel("Qwen2.5-1.5B-Instruct-Q4_K_M.gguf", 1_117_320_736, "b" * 64, 28)
BIG = MeshModel("Qwen2.5-72B-Instruct-Q4_K_M.gguf", 47_415_715_040, "c" * 64, 80)


def node(**changes) -> NodeSide:
    values = dict(capacity_bytes=8 * GB, free_disk_bytes=100 * GB, files={}, serving=False)
    return NodeSide(**{**values, **changes})


def chosen(wanted, side=None):
    choice = choose_download(wanted, side or node(), CATALOG)
    return None if choice.download is None else choice.download.local_file


def test_a_wanted_catalog_model_that_fits_is_downloaded_from_its_repo():
    download = choose_download([SMALL], node(), CATALOG).download
    assert download.repo == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    assert download.remote_file == "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert download.local_file == SMALL.name and download.quant == "Q4_K_M" and download.model == SMALL


def test_the_least_served_model_comes_first_then_wanted_order():
    served = MeshModel(SMALL.name, SMALL.size, SMALL.digest, hosts=2)
    assert chosen([served, MID]) == MID.name
    assert chosen([SMALL, MID]) == SMALL.name


@pytest.mark.parametrize("side", [node(serving=True), node(disabled=True), node(capacity_bytes=0)],
                         ids=["serves already", "--no-download or --client", "offers nothing"])
def test_a_node_that_serves_or_may_not_download_takes_nothing(side):
    assert choose_download([SMALL], side, CATALOG).download is None


def test_nothing_is_downloaded_when_a_wanted_model_is_already_on_disk():
    assert chosen([SMALL, MID], node(files={"anything.gguf": MID.digest})) is None


def test_models_the_catalog_does_not_know_by_name_are_never_downloaded():
    assert chosen([MeshModel("my-own-finetune.gguf", 1000, "d" * 64)]) is None
    assert chosen([MeshModel("gemma-3-270m-q4_k_m.gguf", 1000, "d" * 64)]) is None  # bundled: no repo
    lower = MeshModel(SMALL.name.lower(), SMALL.size, SMALL.digest)  # any letter case: one name
    assert chosen([lower]) == SMALL.name


def test_a_model_too_large_for_this_node_alone_or_forced_to_split_is_left_to_a_split():
    assert chosen([BIG]) is None
    assert chosen([SMALL], node(capacity_bytes=SMALL.size)) is None  # needs its bytes x 1.1
    forced = MeshModel(SMALL.name, SMALL.size, SMALL.digest, force_split=True)
    assert chosen([forced, MID]) == MID.name


def test_not_enough_disk_space_blocks_it_with_a_clear_reason_and_another_may_go():
    choice = choose_download([MID, SMALL], node(free_disk_bytes=600_000_000), CATALOG)
    assert choice.download.local_file == SMALL.name
    assert choice.blocked == ((MID.name, f"not enough disk space to download {MID.name}: it needs 1.1 GB, "
                                         "only 600.0 MB free"),)


def test_a_partial_download_counts_toward_the_space_it_needs():
    side = node(free_disk_bytes=100_000_000, partial_bytes={SMALL.name: SMALL.size - 50_000_000})
    assert chosen([SMALL], side) == SMALL.name
    assert chosen([SMALL], node(free_disk_bytes=100_000_000)) is None


def test_a_file_of_that_name_with_another_digest_is_never_replaced_or_mixed():
    choice = choose_download([SMALL], node(files={SMALL.name: "e" * 64}), CATALOG)
    assert choice.download is None and "a different file named" in choice.blocked[0][1]


def test_a_refused_digest_stays_refused_with_its_reason():
    choice = choose_download([SMALL, MID], node(refused={SMALL.digest: "not the mesh's model"}), CATALOG)
    assert choice.download.local_file == MID.name and choice.blocked == ((SMALL.name, "not the mesh's model"),)


class Record:
    def __init__(self, *models):
        self.models = models


def test_wanted_models_come_from_the_plan_described_by_adverts_with_their_host_counts():
    advert = ModelAdvert(SMALL.name, SMALL.size, SMALL.digest, 24, wanted=True, split=True)
    plans = {SMALL.digest: (Plan("m", "n1", SOLO, (PlanMember("n1", 1.0, 24),)),
                            Plan("m", "n2", SOLO, (PlanMember("n2", 1.0, 24),))),
             MID.digest: (Plan("x", None, WAITING, (), "too little capacity"),),
             "f" * 64: ()}
    mid = ModelAdvert(MID.name, MID.size, MID.digest)
    found = wanted_from(plans, [Record(advert), Record(mid)])
    assert found == [MeshModel(SMALL.name, SMALL.size, SMALL.digest, 24, True, 2),
                     MeshModel(MID.name, MID.size, MID.digest, 1, False, 0)]  # "f"*64: nobody has it


def test_the_download_status_travels_in_api_status_and_reads_back():
    status = DownloadStatus(SMALL.name, DOWNLOADING, 1000, 4000)
    assert status.percent == 25
    assert DownloadStatus.from_wire(status.to_wire()) == status
    assert DownloadStatus.from_wire(None) is None
    with pytest.raises(ValueError, match="state 'sideways'"):
        DownloadStatus.from_wire({**status.to_wire(), "state": "sideways"})
    assert "download" in StatusSnapshot.__dataclass_fields__
