"""The model catalog: its data, name resolution, fit labels, `--model NAME` and `meshdesk models`."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from meshdesk.adapters.api_token import load_or_create_token
from meshdesk.app.model_choice import ModelChoiceError, bundled_catalog, choose_model
from meshdesk.core.catalog import (
    FITS_HERE, FITS_MESH, TOO_LARGE, CatalogError, entry_kv_cache_bytes, fit_label, kv_cache_bytes, parse_catalog)
from tests.hub_stand_in import write_tiny_gguf
from tests.nodes import run_meshdesk
from tests.test_ui_snapshots import GB as GIB, peer_wire, solo_wire

GB = 10 ** 9
CATALOG_FILE = Path(__file__).parent.parent / "meshdesk" / "core" / "catalog.json"

# The seed's table of tested draft pairings, with its sizes (GB) as ranges.
SEED_PAIRINGS = {
    "Qwen2.5-3B-Instruct": ("Qwen2.5-0.5B-Instruct", 1.5, 3),
    "Qwen2.5-7B-Instruct": ("Qwen2.5-0.5B-Instruct", 4, 6),
    "Qwen2.5-14B-Instruct": ("Qwen2.5-0.5B-Instruct", 8, 10),
    "Qwen2.5-32B-Instruct": ("Qwen2.5-0.5B-Instruct", 18, 22),
    "Qwen2.5-72B-Instruct": ("Qwen2.5-0.5B-Instruct", 44, 50),
    "Qwen2.5-Coder-32B-Instruct": ("Qwen2.5-0.5B-Instruct", 18, 22),
    "Qwen3-32B": ("Qwen3-0.6B", 18, 22),
    "Llama-3.3-70B-Instruct": ("Llama-3.2-1B-Instruct", 40, 45),
    "Gemma-3-27B-it": ("Gemma-3-1B-it", 15, 18),
    "GLM-4.7-Flash": (None, 16, 19),
}


def test_the_shipped_catalog_is_valid_and_read_from_the_package():
    assert bundled_catalog() == parse_catalog(CATALOG_FILE.read_text())
    assert len(bundled_catalog().entries) >= 17


@pytest.mark.parametrize("name", SEED_PAIRINGS)
def test_the_seed_table_is_covered_with_its_draft_pairings(name):
    catalog = bundled_catalog()
    draft_name, low_gb, high_gb = SEED_PAIRINGS[name]
    entry = catalog.resolve(name)
    assert entry is not None and entry.name == name
    assert low_gb * GB <= entry.size_bytes <= high_gb * GB
    draft = catalog.draft_for(entry)
    assert (draft.name if draft else None) == draft_name
    if draft is not None:
        assert draft.size_bytes < 1 * GB and draft.draft is None
        assert draft.layers < entry.layers
    assert entry.repo and entry.default_quant.name == "Q4_K_M"
    assert entry.default_quant.file.endswith(".gguf")


def test_glm_is_a_mixture_of_experts_without_a_draft_and_the_default_is_bundled():
    catalog = bundled_catalog()
    glm = catalog.resolve("GLM-4.7-Flash")
    assert glm.moe and glm.draft is None
    default = catalog.resolve("default")
    assert default.bundled and default.repo is None and default.draft is None
    assert default.local_file() == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert sum(not entry.moe for entry in catalog.entries) == len(catalog.entries) - 1


@pytest.mark.parametrize("spelling, expected", [
    ("32b", "Qwen2.5-32B-Instruct"),
    ("QWEN2.5-32B", "Qwen2.5-32B-Instruct"),
    ("  qwen2.5-32b-instruct ", "Qwen2.5-32B-Instruct"),
    ("Qwen2.5-32B-Instruct-Q4_K_M", "Qwen2.5-32B-Instruct"),       # the local file stem
    ("Qwen2.5-32B-Instruct-Q8_0.gguf", "Qwen2.5-32B-Instruct"),    # another quantization's file
    ("qwen2.5-0.5b-instruct-q4_k_m", "Qwen2.5-0.5B-Instruct"),     # the Hugging Face file stem
    ("google_gemma-3-27b-it-Q4_K_M", "Gemma-3-27B-it"),
    ("72B", "Qwen2.5-72B-Instruct"),
    ("3b", "Qwen2.5-3B-Instruct"),
    ("llama-3.2-3b", "Llama-3.2-3B-Instruct"),
    ("coder-32b", "Qwen2.5-Coder-32B-Instruct"),
    ("glm", "GLM-4.7-Flash"),
    ("GLM-4.7-Flash-Q4_K_M", "GLM-4.7-Flash"),
    ("default", "SmolLM2-135M-Instruct"),
    ("gemma-3-270m", "Gemma-3-270M"),
    ("32", None),
    ("qwen", None),
    ("", None),
])
def test_names_aliases_and_file_stems_resolve(spelling, expected):
    entry = bundled_catalog().resolve(spelling)
    assert (entry.name if entry else None) == expected


def test_local_files_carry_name_and_quantization():
    catalog = bundled_catalog()
    entry = catalog.resolve("32b")
    assert entry.local_file() == "Qwen2.5-32B-Instruct-Q4_K_M.gguf"
    assert entry.local_file("q8_0") == "Qwen2.5-32B-Instruct-Q8_0.gguf"
    assert catalog.by_local_file("qwen2.5-32b-instruct-q8_0.gguf") == (entry, "Q8_0")
    assert catalog.by_local_file("Qwen2.5-32B-Instruct-Q4_K_M.gguf.partial") is None
    with pytest.raises(CatalogError, match="no quantization Q2_K"):
        entry.local_file("Q2_K")


# --- validation -----------------------------------------------------------------------------

VALID = {"models": [
    {"name": "Big", "aliases": ["big"], "repo": "someone/Big-GGUF",
     "quants": {"Q4_K_M": {"file": "Big-Q4_K_M.gguf", "size_bytes": 20 * GB}},
     "layers": 64, "context_length": 32768, "kv_dim": 1024, "draft": "Small"},
    {"name": "Small", "repo": "someone/Small-GGUF",
     "quants": {"Q4_K_M": {"file": "Small-Q4_K_M.gguf", "size_bytes": GB // 2}},
     "layers": 24, "context_length": 32768, "kv_dim": 128},
]}


def broken(change) -> str:
    data = copy.deepcopy(VALID)
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    ("[]", '"models" list'),
    (broken(lambda d: d["models"][0].pop("repo")), "needs a Hugging Face repo"),
    (broken(lambda d: d["models"][0].pop("name")), "has no name"),
    (broken(lambda d: d["models"][0].update(layers=0)), "layers should be a positive integer"),
    (broken(lambda d: d["models"][0].update(kv_dim=True)), "kv_dim should be a positive integer"),
    (broken(lambda d: d["models"][0].update(moe="yes")), "moe should be a bool"),
    (broken(lambda d: d["models"][0].update(quants={})), "needs quants"),
    (broken(lambda d: d["models"][0]["quants"]["Q4_K_M"].update(size_bytes=-1)), "size_bytes"),
    (broken(lambda d: d["models"][0]["quants"]["Q4_K_M"].update(file="Big.bin")), "should be a .gguf file"),
    (broken(lambda d: d["models"][1].update(aliases=["BIG"])), "'big' means both Big and Small"),
    (broken(lambda d: d["models"][1].update(name="big")), "means both"),
    (broken(lambda d: d["models"][0].update(draft="Tiny")), "draft 'Tiny' is not in the catalog"),
    (broken(lambda d: d["models"][1].update(draft="Big")), "must be a plain model"),
    (broken(lambda d: d["models"].append("Qwen")), "catalog entry 2 is not an object"),
])
def test_a_malformed_catalog_is_one_clear_error(text, problem):
    with pytest.raises(CatalogError, match=problem) as caught:
        parse_catalog(text)
    assert "\n" not in str(caught.value)


def test_a_bundled_entry_needs_no_repo():
    data = copy.deepcopy(VALID)
    data["models"][1].pop("repo")
    data["models"][1]["bundled"] = True
    assert parse_catalog(json.dumps(data)).resolve("small").bundled


# --- fit ------------------------------------------------------------------------------------


def test_the_kv_cache_estimate_follows_its_formula():
    # 2 (K and V) x 64 layers x 4096 tokens x 1024 wide x 2 bytes = exactly 1 GiB
    assert kv_cache_bytes(64, 1024, 4096) == 1024 ** 3
    entry = bundled_catalog().resolve("32b")
    assert entry_kv_cache_bytes(entry, 4096) == 1024 ** 3
    assert entry_kv_cache_bytes(entry, 10 ** 6) == entry_kv_cache_bytes(entry, entry.context_length)


@pytest.mark.parametrize("model, kv, node, mesh, label", [
    (10 * GB, 0, 11 * GB, None, FITS_HERE),             # exactly the planner's 10% margin
    (10 * GB, 0, 11 * GB - 1, None, TOO_LARGE),
    (10 * GB, 2 * GB, 11 * GB, 40 * GB, FITS_MESH),     # the KV cache is over the margin
    (10 * GB, 2 * GB, 13 * GB, None, FITS_HERE),        # the margin and the KV cache, as the planner
    (10 * GB, 2 * GB, 13 * GB - 1, None, TOO_LARGE),
    (40 * GB, GB, 24 * GB, 48 * GB, FITS_MESH),
    (40 * GB, GB, 24 * GB, 44 * GB - 1, TOO_LARGE),
    (40 * GB, GB, 24 * GB, None, TOO_LARGE),
    (GB, 0, 0, 0, TOO_LARGE),
])
def test_fit_labels(model, kv, node, mesh, label):
    assert fit_label(model, kv, node, mesh) == label


# --- --model NAME ---------------------------------------------------------------------------


@pytest.fixture
def tiny_gguf_bytes(tmp_path_factory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", values=1024)


def test_a_catalog_name_that_is_not_downloaded_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelChoiceError) as caught:
        choose_model("32b", tmp_path / "models")
    assert str(caught.value) == "model 32b is not downloaded: run `meshdesk download 32b`"
    with pytest.raises(ModelChoiceError, match="unknown model 'no-such-model'"):
        choose_model("no-such-model", tmp_path / "models")


def test_a_catalog_name_finds_its_file_in_either_models_folder(tmp_path, monkeypatch, tiny_gguf_bytes):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".models").mkdir()
    (tmp_path / ".models" / "Qwen2.5-32B-Instruct-Q8_0.gguf").write_bytes(tiny_gguf_bytes)
    chosen = choose_model("QWEN2.5-32B", tmp_path / "models")
    assert chosen.path == tmp_path / ".models" / "Qwen2.5-32B-Instruct-Q8_0.gguf"
    assert chosen.id == "Qwen2.5-32B-Instruct-Q8_0"
    assert {"QWEN2.5-32B", "Qwen2.5-32B-Instruct", "32b"} <= set(chosen.aliases)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "Qwen2.5-32B-Instruct-Q4_K_M.gguf").write_bytes(tiny_gguf_bytes)
    assert choose_model("32b", tmp_path / "models").id == "Qwen2.5-32B-Instruct-Q4_K_M"  # the default first


def test_starting_with_a_model_not_downloaded_is_a_one_line_error(tmp_path):
    result = run_meshdesk("--home", str(tmp_path / "home"), "--headless", "--port", "0", "--model", "70b",
                          environment={"HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "meshdesk: error: model 70b is not downloaded: run `meshdesk download 70b`"]


# --- meshdesk models ------------------------------------------------------------------------


class StatusServer:
    """A running node's `/api/status`, as far as `meshdesk models` reads it."""

    def __init__(self, status: dict):
        body = json.dumps(status).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/api/status" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


