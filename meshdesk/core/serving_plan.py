"""What this node should run for the mesh, decided from gossiped records (pure).

Three steps, each a pure function, so that `node.serving` only carries out their result:

- `plan_serving(records, wants)`: every model the mesh wants (`core.wants`: wanted and not
  dropped, whoever asked and whether or not that node is still alive), its plans
  (`core.assignment`) with alive members as hosts and members, its model id, and the route
  requests for it take. The same on every node, and changed only by gossip. A wanted model no
  alive member holds the file of waits, and its route says so.
- `desired_layout(plan, own_id, on_disk, worker_ready)`: this node's own part: the model hosts
  it should run and the tunnels to remote split members they need. It also depends on the
  files on this disk and on whether this node's rpc worker is up, which change without gossip.
- `changes(running, desired)`: the commands that turn what runs into what should run. A running
  host restarts only when its config (members, shares) really changed.

A split host's devices are its remote members first, in plan order, and this node's own rpc
worker last, so llama.cpp puts the output layer on the host's own device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from meshdesk.core.assignment import MeshNode, WantedModel, plan_mesh
from meshdesk.core.model_advert import ModelAdvert, SplitOptions
from meshdesk.core.node_record import NodeRecord
from meshdesk.core.planning import SPLIT, WAITING, Plan
from meshdesk.core.states import Role
from meshdesk.core.wants import WantEntry

SHARE_DECIMALS = 4  # shares are rounded so that float noise never restarts a host


@dataclass(frozen=True)
class HostConfig:
    """What a model host child is started with; a different one means a restart."""

    digest: str
    devices: tuple[str, ...] = ()  # member ids in device order, this node last; () runs solo
    shares: tuple[float, ...] = ()


@dataclass(frozen=True)
class Route:
    """Where requests for one model id go: the hosts of its running plans."""

    digest: str
    hosts: tuple[str, ...]
    waiting_reason: str | None = None  # why no plan runs, when one waits


@dataclass(frozen=True)
class ServingPlan:
    """The mesh's plans, as every node computes them. Treat the mappings as read-only."""

    plans: Mapping[str, tuple[Plan, ...]]  # digest -> its solo replicas, or one split or waiting plan
    model_ids: Mapping[str, str]  # digest -> the id clients ask for
    routes: Mapping[str, Route]  # model id -> route; the first wanted digest of that id wins

    def role(self, own_id: str, client: bool) -> Role:
        if client:
            return Role.CLIENT
        every_plan = [plan for plans in self.plans.values() for plan in plans]
        if any(plan.host == own_id for plan in every_plan):
            return Role.HOST
        if any(own_id in plan.member_ids() for plan in every_plan):
            return Role.WORKER
        return Role.STANDBY


NOTHING_PLANNED = ServingPlan({}, {}, {})


@dataclass(frozen=True)
class Layout:
    """Model hosts and tunnels: those this node should run, or those it runs."""

    hosts: Mapping[str, HostConfig]  # digest -> config
    tunnels: Mapping[str, str]  # remote member id -> digest of the model whose weights it carries
    held_back: tuple[str, ...] = ()  # digests whose host waits for this node's rpc worker


NOTHING_RUNNING = Layout({}, {})


@dataclass(frozen=True)
class StartHost:
    config: HostConfig


@dataclass(frozen=True)
class StopHost:
    digest: str


@dataclass(frozen=True)
class OpenTunnel:
    member_id: str
    digest: str


@dataclass(frozen=True)
class CloseTunnel:
    member_id: str


Command = StartHost | StopHost | OpenTunnel | CloseTunnel


# ---------------------------------------------------------------- the mesh's plans


def plan_serving(records: Iterable[NodeRecord], wants: Iterable[WantEntry] | None = None) -> ServingPlan:
    """`wants`: the mesh's want entries (`Membership.wants.entries()`); None plans what the
    records themselves flag wanted (for tests of the planner alone)."""
    records = sorted(records, key=lambda record: record.node_id)
    wanted = wanted_models(records) if wants is None else mesh_wanted(wants)
    nodes = [MeshNode(record.node_id, record.capacity_bytes, frozenset(model.digest for model in record.models),
                      record.serving, dict(record.rtt_ms), record.layer_space_bytes) for record in records]
    plans = {digest: tuple(digest_plans) for digest, digest_plans in plan_mesh(nodes, wanted).items()}
    model_ids = {model.digest: model.needs.name for model in wanted}
    routes: dict[str, Route] = {}
    held = {model.digest for record in records for model in record.models}
    for model in wanted:
        if model.digest not in held:
            plans[model.digest] = tuple(replace(plan, waiting_reason=no_file_reason(model))
                                        if plan.state == WAITING else plan for plan in plans[model.digest])
    for digest, digest_plans in plans.items():
        routes.setdefault(model_ids[digest], route_for(digest, digest_plans))
    return ServingPlan(plans, model_ids, routes)


