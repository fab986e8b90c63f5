"""What this node runs for the mesh, decided from gossip: model hosts, tunnels, request routes.

Every node plans every wanted model with the same pure function (`core.planning`), so all
agree on each model's host and split without talking about it. This node then makes its own
part true: the elected host runs the model host child with one RPC device per member (remote
members through tunnels, its own rpc worker last). Others route requests to the host. A running
model host restarts only when its plan really changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from meshdesk.core.openai_api import GenerationRequest
from meshdesk.core.model_advert import ModelAdvert, SplitOptions
from meshdesk.core.assignment import MeshNode, WantedModel, plan_mesh
from meshdesk.core.planning import SPLIT, WAITING, ModelNeeds, Plan
from meshdesk.node.api_tunnel import RemoteModel
from meshdesk.node.interfaces import ModelStatus, ModelUnavailable, UnknownModel
from meshdesk.node.model_host import ModelHost
from meshdesk.node.rpc_tunnel import HostTunnel, Traffic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostConfig:
    """What a model host child is started with; a different one means a restart."""

    digest: str
    devices: tuple[str, ...]   # member ids in device order, this node last
    shares: tuple[float, ...]


@dataclass
class RunningHost:
    config: HostConfig
    host: ModelHost
    task: asyncio.Task


MakeModelHost = Callable[[dict, list[str], list[float]], ModelHost]


class Serving:
    def __init__(self, node_id: str, mesh, local_models: Callable[[], list[dict]],
                 make_model_host: MakeModelHost, rpc_worker, make_referencer, traffic: Traffic):
        self.node_id = node_id
        self.mesh = mesh
        self.local_models = local_models      # inventory entries: name, path, size, digest, layers
        self.make_model_host = make_model_host
        self.rpc_worker = rpc_worker
        self.make_referencer = make_referencer
        self.traffic = traffic
        self.plans: dict[str, list[Plan]] = {}  # by digest: solo replicas, or one split
        self.in_flight: dict[str, int] = {}     # host id -> requests this node is waiting on
        self.model_info: dict[str, dict] = {}  # by digest
        self.running: dict[str, RunningHost] = {}
        self.tunnels: dict[str, tuple[HostTunnel, str]] = {}
        self.changed = asyncio.Event()
        self.on_change: Callable[[], None] = lambda: None

    # --- planning ------------------------------------------------------------------------

    def replan(self) -> None:
        records = sorted(self.mesh.alive_records(), key=lambda record: record.node_id)
        wanted = wanted_models(records)
        self.model_info.update({model.digest: model.info for model in wanted})
        nodes = [MeshNode(record.node_id, record.capacity_bytes,
                          frozenset(model.digest for model in record.models),
                          record.serving, dict(record.rtt_ms)) for record in records]
        self.plans = plan_mesh(nodes, [model.wanted for model in wanted])
        self.changed.set()

    def my_plan(self, digest: str) -> Plan | None:
        return next((plan for plan in self.plans.get(digest, []) if plan.host == self.node_id), None)

    def role(self, client: bool) -> str:
        if client:
            return "client"
        all_plans = [plan for plans in self.plans.values() for plan in plans]
        if any(plan.host == self.node_id for plan in all_plans):
            return "host"
        if any(self.node_id in plan.member_ids() for plan in all_plans):
            return "worker"
        return "standby"

    # --- making it true ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            try:
                await self._reconcile()
            except Exception:  # one bad plan must not stop planning for good
                log.exception("could not apply the mesh's plans")
            self.on_change()

    async def _reconcile(self) -> None:
        for digest in list(self.running):
            if self._wanted_config(digest) != self.running[digest].config:
                await self._stop_host(digest)
        for digest in self.plans:
            config = self._wanted_config(digest)
            if config is not None and digest not in self.running:
                await self._start_host(digest, config)
        await self._close_unused_tunnels()

    def _wanted_config(self, digest: str) -> HostConfig | None:
        plan = self.my_plan(digest)
        if plan is None or plan.state == WAITING:
            return None
        if self._local_model(digest) is None:
            return None
        if plan.state != SPLIT:
            return HostConfig(digest, (), ())
        return HostConfig(digest, plan.member_ids(), tuple(round(m.share, 4) for m in plan.members))

    def _local_model(self, digest: str) -> dict | None:
        return next((model for model in self.local_models() if model.get("digest") == digest), None)

    async def _start_host(self, digest: str, config: HostConfig) -> None:
        model = self._local_model(digest)
        endpoints = [await self._endpoint_for(member_id, model) for member_id in config.devices]
        if any(endpoint is None for endpoint in endpoints):
            log.info("waiting for the local rpc worker before hosting %s", model["name"])
            asyncio.get_running_loop().call_later(0.5, self.changed.set)
            return
        host = self.make_model_host(model, endpoints, list(config.shares))
        host.on_change = self.on_change
        task = asyncio.ensure_future(host.run())
        self.running[digest] = RunningHost(config, host, task)
        log.info("hosting %s on %s", model["name"], ", ".join(config.devices) or "this node alone")

    async def _endpoint_for(self, member_id: str, model: dict) -> str | None:
        if member_id == self.node_id:
            return self.rpc_worker.endpoint if self.rpc_worker is not None else None
        if member_id not in self.tunnels:
            tunnel = HostTunnel(member_id, self.mesh.open_data_link,
                                lambda: self.make_referencer(model), self.traffic)
            self.tunnels[member_id] = (tunnel, await tunnel.start())
        return self.tunnels[member_id][1]

    async def _stop_host(self, digest: str) -> None:
        running = self.running.pop(digest)
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)

    async def _close_unused_tunnels(self) -> None:
        used = {member for running in self.running.values() for member in running.config.devices}
        for member_id in set(self.tunnels) - used:
            tunnel, _ = self.tunnels.pop(member_id)
            await tunnel.stop()

    async def stop(self) -> None:
        for digest in list(self.running):
            await self._stop_host(digest)
        await self._close_unused_tunnels()

    # --- requests ------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        return sorted({model_id(self.model_info[digest]) for digest in self.plans})

    def _digest_named(self, name: str) -> str:
        digest = next((d for d in self.plans if model_id(self.model_info[d]) == name), None)
        if digest is None:
            served = ", ".join(self.model_ids()) or "none"
            raise UnknownModel(f"The model '{name}' does not exist in this mesh (served: {served})")
        return digest

    def resolve(self, name: str, local_only: bool = False):
        """The least busy host of `name` (as this node counts what it sent), local first."""
        digest = self._digest_named(name)
        hosts = [plan.host for plan in self.plans[digest] if plan.state != WAITING and plan.host]
        if local_only or not hosts:
            hosts = [self.node_id] if self.node_id in hosts else []
        if not hosts:
            reasons = [plan.waiting_reason for plan in self.plans[digest] if plan.waiting_reason]
            detail = reasons[0] if reasons else "no node here serves it"
            raise ModelUnavailable(f"model {name} is not running: {detail}", 10)
        host = min(hosts, key=lambda host: (self.in_flight.get(host, 0), host != self.node_id, host))
        if host == self.node_id:
            if digest not in self.running:
                raise ModelUnavailable(f"model {name} is starting here; try again shortly")
            return host, self.running[digest].host
        return host, RemoteModel(name, host, self.mesh.open_data_link)

    async def generate(self, request: GenerationRequest, local_only: bool = False) -> AsyncIterator[dict]:
        host, model = self.resolve(request.model, local_only)
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        try:
            async for event in model.generate(request):
                yield event
        finally:
            self.in_flight[host] -= 1

    def model_statuses(self) -> list[ModelStatus]:
        statuses = []
        for digest in sorted(self.plans, key=lambda digest: model_id(self.model_info[digest])):
            running = self.running.get(digest)
            if running is not None:
                statuses.append(running.host.status())
                continue
            plans = self.plans[digest]
            served = any(plan.state != WAITING for plan in plans)
            reason = next((plan.waiting_reason for plan in plans if plan.waiting_reason), None)
            statuses.append(ModelStatus(model_id(self.model_info[digest]), "",
                                        "remote" if served else "waiting", reason))
        return statuses

    def plans_status(self) -> list[Plan]:
        return [plan for plans in self.plans.values() for plan in plans]


@dataclass(frozen=True)
class Wanted:
    wanted: WantedModel
    info: ModelAdvert

    @property
    def digest(self) -> str:
        return self.wanted.digest


def wanted_models(records) -> list[Wanted]:
    """Every model some node asks the mesh to serve, in a stable order, with its options."""
    found: dict[str, Wanted] = {}
    for record in records:
        for entry in record.models:
            wants = entry.wanted or entry.digest == record.serving
            if wants and entry.digest not in found:
                found[entry.digest] = Wanted(wanted_model(entry, records), entry)
    return list(found.values())


def wanted_model(entry: ModelAdvert, records) -> WantedModel:
    options = seeded_options(entry.digest, records)
    needs = ModelNeeds(entry.model_id, entry.size, entry.layers or 1)
    return WantedModel(entry.digest, needs, options.force_split, options.manual_split)


def seeded_options(digest: str, records) -> SplitOptions:
    """Split if any seeding node asks to; manual ratios from the lowest id that gives them."""
    entries = [model for record in sorted(records, key=lambda record: record.node_id)
               for model in record.models if model.digest == digest
               and (model.wanted or record.serving == digest)]
    manual = next((entry.tensor_split for entry in entries if entry.tensor_split), None)
    return SplitOptions(any(entry.force_split for entry in entries), manual)


def model_id(info: ModelAdvert) -> str:
    return info.model_id
