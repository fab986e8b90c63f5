"""A joiner with an empty home downloads the catalog model the mesh wants and serves it solo:
real node processes, a stand-in hub over real HTTP, the bundled model under a catalog name."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.hub_stand_in import StandInHub
from tests.nodes import poll

pytestmark = pytest.mark.slow

REPO, REMOTE = "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
LOCAL = "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"  # how every node saves it: the same id everywhere
MODEL_ID = LOCAL.removesuffix(".gguf")


@pytest.fixture(scope="module")
def catalog_model(tmp_path_factory, default_model_path):
    """The bundled model's bytes under a catalog model's file name (llama.cpp loads it as Gemma)."""
    path = tmp_path_factory.mktemp("catalog") / LOCAL
    os.link(default_model_path, path)
    return path


@pytest.fixture(scope="module")
def model_bytes(catalog_model) -> bytes:
    return catalog_model.read_bytes()


@pytest.fixture
def hub():
    hub = StandInHub()
    hub.chunk_bytes = 1 << 20
    hub.chunk_delay_s = 0.01  # about 100 MB/s: a download of a few seconds, so progress shows
    hub.start()
    yield hub
    hub.stop()


def founder(node_factory, tmp_path, catalog_model):
    home = tmp_path / "founder"
    (home / "models").mkdir(parents=True)
    os.link(catalog_model, home / "models" / LOCAL)
    node = node_factory("--model", str(home / "models" / LOCAL), "--threads", "1", home=home)
    node.wait_until_ready()
    return node


def hub_environment(hub: StandInHub, tmp_path) -> dict:
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": None, "HF_HUB_OFFLINE": None}


def local_model(node) -> dict | None:
    return next((model for model in node.status()["models"] if model["id"] == MODEL_ID), None)


def downloads_in(node) -> list[str]:
    folder = node.home / "models"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_a_joiner_with_nothing_downloads_the_wanted_catalog_model_and_serves_it_solo(
        node_factory, tmp_path, catalog_model, model_bytes, hub):
    hub.add(REPO, REMOTE, model_bytes)
    seeder = founder(node_factory, tmp_path, catalog_model)
    joiner = node_factory("--join", seeder.invite_token(), "--threads", "1",
                          environment=hub_environment(hub, tmp_path))
    seen = []

    def served_here():
        status = joiner.status()
        seen.append(status.get("download"))
        model = local_model(joiner)
        return model is not None and model["state"] == "ready" and model["path"]
    poll(served_here, 90, message=f"the joiner to download and serve the model: {joiner.describe()}")

    progress = [entry for entry in seen if entry and entry["state"] == "downloading"]
    assert any(0 < entry["done_bytes"] < entry["total_bytes"] == len(model_bytes) for entry in progress), seen
    done = [entry["done_bytes"] for entry in progress]
    assert done == sorted(done)
    assert joiner.status()["download"] == {"model": LOCAL, "state": "done", "done_bytes": len(model_bytes),
                                           "total_bytes": len(model_bytes), "error": None}
    saved = joiner.home / "models" / LOCAL
    assert downloads_in(joiner) == [LOCAL]
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(model_bytes).hexdigest()
    log = (joiner.home / "logs" / "meshdesk.log").read_text()
    assert f"downloading {LOCAL}: 50%" in log and "its digest is the mesh's" in log
    printed = "".join(joiner.output)
    assert f"Downloading {LOCAL} for the mesh: 50% (" in printed and f"Downloaded {LOCAL}; its digest" in printed

    plans = joiner.status()["plans"]
    assert sorted(plan["host"] for plan in plans) == sorted([seeder.node_id, joiner.node_id])
    assert all(plan["state"] == "solo" for plan in plans)
    before = {node.node_id: local_model(node)["requests"] for node in (seeder, joiner)}
    answer = joiner.client().completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, temperature=0)
    assert answer.choices[0].text
    assert local_model(joiner)["requests"] == before[joiner.node_id] + 1  # answered by the joiner itself
    assert local_model(seeder)["requests"] == before[seeder.node_id]
    assert [seen.method for seen in hub.seen].count("GET") == 1


def test_with_no_download_the_joiner_downloads_nothing_and_stays_standby(
        node_factory, tmp_path, catalog_model, model_bytes, hub):
    hub.add(REPO, REMOTE, model_bytes)
    seeder = founder(node_factory, tmp_path, catalog_model)
    joiner = node_factory("--join", seeder.invite_token(), "--threads", "1", "--no-download",
                          environment=hub_environment(hub, tmp_path))
    poll(lambda: (local_model(joiner) or {}).get("state") == "remote", 30,
         message=f"the joiner to route to the founder: {joiner.describe()}")
    deadline = time.monotonic() + 2.0  # a download would have begun by now: nothing may appear
    while time.monotonic() < deadline:
        status = joiner.status()
        assert status["node"]["role"] == "standby" and "download" not in status
        assert downloads_in(joiner) == [] and hub.seen == []
        time.sleep(0.1)
    assert joiner.client().completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2).choices[0].text


def test_a_hub_file_with_another_digest_is_refused_and_said_so(
        node_factory, tmp_path, catalog_model, model_bytes, hub):
    hub.add(REPO, REMOTE, model_bytes + b"\0" * 4096)  # the same name, another file
    seeder = founder(node_factory, tmp_path, catalog_model)
    joiner = node_factory("--join", seeder.invite_token(), "--threads", "1",
                          environment=hub_environment(hub, tmp_path))
    download = poll(lambda: (joiner.status().get("download") or {}).get("state") == "refused"
                    and joiner.status()["download"], 60, message=f"a refusal: {joiner.describe()}")
    assert download["model"] == LOCAL and "is not the mesh's model" in download["error"]
    assert f"{REPO}/{REMOTE} is not the mesh's model" in (joiner.home / "logs" / "meshdesk.log").read_text()
    assert downloads_in(joiner) == [] and hub.gets() == []  # refused on the hub's word, before any byte
    assert joiner.status()["node"]["role"] == "standby" and local_model(joiner)["state"] == "remote"


def test_a_joiner_stopped_mid_download_keeps_no_half_file_and_resumes_when_started_again(
        node_factory, tmp_path, catalog_model, model_bytes, hub):
    hub.add(REPO, REMOTE, model_bytes)
    hub.chunk_delay_s = 0.05  # about 20 MB/s: stopped well before the end
    seeder = founder(node_factory, tmp_path, catalog_model)
    token = seeder.invite_token()
    joiner = node_factory("--join", token, "--threads", "1", environment=hub_environment(hub, tmp_path))
    partial = joiner.home / "models" / (LOCAL + ".partial")
    poll(lambda: partial.is_file() and partial.stat().st_size > 20_000_000, 60,
         message=f"the download to be under way: {joiner.describe()}")
    assert joiner.stop(timeout=10) == 0  # SIGTERM: it stops at the transfer's next chunk
    kept = partial.stat().st_size
    assert 20_000_000 < kept < len(model_bytes) and downloads_in(joiner) == [LOCAL + ".partial",
                                                                             LOCAL + ".partial.source"]

    hub.chunk_delay_s = 0.0
    again = node_factory("--join", token, "--threads", "1", home=joiner.home,
                         environment=hub_environment(hub, tmp_path))
    poll(lambda: (local_model(again) or {}).get("path"), 90,
         message=f"the restarted joiner to finish the download and serve: {again.describe()}")
    assert hub.gets()[-1].range == f"bytes={kept}-"
    assert downloads_in(again) == [LOCAL]
    assert (again.home / "models" / LOCAL).read_bytes() == model_bytes
