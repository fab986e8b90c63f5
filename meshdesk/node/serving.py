"""What this node runs for the mesh, made true: model hosts, tunnels, request routes.

The deciding is pure and lives in `core.serving_plan`: every node plans every wanted model the
same way from gossip, and works out its own part (the hosts it should run, the tunnels they
need) and the commands that get there. This module only carries the commands out (starting
and stopping model host children, opening and closing rpc tunnels) and routes requests.

When a split host must wait for this node's rpc worker, `run()` looks again every
`RETRY_SECONDS`, as `retry_after` says; there is no other timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from meshdesk.core.openai_api import GenerationRequest
from meshdesk.core.planning import WAITING, Plan, planned_context
from meshdesk.core.serving_plan import (
    NOTHING_PLANNED,
    NOTHING_RUNNING,
    CloseTunnel,
    Command,
    HostConfig,
    Layout,
    OpenTunnel,
    ServingPlan,
    StartHost,
    StopHost,
    changes,
    desired_layout,
    pick_host,
    plan_serving,
)
from meshdesk.core.states import ModelState, Role
from meshdesk.node.api_tunnel import RemoteModel
from meshdesk.node.interfaces import HostLost, ModelBusy, ModelStatus, ModelUnavailable, UnknownModel
from meshdesk.node.model_host import ModelHost
from meshdesk.node.resume import cut_when
from meshdesk.node.rpc_tunnel import HostTunnel, Traffic

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5  # how soon to look again at a split host held back for the local rpc worker

# A local model is an inventory entry (name, size, digest, layers, path); the factories read it.
MakeModelHost = Callable[[dict, list[str], list[float]], ModelHost]
# (model, running host config, member id, link) -> awaitable referencer, after the layer exchange
MakeReferencer = Callable[[dict, HostConfig, str, object], Awaitable[object]]


class Tunnel(Protocol):
    async def start(self) -> str: ...  # the 127.0.0.1 endpoint llama.cpp connects to

    async def stop(self) -> None: ...

    def layers_sent_bytes(self) -> int: ...  # weights sent whole: the layers the member receives


MakeTunnel = Callable[[str, Callable[[str, str], Awaitable], Callable[[object], Awaitable], Traffic], Tunnel]


@dataclass
class RunningHost:
    config: HostConfig
    host: ModelHost
    task: asyncio.Task


@dataclass
class RunningTunnel:
    digest: str  # the model whose weights it carries
    tunnel: Tunnel
    endpoint: str


class Serving:
    def __init__(self, node_id: str, mesh, local_models: Callable[[], list[dict]],
                 make_model_host: MakeModelHost, rpc_worker, make_referencer: MakeReferencer,
                 traffic: Traffic, make_tunnel: MakeTunnel = HostTunnel):
        self.node_id = node_id
        self.mesh = mesh  # alive_records() and open_data_link(member id, purpose)
        self.local_models = local_models
        self.make_model_host = make_model_host
        self.rpc_worker = rpc_worker  # None on a lite client
        self.make_referencer = make_referencer
        self.make_tunnel = make_tunnel
        self.traffic = traffic
        self.plan: ServingPlan = NOTHING_PLANNED
        self.hosts: dict[str, RunningHost] = {}  # by digest
        self.tunnels: dict[str, RunningTunnel] = {}  # by member id
        self.in_flight: dict[str, int] = {}  # host id -> requests this node is waiting on
        self.retry_after: float | None = None  # seconds until `run` looks again with no news
        self.changed = asyncio.Event()
        self.on_change: Callable[[], None] = lambda: None
        self.plan_listeners: list[Callable[[], None]] = []  # told after each replan (rpc member side)

    # --- deciding (pure, in core) --------------------------------------------------------

    def replan(self) -> None:
        self.plan = plan_serving(self.mesh.alive_records(), self.mesh.mesh_wants())
        self.changed.set()
        for listener in self.plan_listeners:
            listener()

    def role(self, client: bool) -> Role:
        return self.plan.role(self.node_id, client)

    def desired(self) -> Layout:
        on_disk = frozenset(model["digest"] for model in self.local_models())
        return desired_layout(self.plan, self.node_id, on_disk, self._worker_endpoint() is not None)

    def running(self) -> Layout:
        return Layout({digest: running.config for digest, running in self.hosts.items()},
                      {member: running.digest for member, running in self.tunnels.items()})

    # --- making it true ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._next_change()
            try:
                await self.apply_plan()
            except Exception:  # one bad plan must not stop planning for good
                log.exception("could not apply the mesh's plans")
            self.on_change()

    async def _next_change(self) -> None:
        """Until the plan may have changed, or, while a host is held back, `retry_after`."""
        try:  # not wait_for: on 3.11 it can swallow a cancellation that races the event
            async with asyncio.timeout(self.retry_after):
                await self.changed.wait()
        except TimeoutError:
            pass
        self.changed.clear()

    async def apply_plan(self) -> list[Command]:
        """Carries out the changes from what runs to what should; returns them."""
        desired = self.desired()
        for digest in desired.held_back:
            log.info("waiting for the local rpc worker before hosting %s", self.plan.model_ids[digest])
        self.retry_after = RETRY_SECONDS if desired.held_back else None
        commands = changes(self.running(), desired)
        for command in commands:
            await self._carry_out(command)
        return commands

    async def _carry_out(self, command: Command) -> None:
        match command:
            case StopHost(digest):
                await self._stop_host(digest)
            case CloseTunnel(member_id):
                await self.tunnels.pop(member_id).tunnel.stop()
            case OpenTunnel(member_id, digest):
                await self._open_tunnel(member_id, digest)
            case StartHost(config):
                self._start_host(config)

    async def _open_tunnel(self, member_id: str, digest: str) -> None:
        model = self._local_model(digest)

        def referencer(link):  # per connection: the share of the host config running then
            running = self.hosts.get(digest)
            config = running.config if running is not None else HostConfig(digest)
            return self.make_referencer(model, config, member_id, link)
        tunnel = self.make_tunnel(member_id, self.mesh.open_data_link, referencer, self.traffic)
        self.tunnels[member_id] = RunningTunnel(digest, tunnel, await tunnel.start())

    def _start_host(self, config: HostConfig) -> None:
        model = self._local_model(config.digest)
        endpoints = [self._endpoint_for(member_id) for member_id in config.devices]
        if model is None or None in endpoints:  # gone since we decided (the file, the worker)
            self.retry_after = RETRY_SECONDS
            return
        host = self.make_model_host(model, endpoints, list(config.shares))
        host.on_change = lambda: self.on_change()
        task = asyncio.create_task(host.run(), name=f"model host {model['name']}")
        self.hosts[config.digest] = RunningHost(config, host, task)
        log.info("hosting %s on %s", model["name"], ", ".join(config.devices) or "this node alone")

    def _endpoint_for(self, member_id: str) -> str | None:
        if member_id == self.node_id:
            return self._worker_endpoint()
        running = self.tunnels.get(member_id)
        return running.endpoint if running is not None else None

    def _worker_endpoint(self) -> str | None:
        return self.rpc_worker.endpoint if self.rpc_worker is not None else None

    def _local_model(self, digest: str) -> dict | None:
        return next((model for model in self.local_models() if model["digest"] == digest), None)

    async def _stop_host(self, digest: str) -> None:
        running = self.hosts.pop(digest)
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)

    async def stop(self) -> None:
        for command in changes(self.running(), NOTHING_RUNNING):
            await self._carry_out(command)

    # --- requests ------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        return sorted(set(self.plan.model_ids.values()))

    def resolve(self, name: str, local_only: bool = False, avoid: frozenset[str] = frozenset()):
        """The least busy host of `name` (as this node counts what it sent), local first; never
        one in `avoid` (nodes lost mid-answer that the plans may not have dropped yet)."""
        route = self.plan.routes.get(name)
        if route is None:
            served = ", ".join(self.model_ids()) or "none"
            raise UnknownModel(f"The model '{name}' does not exist in this mesh (served: {served})")
        if avoid:
            route = replace(route, hosts=tuple(host for host in route.hosts if host not in avoid))
        host = pick_host(route, self.node_id, self.in_flight, local_only)
        if host is None:
            detail = route.waiting_reason or "no node here serves it"
            raise ModelUnavailable(f"model {name} is not running: {detail}", 10)
        if host != self.node_id:
            return host, RemoteModel(name, host, self.mesh.open_data_link)
        if route.digest not in self.hosts:
            raise ModelUnavailable(f"model {name} is starting here; try again shortly")
        return host, self.hosts[route.digest].host

    async def generate(self, request: GenerationRequest, local_only: bool = False,
                       avoid: frozenset[str] = frozenset()) -> AsyncIterator[dict]:
        """The answer's events from the least busy host; a host whose queue is full (`ModelBusy`,
        raised before any event) passes the request to the next replica, and only when every
        replica is full does the client hear it, with the soonest retry any of them gave."""
        busy: list[tuple[str, ModelBusy]] = []
        while True:
            try:
                host, model = self.resolve(request.model, local_only, avoid | {host for host, _ in busy})
            except ModelUnavailable:
                if busy:
                    raise min((error for _, error in busy), key=lambda error: error.retry_after) from None
                raise
            started = False
            try:
                async for event in self._generate_on(host, model, request):
                    started = True
                    yield event
                return
            except ModelBusy as error:
                if started:  # never after an answer began; if it were, another host must not repeat it
                    raise
                log.info("%s's host %s is full; trying another replica", request.model, host)
                busy.append((host, error))

    async def _generate_on(self, host: str, model, request: GenerationRequest) -> AsyncIterator[dict]:
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        gone = asyncio.Event()

        def check() -> None:  # after each replan: is the remote host still in the mesh?
            if host != self.node_id and all(record.node_id != host for record in self.mesh.alive_records()):
                gone.set()
        self.plan_listeners.append(check)
        try:
            lost = lambda: HostLost(f"the host of {request.model} left the mesh mid-answer", host, True)  # noqa: E731
            events = model.generate(request)
            async for event in cut_when(events, gone, lost) if host != self.node_id else events:
                yield event
        finally:
            self.plan_listeners.remove(check)
            self.in_flight[host] -= 1

    def model_statuses(self) -> list[ModelStatus]:
        statuses = []
        for digest in sorted(self.plan.plans, key=lambda digest: self.plan.model_ids[digest]):
            running = self.hosts.get(digest)
            if running is not None:
                statuses.append(running.host.status())
                continue
            plans = self.plan.plans[digest]
            served = any(plan.state != WAITING for plan in plans)
            reason = next((plan.waiting_reason for plan in plans if plan.waiting_reason), None)
            statuses.append(ModelStatus(self.plan.model_ids[digest], "",
                                        ModelState.REMOTE if served else ModelState.WAITING, reason,
                                        context=self._advertised_context(digest)))
        return statuses

    def _advertised_context(self, digest: str) -> int | None:
        """What a remote host plans this model's context for: its trained one, capped at the mesh's."""
        trained = [advert.context_length for record in self.mesh.alive_records() for advert in record.models
                   if advert.digest == digest and advert.context_length]
        return planned_context(max(trained)) if trained else None

    def plans_status(self) -> list[Plan]:
        return [plan for plans in self.plan.plans.values() for plan in plans]

    def layers_sent(self) -> dict[str, int]:
        """Per remote member of a split hosted here: the weights its tunnel sent whole so far."""
        return {member_id: running.tunnel.layers_sent_bytes() for member_id, running in self.tunnels.items()}
