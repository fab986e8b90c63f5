"""The Models tab's download controller against a stand-in Hugging Face hub over real HTTP:
progress reaches the view, Cancel keeps the partial file, Resume completes it byte for byte,
a failure is one line in the view. The asyncio loop runs in the Qt thread, as under qasync."""

from __future__ import annotations

import asyncio
import json

import pytest

from meshdesk.adapters.hf_download import partial_path
from meshdesk.app.download_controller import DownloadController
from meshdesk.core.catalog import parse_catalog
from meshdesk.ui.models_view import ModelsView
from tests.hub_stand_in import StandInHub, write_tiny_gguf

MODEL, DRAFT, MISSING = "Stand-In-7B", "Stand-In-Draft", "Not-On-The-Hub"
MODEL_REPO, DRAFT_REPO = "Test/Stand-In-7B-GGUF", "Test/Stand-In-Draft-GGUF"
MODEL_FILE, DRAFT_FILE = "stand-in-7b-q4_k_m.gguf", "stand-in-draft-q4_k_m.gguf"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("gguf")
    return {MODEL: write_tiny_gguf(folder / "model.gguf"),
            DRAFT: write_tiny_gguf(folder / "draft.gguf", values=128 * 1024)}


def catalog_entry(name: str, repo: str, file: str, size: int, draft: str | None = None) -> dict:
    return {"name": name, "repo": repo, "quants": {"Q4_K_M": {"file": file, "size_bytes": size}},
            "layers": 2, "context_length": 2048, "kv_dim": 64, "draft": draft}


@pytest.fixture
def hub(files):
    hub = StandInHub().start()
    hub.add(MODEL_REPO, MODEL_FILE, files[MODEL])
    hub.add(DRAFT_REPO, DRAFT_FILE, files[DRAFT])
    yield hub
    hub.stop()


class Setup:
    def __init__(self, qtbot, hub, files, tmp_path):
        self.catalog = parse_catalog(json.dumps({"models": [
            catalog_entry(MODEL, MODEL_REPO, MODEL_FILE, len(files[MODEL]), draft=DRAFT),
            catalog_entry(DRAFT, DRAFT_REPO, DRAFT_FILE, len(files[DRAFT])),
            catalog_entry(MISSING, "Test/Gone-GGUF", "gone.gguf", 1000)]}))
        self.folder = tmp_path / "models"
        self.view = ModelsView()
        qtbot.addWidget(self.view)
        self.rescanned = []
        self.controller = DownloadController(self.view, self.catalog, self.folder, self.rescan, endpoint=hub.url)
        self.progress: list[dict[str, int]] = []
        self.bars: list[int] = []
        self.shown_again: asyncio.Event | None = None  # set on each showing, while a test waits
        shown = self.view.show_downloads

        def record(downloads):  # what the view was shown, as it was shown
            shown(downloads)
            self.progress.append({name: download.percent for name, download in downloads.items()})
            self.bars += [bar.value() for bar in self.view.progress_bars.values()]
            if self.shown_again is not None:
                self.shown_again.set()
        self.view.show_downloads = record

    async def until_shown(self, condition, timeout: float = 10.0) -> None:
        """Waits until the view has been shown downloads for which `condition` holds: it is
        checked again each time the controller shows the view something new."""
        self.shown_again = asyncio.Event()  # made here: each scenario runs in a loop of its own
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self.shown_again.clear()
                    await self.shown_again.wait()
        finally:
            self.shown_again = None

    async def rescan(self, path) -> None:
        self.rescanned.append(path.name)

    def row(self, name: str):
        return next(row for row in self.view.rows if row.name == name)

    def click(self, button: str, name: str) -> None:
        self.view.table.selectRow([row.name for row in self.view.rows].index(name))
        self.view.buttons[button].click()


@pytest.fixture
def setup(qtbot, hub, files, tmp_path):
    return Setup(qtbot, hub, files, tmp_path)