def models_json(home: Path, user_home: Path, *options: str) -> dict:
    result = run_meshdesk("models", "--json", "--home", str(home), *options, environment={"HOME": str(user_home)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_models_lists_catalog_and_local_models_with_fit_for_node_and_mesh(tmp_path, tiny_gguf_bytes):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf").write_bytes(tiny_gguf_bytes)
    (home / "models" / "Qwen2.5-7B-Instruct-Q4_K_M.gguf.partial").write_bytes(b"x" * 1000)
    (tmp_path / ".models").mkdir()
    (tmp_path / ".models" / "my-own-model-Q5_K_M.gguf").write_bytes(tiny_gguf_bytes)

    alone = models_json(home, tmp_path, "--max-vram", "24")
    assert alone["mesh_capacity_bytes"] is None
    rows = {row["name"]: row for row in alone["models"]}
    assert rows["Qwen2.5-72B-Instruct"]["fit_here"] == TOO_LARGE and rows["Qwen2.5-72B-Instruct"]["fit_mesh"] is None
    assert rows["Qwen2.5-14B-Instruct"]["fit"] == FITS_HERE  # 32B's 16k-token KV cache takes it to 22.5 GiB

    server = StatusServer(solo_wire() | {
        "offer": {"measured_bytes": 24 * GIB, "cap_bytes": None, "donating": True, "capacity_bytes": 24 * GIB},
        "peers": [peer_wire("b2" * 10, "bob", "worker", 8, 3.0), peer_wire("c3" * 10, "carol", "standby", 8, 9.0)]})
    (home / "runtime.json").write_text(json.dumps({"api_port": server.port}))
    load_or_create_token(home)  # a running node keeps its API token in the home
    listing = models_json(home, tmp_path, "--max-vram", "8")
    server.server.shutdown()
    assert listing["node_capacity_bytes"] == 8 * 1024 ** 3
    assert listing["mesh_capacity_bytes"] == 40 * 1024 ** 3 and listing["mesh_members"] == 3
    rows = {row["name"]: row for row in listing["models"]}
    assert [rows[name]["fit"] for name in ("Qwen2.5-7B-Instruct", "Qwen2.5-32B-Instruct", "Qwen2.5-72B-Instruct")] \
        == [FITS_HERE, FITS_MESH, TOO_LARGE]
    assert rows["Qwen2.5-32B-Instruct"]["fit_here"] == TOO_LARGE

    small = rows["Qwen2.5-0.5B-Instruct"]
    assert small["downloaded"] and small["path"] == str(home / "models" / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    assert small["size_bytes"] == len(tiny_gguf_bytes) and small["quant"] == "Q4_K_M"
    assert rows["Qwen2.5-7B-Instruct"]["downloaded"] is False and rows["Qwen2.5-7B-Instruct"]["partial_bytes"] == 1000
    assert rows["Qwen2.5-32B-Instruct"]["draft"] == "Qwen2.5-0.5B-Instruct"
    assert rows["GLM-4.7-Flash"]["moe"] is True and rows["GLM-4.7-Flash"]["draft"] is None
    assert rows["Gemma-3-270M"]["bundled"] and rows["Gemma-3-270M"]["downloaded"]

    own = rows["my-own-model-Q5_K_M"]
    assert not own["in_catalog"] and own["quant"] == "Q5_K_M" and own["layers"] == 2
    assert own["fit"] == FITS_HERE and own["path"].endswith(".models/my-own-model-Q5_K_M.gguf")
    assert list(rows)[-1] == "my-own-model-Q5_K_M"  # catalog first, then local files


def test_models_prints_a_table(tmp_path):
    result = run_meshdesk("models", "--home", str(tmp_path / "home"), environment={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "no node is running" in lines[0]
    assert lines[1].split() == ["NAME", "QUANT", "SIZE", "DRAFT", "ON", "DISK", "THIS", "NODE", "MESH"]
    glm = next(line for line in lines if line.startswith("GLM-4.7-Flash"))
    assert "none (MoE)" in glm
