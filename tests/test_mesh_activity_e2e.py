"""The Mesh view's activity from a real node: `/api/status` says an answer is being produced
while one streams, and the counters the view compares move, then stop."""

from __future__ import annotations

import pytest

from meshdesk.core.status import StatusSnapshot, activity_counts, generating
from meshdesk.ui.mesh_segments import ActivityWatch, cluster_segments
from tests.test_ui_mesh_segments import Clock

pytestmark = pytest.mark.slow


def test_a_streaming_answer_shows_as_activity_and_stops_with_it(smol_node):
    before = StatusSnapshot.from_wire(smol_node.status())
    clock = Clock()
    watch = ActivityWatch(hold_s=2.5)
    assert not generating(before) and watch.see(before, clock()) == frozenset()
    stream = smol_node.client().chat.completions.create(
        model=before.models[0].id, messages=[{"role": "user", "content": "Count from one to twenty."}],
        max_tokens=48, temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)  # the answer has begun
    during = StatusSnapshot.from_wire(smol_node.status())
    assert during.models[0].generating == 1
    clock.now += 1
    busy = watch.see(during, clock())
    assert busy == {before.node.id} and cluster_segments(during, busy)[0].active
    for _ in chunks:
        pass
    after = StatusSnapshot.from_wire(smol_node.status())
    assert not generating(after) and "generating" not in smol_node.status()["models"][0]
    assert activity_counts(after) != activity_counts(before)  # an answer was started
    clock.now += 1
    assert watch.see(after, clock()) == busy  # nothing moved since the last look, but within the hold
    clock.now += 1
    assert watch.see(after, clock()) == busy
    clock.now += 3
    assert watch.see(after, clock()) == frozenset()  # quiet for longer than the hold: no longer busy
