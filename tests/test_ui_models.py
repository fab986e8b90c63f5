"""The Models tab: its table as a pure function of (listing, snapshot, downloads), and the view
against it (pytest-qt, offscreen): rows, buttons per row, intents, progress bars."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshdesk.ui.model_table import (COMFORTABLE, SNUG, STOPPING, TOO_BIG, DownloadProgress, capacities, mesh_fit,
                                     model_table)
from meshdesk.ui.models_view import ModelsView
from meshdesk.ui.text import DASH
from meshdesk.core.states import Liveness
from meshdesk.core.status import OfferStatus
from tests.test_ui_snapshots import GB, QWEN, solo, split, starting

DRAFT = "Qwen2.5-0.5B-Instruct"


def catalog_row(name: str, size: int, kv: int, path: str | None = None, partial: int = 0,
                draft: str | None = None, moe: bool = False, bundled: bool = False) -> dict:
    """A row as `app.model_listing.model_rows` lists a catalog entry."""
    return {"name": name, "aliases": [], "in_catalog": True, "bundled": bundled, "quant": "Q4_K_M",
            "quants": ["Q4_K_M"], "size_bytes": size, "kv_cache_bytes": kv, "draft": draft, "moe": moe,
            "downloaded": path is not None or bundled, "path": path, "partial_bytes": partial}


def listing() -> list[dict]:
    """Catalog entries (real sizes) in every state, then two files the catalog does not know."""
    return [
        catalog_row("Gemma-3-270M", 253_113_024, 75_497_472, "/models/gemma-3-270m-q4_k_m.gguf", bundled=True),
        catalog_row(DRAFT, 491_400_032, 50_331_648, f"/models/{DRAFT}-Q4_K_M.gguf"),
        catalog_row("Qwen2.5-7B-Instruct", 4_683_073_952, 234_881_024, partial=1_873_300_000, draft=DRAFT),
        catalog_row("Qwen2.5-32B-Instruct", 19_851_336_256, GB, f"/models/{QWEN}.gguf", draft=DRAFT),
        catalog_row("Llama-3.3-70B-Instruct", 42_520_397_632, 1_342_177_280, draft="Llama-3.2-1B-Instruct"),
        catalog_row("Qwen2.5-72B-Instruct", 47_415_715_040, 1_342_177_280, draft=DRAFT),
        catalog_row("GLM-4.7-Flash", 18_312_339_776, 443_547_648, moe=True),
        {"name": "my-finetune-Q5_K_M", "aliases": [], "in_catalog": False, "bundled": False, "quant": "Q5_K_M",
         "size_bytes": 5_400_000_000, "draft": None, "downloaded": True, "path": "/models/my-finetune-Q5_K_M.gguf",
         "kv_cache_bytes": 268_435_456, "layers": 28, "context_length": 32768, "moe": False},
        {"name": "broken", "aliases": [], "in_catalog": False, "bundled": False, "quant": None, "size_bytes": 1024,
         "draft": None, "downloaded": True, "path": "/models/broken.gguf", "error": "not a GGUF file",
         "fit_here": None, "fit_mesh": None, "fit": None},
    ]


def by_name(rows):
    return {row.name: row for row in rows}


# --- the table (pure) -----------------------------------------------------------------------


def test_each_row_says_what_is_on_disk_where_it_fits_and_what_serves_it():
    rows = model_table(listing(), split(), {})  # this node offers 24 GB; the mesh 48 GB
    assert [row.cells()[4:] for row in rows] == [
        ("built in", "fits here", "comfortable", DASH),
        ("yes", "fits here", "comfortable", DASH),
        ("partial 40%", "fits here", "comfortable", DASH),
        ("yes", "fits here", "comfortable", "ready"),  # 21.3 GB of 48: under three quarters
        ("no", "too large", "snug", DASH),              # 44.8 GB of 48
        ("no", "too large", "too big", DASH),           # 49.8 GB of 48
        ("no", "fits here", "comfortable", DASH),
        ("local", "fits here", "comfortable", DASH),
        ("unreadable", DASH, DASH, DASH),
    ]
    assert [row.draft for row in rows][2:7] == [DRAFT, DRAFT, "Llama-3.2-1B-Instruct", DRAFT, "none (MoE)"]
    assert (rows[3].quant, rows[3].size, rows[7].quant, rows[8].quant) == ("Q4_K_M", "18.5 GB", "Q5_K_M", DASH)


def test_each_row_offers_only_the_actions_that_make_sense():
    rows = by_name(model_table(listing(), split(), {}))

    def actions(name):
        row = rows[name]
        return {action for action in ("download", "resume", "cancel", "serve", "drop")
                if getattr(row, f"can_{action}")}
    assert actions("Gemma-3-270M") == {"serve"} and actions(DRAFT) == {"serve"}
    assert actions("Qwen2.5-7B-Instruct") == {"resume"}
    assert actions("Qwen2.5-32B-Instruct") == {"drop"}  # served already
    assert actions("Llama-3.3-70B-Instruct") == {"download"}
    assert actions("my-finetune-Q5_K_M") == {"serve"} and actions("broken") == set()
    assert rows["Qwen2.5-32B-Instruct"].model_id == QWEN
    assert rows[DRAFT].serve_target == f"/models/{DRAFT}-Q4_K_M.gguf"
    assert rows["Llama-3.3-70B-Instruct"].draft_name == "Llama-3.2-1B-Instruct"


def test_a_running_download_replaces_the_disk_state_and_can_be_cancelled():
    downloads = {"Llama-3.3-70B-Instruct": DownloadProgress("Llama-3.3-70B-Instruct", 17_008_159_053, 42_520_397_632),
                 "Qwen2.5-7B-Instruct": DownloadProgress("Qwen2.5-7B-Instruct", 2 * GB, 4 * GB, STOPPING)}
    rows = by_name(model_table(listing(), split(), downloads))
    llama, qwen = rows["Llama-3.3-70B-Instruct"], rows["Qwen2.5-7B-Instruct"]
    assert (llama.on_disk, llama.progress, llama.can_cancel, llama.can_download) == ("downloading 40%", 40, True, False)
    assert (qwen.on_disk, qwen.can_cancel, qwen.can_resume) == ("stopping…", False, False)
    assert DownloadProgress("x").percent == 0 and DownloadProgress("x", 5, 5).percent == 100


@pytest.mark.parametrize("model, kv, pooled, label", [
    (10 * GB, 0, 16 * GB, COMFORTABLE),                  # 11 GB needed: 69% of the pool
    (10 * GB, GB, 16 * GB, COMFORTABLE),                 # 12 GB: exactly three quarters
    (10 * GB, GB + 1, 16 * GB, SNUG),
    (10 * GB, 2 * GB, 13 * GB, SNUG),                    # 13 GB: the whole pool
    (10 * GB, 2 * GB, 13 * GB - 1, TOO_BIG),
    (40 * GB, 2 * GB, 48 * GB, SNUG),                    # the KV cache counts: 46 of 48 GB
    (40 * GB, 5 * GB, 48 * GB, TOO_BIG),
    (GB, 0, 0, TOO_BIG),                                 # nothing pooled (a lite client alone)
    (0, 0, 0, TOO_BIG),
])
def test_mesh_fit_labels(model, kv, pooled, label):
    assert mesh_fit(model, kv, pooled) == label


def test_fit_follows_the_offer_and_the_live_peers():
    capped = replace(split(), offer=OfferStatus(24 * GB, 4 * GB, donating=True, capacity_bytes=4 * GB))
    assert capacities(capped) == (4 * GB, 28 * GB)
    rows = by_name(model_table(listing(), capped, {}))
    assert (rows["Qwen2.5-32B-Instruct"].fit_here, rows["Qwen2.5-32B-Instruct"].fit_mesh) == ("too large", "snug")
    first, *others = split().peers
    gone = replace(split(), peers=(replace(first, state=Liveness.DEAD), *others))
    assert capacities(gone) == (24 * GB, 32 * GB)


def test_a_new_model_asked_for_but_not_planned_yet_says_so():
    rows = by_name(model_table(listing(), replace(solo(), wants=("gemma-3-270m-q4_k_m", f"{DRAFT}-Q4_K_M")), {}))
    assert (rows[DRAFT].serving, rows[DRAFT].can_drop, rows[DRAFT].can_serve) == ("asked", True, False)
    assert rows["Gemma-3-270M"].serving == "ready"


def test_odd_listings_read_as_dashes():
    rows = model_table([{"name": "x"}, "junk", {}], starting(), {})
    assert [row.cells() for row in rows] == [("x", DASH, DASH, DASH, "no", DASH, DASH, DASH),
                                              (DASH, DASH, DASH, DASH, "no", DASH, DASH, DASH)]
    assert not any(row.can_download or row.can_serve for row in rows)


# --- the view -------------------------------------------------------------------------------


def models_view(qtbot, snapshot=None) -> ModelsView:
    view = ModelsView()
    qtbot.addWidget(view)
    view.show_status(snapshot or split())
    return view


def select(view: ModelsView, name: str) -> None:
    view.table.selectRow([row.name for row in view.rows].index(name))


def enabled(view: ModelsView) -> set[str]:
    return {text for text, button in view.buttons.items() if button.isEnabled()}


def test_the_view_lists_served_and_peer_models_and_waits_for_the_folder(qtbot):
    view = models_view(qtbot)
    assert view.local.rowCount() == 1 and view.local.item(0, 0).text() == QWEN
    assert view.peers.rowCount() == 2 and view.peers.item(1, 1).text() == "carol-laptop"
    assert not view.looking.isHidden() and view.table.rowCount() == 0 and not enabled(view)
    view.show_catalog(listing())
    assert view.looking.isHidden() and view.table.rowCount() == len(listing())
    assert view.table.item(4, 6).text() == "snug" and view.table.item(3, 7).text() == "ready"
    assert view.table.horizontalHeaderItem(6).text() == "This mesh"
    assert "three quarters" in view.table.horizontalHeaderItem(6).toolTip()
    colours = {view.table.item(row, 6).text(): view.table.item(row, 6).foreground().color().name()
               for row in range(view.table.rowCount())}
    assert colours == {"comfortable": "#1f7a3a", "snug": "#8a5a00", "too big": "#b3261e", DASH: "#000000"}


def test_buttons_follow_the_selected_row_and_send_its_intent(qtbot):
    view = models_view(qtbot)
    view.show_catalog(listing())
    sent = []
    for signal in ("download_requested", "resume_requested", "cancel_requested", "serve_requested",
                   "drop_requested"):
        getattr(view, signal).connect(lambda *arguments, s=signal: sent.append((s, *arguments)))
    select(view, "Llama-3.3-70B-Instruct")
    assert enabled(view) == {"Download"} and view.with_draft.isEnabled()
    view.with_draft.setChecked(True)
    view.buttons["Download"].click()
    select(view, "Qwen2.5-7B-Instruct")
    assert enabled(view) == {"Resume"}
    view.buttons["Resume"].click()
    select(view, DRAFT)
    assert enabled(view) == {"Serve"} and not view.with_draft.isEnabled()
    view.buttons["Serve"].click()
    select(view, "Qwen2.5-32B-Instruct")
    view.buttons["Drop"].click()
    view.buttons["Serve"].click()  # disabled: nothing sent
    assert sent == [("download_requested", "Llama-3.3-70B-Instruct", True),
                    ("resume_requested", "Qwen2.5-7B-Instruct"),
                    ("serve_requested", f"/models/{DRAFT}-Q4_K_M.gguf"), ("drop_requested", QWEN)]


def test_a_progress_bar_per_running_download_and_a_one_line_message(qtbot):
    view = models_view(qtbot)
    view.show_catalog(listing())
    select(view, "Llama-3.3-70B-Instruct")
    cancelled = []
    view.cancel_requested.connect(cancelled.append)
    view.show_downloads({"Llama-3.3-70B-Instruct": DownloadProgress("Llama-3.3-70B-Instruct", 1, 4),
                         "Qwen2.5-7B-Instruct": DownloadProgress("Qwen2.5-7B-Instruct", 3, 4)})
    bars = view.progress_bars
    assert {name: bar.value() for name, bar in bars.items()} == {"Llama-3.3-70B-Instruct": 25,
                                                                 "Qwen2.5-7B-Instruct": 75}
    assert bars["Llama-3.3-70B-Instruct"].text() == "Llama-3.3-70B-Instruct: 25%"
    assert enabled(view) == {"Cancel"} and view.table.item(4, 4).text() == "downloading 25%"
    view.buttons["Cancel"].click()
    assert cancelled == ["Llama-3.3-70B-Instruct"]
    view.show_downloads({"Qwen2.5-7B-Instruct": DownloadProgress("Qwen2.5-7B-Instruct", 4, 4)})
    assert list(view.progress_bars) == ["Qwen2.5-7B-Instruct"] and enabled(view) == {"Download"}
    view.show_message("the hub refused it")
    assert view.message.text() == "the hub refused it"


def busy(snapshot, generating: int, queued: int, parallel: int | None):
    """`snapshot` with its hosted model answering `generating` of `parallel` and `queued` waiting."""
    model = replace(snapshot.models[0], generating=generating, queued=queued, parallel=parallel)
    return replace(snapshot, models=(model, *snapshot.models[1:]))


def test_the_serving_cell_shows_the_answers_in_progress_and_the_queue(qtbot):
    view = models_view(qtbot, busy(split(), generating=3, queued=2, parallel=8))
    view.show_catalog(listing())
    assert view.table.item(3, 7).text() == "ready · answering 3 of 8 · 2 waiting"
    view.show_status(busy(split(), generating=1, queued=0, parallel=None))  # an older node: no cap said
    assert view.table.item(3, 7).text() == "ready · answering 1"
    view.show_status(split())  # idle again
    assert view.table.item(3, 7).text() == "ready"
