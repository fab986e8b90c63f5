"""The Mesh tab's speculation line (ui/mesh_model.py speculation_line, ui/mesh_view.py), from
status snapshots, offscreen."""

from __future__ import annotations

import pytest

from meshdesk.core.status import StatusSnapshot
from meshdesk.ui.mesh_model import mesh_summary
from meshdesk.ui.text import DASH
from tests.test_ui_snapshots import solo_wire


def with_speculative(*speculative: dict | None) -> StatusSnapshot:
    wire = solo_wire()
    first = wire["models"][0]
    wire["models"] = [{**first, "id": f"model-{index}", "speculative": value}
                      for index, value in enumerate(speculative)]
    return StatusSnapshot.from_wire(wire)


NGRAM = {"proposed": 100, "accepted": 62, "steps": 50, "generated": 120, "backed_off": 4, "mode": "ngram",
         "ngram_max": 8, "acceptance_rate": 0.62, "tokens_per_step": 2.4, "tokens_per_round_trip": 2.38}


@pytest.mark.parametrize("speculative, line", [
    (NGRAM, "n-gram, 62% accepted, 2.4 tokens/pass, 2.4 tokens/round trip"),
    ({**NGRAM, "tokens_per_round_trip": None}, "n-gram, 62% accepted, 2.4 tokens/pass"),
    ({**NGRAM, "mode": "draft", "draft_max": 8, "acceptance_rate": 0.91, "tokens_per_step": 5.04,
      "tokens_per_round_trip": None}, "draft model, 91% accepted, 5.0 tokens/pass"),
    ({**NGRAM, "acceptance_rate": None, "tokens_per_step": None, "tokens_per_round_trip": None},
     "n-gram, nothing generated yet"),
    ({"error": "could not load the draft d.gguf: bad"}, "off (could not load the draft d.gguf: bad)"),
    (None, DASH),
])
def test_the_speculation_line(speculative, line):
    assert mesh_summary(with_speculative(speculative)).speculation == line


def test_several_models_each_get_a_line_and_those_without_speculation_none():
    summary = mesh_summary(with_speculative(NGRAM, None, {**NGRAM, "acceptance_rate": 0.5}))
    assert summary.speculation.splitlines() == [
        "model-0: n-gram, 62% accepted, 2.4 tokens/pass, 2.4 tokens/round trip",
        "model-2: n-gram, 50% accepted, 2.4 tokens/pass, 2.4 tokens/round trip"]


def test_the_mesh_view_shows_it(qtbot):
    from meshdesk.ui.mesh_view import MeshView

    view = MeshView()
    qtbot.addWidget(view)
    view.show_status(with_speculative(NGRAM))
    assert view.speculation.text() == "n-gram, 62% accepted, 2.4 tokens/pass, 2.4 tokens/round trip"
    view.show_status(with_speculative(None))
    assert view.speculation.text() == DASH
