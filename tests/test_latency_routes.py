"""MESHDESK_TEST_DATA_ROUTES on real nodes: a malformed value stops the node in one line; a
route puts a delaying proxy on the host's data link to a split member."""

from __future__ import annotations

import pytest

from meshdesk.core.data_routes import ENVIRONMENT_VARIABLE
from tests.latency_tools import proxied_members, routes_environment
from tests.nodes import poll, run_meshdesk
from tests.test_split import completion, seeded_home, split_plan

DELAY = 0.005  # one-way, host to member: enough to keep a pass's requests and its reply apart


def test_a_malformed_route_stops_the_node_at_start_in_one_line(tmp_path):
    result = run_meshdesk("--headless", "--home", str(tmp_path / "home"), "--port", "0", "--bind-host", "127.0.0.1",
                          environment={ENVIRONMENT_VARIABLE: "127.0.0.1:5000=nowhere"})
    assert result.returncode == 2
    assert result.stderr == f"meshdesk: error: {ENVIRONMENT_VARIABLE}: 'nowhere' is not HOST:PORT\n"


@pytest.mark.slow
def test_the_host_dials_its_member_through_the_routed_proxy(node_factory, tmp_path, default_model_path):
    (member,) = proxied_members(1)
    proxy = member.proxy
    try:
        proxy.set_delay(DELAY)
        host = node_factory("--model", str(default_model_path), "--split", "--threads", "1",
                            environment=routes_environment([member]))
        worker = node_factory("--join", host.invite_token(), "--max-vram", "10", "--threads", "1",
                              "--bind-port", str(member.mesh_port), home=seeded_home(tmp_path, "worker", default_model_path))
        poll(lambda: split_plan(host) is not None and host.model_state() == "ready", 120,
             message=f"the split to be running: {host.describe()} WORKER {worker.describe()}")
        assert proxy.counters()["connections"] >= 1  # the split host's rpc link, at least

        proxy_before, status_before = proxy.counters(), host.status()["traffic"]["round_trips"]
        assert completion(host, max_tokens=16)
        proxy_after, status_after = proxy.counters(), host.status()["traffic"]["round_trips"]
    finally:
        proxy.stop()
    through_proxy = proxy_after["round_trips"] - proxy_before["round_trips"]
    counted_by_host = status_after - status_before
    assert proxy_after["bytes_to_target"] > proxy_before["bytes_to_target"]
    assert proxy_after["bytes_from_target"] > proxy_before["bytes_from_target"]
    assert through_proxy >= 4  # a pass per token, or per few with speculation
    assert abs(through_proxy - counted_by_host) <= 2 + 0.1 * through_proxy, (through_proxy, counted_by_host)
