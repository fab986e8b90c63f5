"""node.serving against in-memory fakes: records in, model hosts and tunnels started and stopped,
requests routed. No subprocesses, no sockets, no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.core.model_advert import ModelAdvert
from meshdesk.core.node_record import NodeRecord
from meshdesk.core.serving_plan import HostConfig, OpenTunnel, StartHost, StopHost
from meshdesk.node import serving as serving_module
from meshdesk.node.api_tunnel import API_PURPOSE, RemoteModel
from meshdesk.node.interfaces import ModelBusy, ModelStatus, ModelUnavailable, UnknownModel
from meshdesk.node.rpc_tunnel import Traffic
from meshdesk.node.serving import Serving
from tests.fakes import chat_request, eventually, link_pair, run

GB = 10**9
SMALL, BIG = "aa" * 32, "bb" * 32
NAMES = {SMALL: "small.gguf", BIG: "big.gguf"}
SIZES = {SMALL: 5 * GB, BIG: 20 * GB}  # the big one (22 GB with the margin) needs A and B together


def advert(digest: str, wanted: bool = False) -> ModelAdvert:
    return ModelAdvert(NAMES[digest], SIZES[digest], digest, 10, wanted=wanted)


def record(node_id: str, capacity_gb: int, *models: ModelAdvert) -> NodeRecord:
    serving = next((model.digest for model in models if model.wanted), None)
    return NodeRecord(node_id=node_id, name=node_id, addresses=(), capacity_bytes=capacity_gb * GB,
                      models=models, serving=serving, role="standby", versions={}, rtt_ms={},
                      public_key="", generation=1)


def local_entry(digest: str) -> dict:
    return {"name": NAMES[digest], "size": SIZES[digest], "digest": digest, "layers": 10,
            "path": f"/models/{NAMES[digest]}"}


class FakeMesh:
    def __init__(self, records: list[NodeRecord]):
        self.records = records
        self.links: list[tuple[str, str]] = []
        self.far_ends: list = []

    def alive_records(self) -> list[NodeRecord]:
        return list(self.records)

    def mesh_wants(self):
        return None  # plan what the records flag wanted

    async def open_data_link(self, member_id: str, purpose: str):
        self.links.append((member_id, purpose))
        near, far = link_pair()
        self.far_ends.append(far)
        return near


class FakeModelHost:
    def __init__(self, model: dict, endpoints: list[str], shares: list[float], log: list):
        self.model, self.endpoints, self.shares, self.log = model, endpoints, shares, log
        self.on_change = lambda: None
        self.requests: list[str] = []
        self.started = False

    async def run(self) -> None:
        self.started = True
        self.log.append(("started", self.model["name"], self.endpoints, self.shares))
        try:
            await asyncio.Event().wait()
        finally:
            self.log.append(("stopped", self.model["name"]))

    def status(self) -> ModelStatus:
        return ModelStatus(self.model["name"].removesuffix(".gguf"), self.model["path"], "ready")

    async def generate(self, request):
        self.requests.append(request.model)
        yield {"type": "delta", "text": "here"}
        yield {"type": "finish", "finish_reason": "stop", "usage": {}}


class FakeTunnel:
    count = 0

    def __init__(self, member_id, open_link, make_referencer, traffic, log: list):
        self.member_id, self.make_referencer, self.log = member_id, make_referencer, log

    async def start(self) -> str:
        FakeTunnel.count += 1
        self.log.append(("tunnel opened", self.member_id))
        return f"127.0.0.1:{7000 + FakeTunnel.count}"

    async def stop(self) -> None:
        self.log.append(("tunnel closed", self.member_id))


class FakeWorker:
    def __init__(self, endpoint: str | None = "127.0.0.1:5000"):
        self.endpoint = endpoint


class Rig:
    """A Serving for node A with fakes all round, and what happened to them, in order."""

    def __init__(self, records, on_disk=(SMALL, BIG), worker: FakeWorker | None = None):
        self.log: list = []
        self.hosts: list[FakeModelHost] = []
        self.mesh = FakeMesh(records)
        self.worker = worker or FakeWorker()
        self.on_disk = [local_entry(digest) for digest in on_disk]
        self.serving = Serving("A", self.mesh, lambda: self.on_disk, self.make_host, self.worker,
                               lambda model, config, member, link: ("referencer for", model["digest"], config, member, link), Traffic(),
                               make_tunnel=lambda *parts: FakeTunnel(*parts, log=self.log))

    def make_host(self, model, endpoints, shares) -> FakeModelHost:
        host = FakeModelHost(model, endpoints, shares, self.log)
        self.hosts.append(host)
        return host

    async def settle(self, records=None) -> list:
        """Gossip changed (to `records`): replan, apply, and let started hosts run."""
        if records is not None:
            self.mesh.records = records
        self.serving.replan()
        commands = await self.serving.apply_plan()
        await eventually(lambda: all(host.started for host in self.hosts))
        return commands


SOLO_BY_A = [record("A", 16, advert(SMALL, wanted=True))]
REPLICAS = [record("A", 16, advert(SMALL, wanted=True)), record("B", 16, advert(SMALL))]
SPLIT_BY_A = [record("A", 16, advert(BIG, wanted=True)), record("B", 8, advert(BIG))]


def test_a_model_that_fits_runs_solo_here_and_answers_locally():
    async def scenario():
        rig = Rig(SOLO_BY_A)
        assert await rig.settle() == [StartHost(HostConfig(SMALL))]
        assert rig.log == [("started", "small.gguf", [], [])]
        assert rig.serving.role(client=False) == "host" and rig.serving.model_ids() == ["small"]
        events = [event async for event in rig.serving.generate(chat_request("hi", "small"))]
        assert events[-1]["type"] == "finish" and rig.hosts[0].requests == ["small"]
        assert rig.mesh.links == []  # nothing left the node
        assert [status.state for status in rig.serving.model_statuses()] == ["ready"]
    run(scenario())


def test_a_split_host_puts_remote_members_first_and_its_own_worker_last():
    async def scenario():
        rig = Rig(SPLIT_BY_A)
        commands = await rig.settle()
        assert commands == [OpenTunnel("B", BIG), StartHost(HostConfig(BIG, ("B", "A"), (0.3333, 0.6667)))]
        tunnel_endpoint = rig.serving.tunnels["B"].endpoint
        assert rig.log == [("tunnel opened", "B"),
                           ("started", "big.gguf", [tunnel_endpoint, "127.0.0.1:5000"], [0.3333, 0.6667])]
        # each connection's referencer learns the running config (the member's share) and the link
        assert rig.serving.tunnels["B"].tunnel.make_referencer("link") == (
            "referencer for", BIG, HostConfig(BIG, ("B", "A"), (0.3333, 0.6667)), "B", "link")
    run(scenario())


def test_an_unchanged_plan_restarts_nothing_and_new_shares_restart_the_host():
    async def scenario():
        rig = Rig(SPLIT_BY_A)
        await rig.settle()
        assert await rig.settle() == [] and len(rig.hosts) == 1
        bigger_b = [SPLIT_BY_A[0], record("B", 16, advert(BIG))]
        commands = await rig.settle(bigger_b)
        assert commands == [StopHost(BIG), StartHost(HostConfig(BIG, ("B", "A"), (0.5, 0.5)))]
        assert rig.log[2:] == [("stopped", "big.gguf"),
                               ("started", "big.gguf", [rig.serving.tunnels["B"].endpoint, "127.0.0.1:5000"],
                                [0.5, 0.5])]  # the tunnel to B stayed open
    run(scenario())


def test_a_model_nobody_wants_any_more_stops_and_its_tunnels_close():
    async def scenario():
        rig = Rig(SPLIT_BY_A)
        await rig.settle()
        await rig.settle([record("A", 16, advert(BIG)), record("B", 8, advert(BIG))])  # A dropped it
        assert rig.log[2:] == [("stopped", "big.gguf"), ("tunnel closed", "B")]
        assert rig.serving.hosts == {} and rig.serving.tunnels == {}
        with pytest.raises(UnknownModel, match=r"^The model 'big' does not exist in this mesh \(served: none\)$"):
            rig.serving.resolve("big")
    run(scenario())


def test_a_split_host_waits_for_the_local_rpc_worker_and_run_looks_again(monkeypatch):
    monkeypatch.setattr(serving_module, "RETRY_SECONDS", 0.01)

    async def scenario():
        rig = Rig(SPLIT_BY_A, worker=FakeWorker(endpoint=None))
        assert await rig.settle() == []
        assert rig.log == [] and rig.serving.retry_after == 0.01
        with pytest.raises(ModelUnavailable, match="^model big is starting here; try again shortly$"):
            rig.serving.resolve("big")
        running = asyncio.create_task(rig.serving.run())
        try:
            rig.worker.endpoint = "127.0.0.1:5001"  # no gossip says so: only the retry notices
            await eventually(lambda: rig.serving.hosts)
            assert rig.hosts[0].endpoints[-1] == "127.0.0.1:5001" and rig.serving.retry_after is None
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await rig.serving.stop()
    run(scenario())


def test_a_model_the_mesh_cannot_fit_is_unavailable_with_the_reason():
    async def scenario():
        rig = Rig([record("A", 16, advert(BIG, wanted=True))])
        await rig.settle()
        assert rig.log == []
        with pytest.raises(ModelUnavailable) as caught:
            rig.serving.resolve("big")
        assert str(caught.value) == "model big is not running: waiting for more peers: need 22.0 GB, have 16.0 GB"
        assert caught.value.retry_after == 10
        [status] = rig.serving.model_statuses()
        assert (status.id, status.state, status.error) == ("big", "waiting", str(caught.value).split(": ", 1)[1])
    run(scenario())


def test_unknown_models_name_what_is_served():
    async def scenario():
        rig = Rig(SOLO_BY_A)
        await rig.settle()
        with pytest.raises(UnknownModel) as caught:
            rig.serving.resolve("nope")
        assert str(caught.value) == "The model 'nope' does not exist in this mesh (served: small)"
    run(scenario())


def test_requests_go_to_the_least_busy_replica_this_node_first():
    async def scenario():
        rig = Rig(REPLICAS)
        await rig.settle()
        host, model = rig.serving.resolve("small")
        assert host == "A" and model is rig.hosts[0]  # a tie: local first
        rig.serving.in_flight["A"] = 1
        host, model = rig.serving.resolve("small")
        assert host == "B" and isinstance(model, RemoteModel) and model.host_id == "B"
        host, _ = rig.serving.resolve("small", local_only=True)  # a request another node forwarded
        assert host == "A"
        [status] = rig.serving.model_statuses()
        assert status.state == "ready"
    run(scenario())


def test_a_remote_request_travels_over_the_data_plane_and_counts_as_in_flight():
    async def scenario():
        rig = Rig([record("A", 16), record("B", 16, advert(SMALL, wanted=True))], on_disk=())
        await rig.settle()
        assert rig.log == [] and rig.serving.role(client=False) == "standby"
        assert [status.state for status in rig.serving.model_statuses()] == ["remote"]
        answer = rig.serving.generate(chat_request("hi", "small"))
        first = asyncio.ensure_future(answer.__anext__())
        await eventually(lambda: rig.mesh.far_ends)
        far = rig.mesh.far_ends[0]
        assert (await far.receive())["request"]["model"] == "small"
        assert rig.mesh.links == [("B", API_PURPOSE)] and rig.serving.in_flight == {"B": 1}
        await far.send({"type": "delta", "text": "from B"})
        await far.send({"type": "finish", "finish_reason": "stop", "usage": {}})
        assert (await first)["text"] == "from B"
        assert [event["type"] async for event in answer] == ["finish"]
        assert rig.serving.in_flight == {"B": 0}
    run(scenario())


def test_stop_stops_every_host_and_closes_every_tunnel():
    async def scenario():
        rig = Rig(SPLIT_BY_A)
        await rig.settle()
        await rig.serving.stop()
        assert rig.log[2:] == [("stopped", "big.gguf"), ("tunnel closed", "B")]
        assert rig.serving.hosts == {} and rig.serving.tunnels == {}
    run(scenario())


def test_a_lite_client_runs_nothing():
    async def scenario():
        rig = Rig(SOLO_BY_A, on_disk=())
        rig.serving.rpc_worker = None
        await rig.settle()
        assert rig.log == [] and rig.serving.role(client=True) == "client"
    run(scenario())


class FullModelHost(FakeModelHost):
    """A host whose every sequence is answering and whose queue is full."""

    async def generate(self, request):
        self.requests.append(request.model)
        raise ModelBusy("all 1 of this model's sequences are answering", 7)
        yield  # an async generator, as a real host's generate is


def test_a_full_replica_passes_the_request_to_the_next_and_all_full_is_a_429_with_the_soonest_retry():
    async def scenario():
        rig = Rig(REPLICAS)
        await rig.settle()
        rig.hosts[0].__class__ = FullModelHost  # A's own host fills up
        answer = rig.serving.generate(chat_request("hi", "small"))
        first = asyncio.ensure_future(answer.__anext__())
        await eventually(lambda: rig.mesh.far_ends)  # A was full (local first on a tie): on to B
        far = rig.mesh.far_ends[0]
        assert rig.hosts[0].requests == ["small"] and (await far.receive())["request"]["model"] == "small"
        await far.send({"type": "delta", "text": "from B"})
        await far.send({"type": "finish", "finish_reason": "stop", "usage": {}})
        assert (await first)["text"] == "from B"
        assert [event["type"] async for event in answer] == ["finish"]
        assert rig.serving.in_flight == {"A": 0, "B": 0}

        refused = rig.serving.generate(chat_request("hi", "small"))
        pending = asyncio.ensure_future(refused.__anext__())
        await eventually(lambda: len(rig.mesh.far_ends) == 2)
        far = rig.mesh.far_ends[1]
        await far.receive()
        await far.send({"type": "error", "kind": "busy", "message": "B is full too", "retry_after": 3})
        with pytest.raises(ModelBusy) as error:
            await pending
        assert error.value.retry_after == 3  # the sooner of A's 7 s and B's 3 s
    run(scenario())