def mesh_wanted(wants: Iterable[WantEntry]) -> list[WantedModel]:
    """The entries that want their model served, oldest first, each with its own split options."""
    found = [entry for entry in sorted(wants, key=lambda entry: entry.stamp) if entry.wanted]
    return [WantedModel(entry.digest, entry.advert.needs(),
                        entry.advert.force_split, entry.advert.tensor_split) for entry in found]


def no_file_reason(model: WantedModel) -> str:
    return (f"waiting for a member with the file: no alive member holds {model.needs.name} "
            f"({model.digest[:12]})")


def wanted_models(records: list[NodeRecord]) -> list[WantedModel]:
    """Every model some node asks the mesh to serve, in record order, with the seeders' options."""
    found: dict[str, WantedModel] = {}
    for record in records:
        for advert in record.models:
            if asks_to_serve(record, advert) and advert.digest not in found:
                options = seeded_options(advert.digest, records)
                needs = advert.needs()
                found[advert.digest] = WantedModel(advert.digest, needs, options.force_split, options.manual_split)
    return list(found.values())


def asks_to_serve(record: NodeRecord, advert: ModelAdvert) -> bool:
    return advert.wanted or advert.digest == record.serving


def seeded_options(digest: str, records: list[NodeRecord]) -> SplitOptions:
    """Split if any seeding node asks to; manual ratios from the lowest id that gives them."""
    seeds = [advert for record in sorted(records, key=lambda record: record.node_id)
             for advert in record.models if advert.digest == digest and asks_to_serve(record, advert)]
    manual = next((advert.tensor_split for advert in seeds if advert.tensor_split), None)
    return SplitOptions(any(advert.force_split for advert in seeds), manual)


def route_for(digest: str, plans: tuple[Plan, ...]) -> Route:
    hosts = tuple(plan.host for plan in plans if plan.state != WAITING and plan.host)
    reason = next((plan.waiting_reason for plan in plans if plan.waiting_reason), None)
    return Route(digest, hosts, reason)


def pick_host(route: Route, own_id: str, in_flight: Mapping[str, int], local_only: bool = False) -> str | None:
    """The host this node has the fewest requests waiting on, itself first on ties; only itself
    when `local_only` (a request forwarded by another node). None when no host will do."""
    if local_only:
        hosts = [own_id] if own_id in route.hosts else []
    else:
        hosts = list(route.hosts)
    if not hosts:
        return None
    return min(hosts, key=lambda host: (in_flight.get(host, 0), host != own_id, host))


def models_driven_by(plan: ServingPlan, own_id: str, peer_id: str) -> frozenset[str]:
    """The digests of split plans that elect `peer_id` host and count `own_id` a member: what
    that peer may drive on this node's rpc worker. Empty for every other peer (and for itself)."""
    return frozenset(digest for digest, plans in plan.plans.items() for each in plans
                     if each.state == SPLIT and each.host == peer_id != own_id and own_id in each.member_ids())


def host_allowed_to_drive(plan: ServingPlan, own_id: str, peer_id: str) -> bool:
    """Whether `peer_id` may open rpc tunnels to this node's worker while `plan` stands."""
    return bool(models_driven_by(plan, own_id, peer_id))


# ---------------------------------------------------------------- this node's part


def desired_layout(plan: ServingPlan, own_id: str, on_disk: frozenset[str], worker_ready: bool) -> Layout:
    """The hosts this node should run (the plans it hosts, for files on its disk) and their tunnels.

    A split host needs this node's own rpc worker as its last device: until the worker is
    ready, such a host is held back (and the caller looks again soon).
    """
    hosts: dict[str, HostConfig] = {}
    held_back: list[str] = []
    for digest, plans in plan.plans.items():
        config = host_config(digest, plans, own_id) if digest in on_disk else None
        if config is None:
            continue
        if own_id in config.devices and not worker_ready:
            held_back.append(digest)
        else:
            hosts[digest] = config
    tunnels = {member: digest for digest, config in hosts.items() for member in config.devices if member != own_id}
    return Layout(hosts, dict(sorted(tunnels.items())), tuple(held_back))


def host_config(digest: str, plans: tuple[Plan, ...], own_id: str) -> HostConfig | None:
    mine = next((plan for plan in plans if plan.host == own_id), None)
    if mine is None or mine.state == WAITING:
        return None
    if mine.state != SPLIT:
        return HostConfig(digest)
    return HostConfig(digest, mine.member_ids(), tuple(round(member.share, SHARE_DECIMALS) for member in mine.members))


def changes(running: Layout, desired: Layout) -> list[Command]:
    """Stop what should not run as it does, close tunnels no longer wanted, then open the new
    tunnels and start the new hosts (which use them)."""
    stops = [StopHost(digest) for digest, config in running.hosts.items() if desired.hosts.get(digest) != config]
    closes = [CloseTunnel(member) for member, digest in running.tunnels.items()
              if desired.tunnels.get(member) != digest]
    opens = [OpenTunnel(member, digest) for member, digest in desired.tunnels.items()
             if running.tunnels.get(member) != digest]
    starts = [StartHost(config) for digest, config in desired.hosts.items() if running.hosts.get(digest) != config]
    return [*stops, *closes, *opens, *starts]