def test_a_download_with_its_draft_reports_progress_to_the_view(setup, files, hub):
    hub.chunk_delay_s = 0.002

    async def scenario():
        await setup.controller.refresh_listing()
        assert setup.row(MODEL).on_disk == "no" and setup.row(MODEL).draft == DRAFT
        setup.view.with_draft.setChecked(True)
        setup.click("Download", MODEL)
        assert setup.row(MODEL).on_disk.startswith("downloading") and not setup.view.buttons["Download"].isEnabled()
        await setup.controller.wait()
    asyncio.run(scenario())

    for name in (MODEL, DRAFT):
        assert (setup.folder / f"{name}-Q4_K_M.gguf").read_bytes() == files[name]
        assert setup.row(name).on_disk == "yes" and setup.row(name).can_serve
    percents = [shown[MODEL] for shown in setup.progress if MODEL in shown]
    assert len(percents) > 10 and percents == sorted(percents) and percents[-1] == 100
    assert 0 < max(value for value in setup.bars if value < 100) and setup.view.progress_bars == {}
    assert sorted(setup.rescanned) == sorted(f"{name}-Q4_K_M.gguf" for name in (MODEL, DRAFT))
    assert setup.view.message.text().startswith("Downloaded ")


def test_cancel_keeps_the_partial_file_and_resume_completes_it(setup, files, hub):
    hub.chunk_delay_s = 0.02
    target = setup.folder / f"{MODEL}-Q4_K_M.gguf"

    async def cancel_mid_way():
        await setup.controller.refresh_listing()
        setup.click("Download", MODEL)
        await setup.until_shown(lambda: setup.row(MODEL).progress and setup.row(MODEL).progress >= 20)
        setup.click("Cancel", MODEL)
        assert setup.row(MODEL).on_disk == "stopping…"
        await setup.controller.wait()
    asyncio.run(cancel_mid_way())

    kept = partial_path(target).stat().st_size
    assert not target.exists() and 0 < kept < len(files[MODEL])
    assert "cancelled" in setup.view.message.text() and "\n" not in setup.view.message.text()
    assert setup.row(MODEL).on_disk.startswith("partial ") and setup.row(MODEL).can_resume
    assert partial_path(target).read_bytes() == files[MODEL][:kept]

    hub.chunk_delay_s = 0.0

    async def resume():
        setup.click("Resume", MODEL)
        await setup.controller.wait()
    asyncio.run(resume())
    assert target.read_bytes() == files[MODEL] and not partial_path(target).exists()
    assert hub.gets()[-1].range == f"bytes={kept}-"
    assert setup.row(MODEL).on_disk == "yes" and setup.rescanned == [target.name]


def test_a_failed_download_is_one_line_in_the_view_and_can_be_tried_again(setup):
    async def scenario():
        await setup.controller.refresh_listing()
        setup.click("Download", MISSING)
        await setup.controller.wait()
    asyncio.run(scenario())
    message = setup.view.message.text()
    assert message.startswith("no repository Test/Gone-GGUF") and "\n" not in message
    assert setup.row(MISSING).can_download and setup.view.progress_bars == {} and setup.rescanned == []


def test_the_nodes_own_download_for_the_mesh_shows_beside_the_users(setup):
    from meshdesk.core.download_choice import DONE, DOWNLOADING, REFUSED, DownloadStatus

    local = f"{MODEL}-Q4_K_M.gguf"

    async def scenario():
        await setup.controller.refresh_listing()
        setup.controller.show_mesh_download(DownloadStatus(local, DOWNLOADING, 1000, 4000))
        assert setup.progress[-1] == {MODEL: 25} and setup.row(MODEL).on_disk.startswith("downloading")
        assert setup.view.progress_bars[MODEL].value() == 25
        setup.controller.start(MODEL)  # the user asks for the same file: one writer only
        assert setup.controller.running == {}
        setup.controller.show_mesh_download(DownloadStatus(local, DONE, 4000, 4000))
        assert setup.progress[-1] == {} and setup.view.progress_bars == {}
        assert setup.view.message.text() == f"Downloaded {local} for the mesh; this node serves it."
        setup.controller.show_mesh_download(DownloadStatus(local, REFUSED, 0, 4000, "not the mesh's model"))
        assert setup.view.message.text() == "not the mesh's model"
        await setup.controller.wait()
    asyncio.run(scenario())
