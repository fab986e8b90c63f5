"""`Node` against in-memory fakes of its mesh and serving: what it tells the mesh, the errors a
user reads, aliases and the pending model, and what it subscribes to when it is built. No
subprocesses, no sockets, no sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshdesk.core.invite import InviteToken, TokenError
from meshdesk.core.states import ModelState
from meshdesk.node.api_tunnel import API_PURPOSE
from meshdesk.node.interfaces import ModelStatus, ModelUnavailable
from meshdesk.node.mesh import JoinRefused
from meshdesk.node.node import MAX_NAME, Node, NodeHooks, NodeIdentity
from meshdesk.node.offer import GIB, Offer
from meshdesk.node.own_state import OwnState
from tests.fakes import chat_request, link_pair, run

MODELS = Path("/models")
TINY = MODELS / "tiny-q4_k_m.gguf"
OTHER = MODELS / "other.gguf"


@dataclass(frozen=True)
class FakeCredentials:
    name: str


class FakeMesh:
    """The parts of MeshService a node uses; records what it was asked."""

    def __init__(self, mesh_id: str | None = "0123456789abcdef", joins: list | None = None):
        self.mesh_id = mesh_id
        self.credentials = FakeCredentials("alice")
        self.on_change = lambda: None
        self.data_plane_handlers: dict = {}
        self.refreshes = 0
        self.joins = list(joins or [])  # what each join returns (an exception is raised)
        self.joined: list[InviteToken] = []
        self.revoked: list[InviteToken] = []
        self.removed: list[str] = []
        self.running = asyncio.Event()

    def refresh_own_record(self) -> None:
        self.refreshes += 1

    def observed_wire(self) -> tuple:
        return ()

    def relays_wire(self) -> tuple:
        return ()

    def mesh_wants(self) -> list:
        return []

    def want_model(self, digest: str) -> None:
        self.wanted = digest

    def drop_model(self, digest: str) -> None:
        self.dropped = digest

    async def join(self, token: InviteToken) -> bool:
        self.joined.append(token)
        outcome = self.joins.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def revoke(self, token: InviteToken) -> None:
        self.revoked.append(token)

    def remove(self, node_id: str) -> None:
        self.removed.append(node_id)

    async def run(self) -> None:
        self.running.set()
        await asyncio.Event().wait()


class FakeServing:
    """Plans by decree: `role_after_replan` is what the next replan makes this node."""

    def __init__(self, statuses: list[ModelStatus] | None = None, role: str = "standby"):
        self.statuses = list(statuses or [])
        self.current_role = role
        self.role_after_replan = role
        self.replans = 0
        self.on_change = lambda: None
        self.requests: list[tuple] = []
        self.stopped = False

    def replan(self) -> None:
        self.replans += 1
        self.current_role = self.role_after_replan

    def role(self, client: bool) -> str:
        return "client" if client else self.current_role

    def model_statuses(self) -> list[ModelStatus]:
        return list(self.statuses)

    def model_ids(self) -> list[str]:
        return [status.id for status in self.statuses]

    async def generate(self, request, local_only: bool = False, avoid=frozenset()):
        self.requests.append((request.model, local_only))
        yield {"type": "delta", "text": f"from {request.model}"}
        yield {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


class Disk:
    """The models on disk, as the app's hooks see them: resolving, digests, rescans."""

    def __init__(self, usable: set[Path], appears_on_rescan: set[Path] = frozenset()):
        self.usable = set(usable)
        self.appears_on_rescan = set(appears_on_rescan)
        self.rescanned: list[Path | None] = []
        self.saved_names: list[str] = []

    def resolve(self, choice: str) -> Path:
        if choice.endswith(".gguf"):
            return Path(choice)
        if choice == "tiny":
            return TINY
        raise ValueError(f"no model named {choice!r}")

    def digest(self, path: Path) -> str | None:
        return f"digest-of-{path.stem}" if path in self.usable else None

    async def rescan(self, path: Path | None = None) -> None:
        self.rescanned.append(path)
        self.usable |= self.appears_on_rescan

    def hooks(self, **more) -> NodeHooks:
        return NodeHooks(save_name=self.saved_names.append, wanted_digest=self.digest,
                         resolve_model=self.resolve, rescan_models=self.rescan, **more)


def make_node(mesh: FakeMesh | None = None, serving: FakeServing | None = None, disk: Disk | None = None,
              wants: list[Path] | None = None, client: bool = False, **options):
    mesh, serving, disk = mesh or FakeMesh(), serving or FakeServing(), disk or Disk({TINY, OTHER})
    own = OwnState(name="alice", wants=list(wants or []))
    identity = NodeIdentity(id="a" * 20, name="alice", home=Path("/home/alice"), version="0.1.0")
    node = Node(identity, serving, mesh, own, options.pop("hooks", None) or disk.hooks(),
                offer=Offer(measured_bytes=8 * GIB, client=client), **options)
    notified: list[int] = []
    node.subscribe(lambda: notified.append(1))
    return node, mesh, serving, disk, own, notified


def token_text(mesh_id: str = "0123456789abcdef") -> str:
    token = InviteToken(mesh_id=mesh_id, join_secret=bytes(16), inviter_key=bytes(range(32)),
                        addresses=(("127.0.0.1", 9000),), expires_at=0)
    return token.signed(lambda payload: bytes(64)).encode()


# --- what the node subscribes to, and what it keeps current for its own record ---------------------

def test_a_node_answers_api_requests_and_the_apps_data_plane_purposes():
    async def serve_rpc(identity, link) -> None:
        return None

    node, mesh, *_ = make_node(hooks=Disk(set()).hooks(data_plane_handlers={"rpc": serve_rpc}))
    assert mesh.data_plane_handlers == {"rpc": serve_rpc, API_PURPOSE: node._answer_remote_request}
    assert mesh.on_change == node._mesh_changed


def test_a_forwarded_request_is_answered_from_this_nodes_own_hosts_under_its_alias():
    node, mesh, serving, *_ = make_node(aliases={"tiny": "tiny-q4_k_m"})

    async def scenario():
        near, far = link_pair()
        answering = asyncio.ensure_future(mesh.data_plane_handlers[API_PURPOSE](None, far))
        await near.send({"request": chat_request("hi", model="tiny").to_wire()})
        events = [await near.receive(), await near.receive()]
        await answering
        return events

    delta, finish = run(scenario())
    assert delta == {"type": "delta", "text": "from tiny-q4_k_m"} and finish["type"] == "finish"
    assert serving.requests == [("tiny-q4_k_m", True)]


def test_the_role_follows_each_replan_into_the_own_state_and_listeners_hear_of_it():
    node, mesh, serving, _, own, notified = make_node()
    assert own.role == "standby"
    serving.role_after_replan = "host"
    mesh.on_change()
    assert (serving.replans, own.role, len(notified)) == (1, "host", 1)
    serving.current_role = "worker"  # e.g. a model host changed state
    serving.on_change()
    assert (own.role, len(notified)) == ("worker", 2)


def test_a_lite_client_tells_the_mesh_it_is_a_client_from_the_start():
    *_, own, _ = make_node(client=True)
    assert own.role == "client"


# --- serve and drop ------------------------------------------------------------------------------

def test_serving_a_model_by_name_puts_it_first_and_remembers_the_name_for_drop():
    node, mesh, _, disk, own, notified = make_node(wants=[OTHER])
    assert run(node.serve("tiny")) == "tiny-q4_k_m"
    assert own.wants == [TINY, OTHER] and node.wants == [TINY, OTHER]
    assert node.aliases == {"tiny": "tiny-q4_k_m"}
    assert (mesh.refreshes, len(notified), disk.rescanned) == (1, 1, [])
    node.drop("tiny")
    assert own.wants == [OTHER] and mesh.refreshes == 2 and len(notified) == 2


def test_serving_a_model_again_moves_it_to_the_front_without_a_duplicate():
    node, *_, own, _ = make_node(wants=[TINY, OTHER])
    assert run(node.serve(str(OTHER))) == "other"
    assert own.wants == [OTHER, TINY] and node.aliases == {}


def test_a_file_new_on_disk_is_scanned_before_it_is_served():
    disk = Disk(usable=set(), appears_on_rescan={TINY})
    node, *_, own, _ = make_node(disk=disk)
    run(node.serve(str(TINY)))
    assert disk.rescanned == [TINY] and own.wants == [TINY]


def test_a_file_that_is_no_model_is_refused_with_the_reason_and_nothing_changes():
    disk = Disk(usable=set())
    node, mesh, *_, own, notified = make_node(disk=disk)
    with pytest.raises(ValueError, match=r"^/models/other.gguf is not a usable model file \(see the log for why\)$"):
        run(node.serve(str(OTHER)))
    assert disk.rescanned == [OTHER] and own.wants == [] and mesh.refreshes == 0 and notified == []


def test_a_name_the_app_cannot_resolve_is_its_error():
    node, *_ = make_node()
    with pytest.raises(ValueError, match="no model named 'nonesuch'"):
        run(node.serve("nonesuch"))


def test_dropping_a_model_this_node_does_not_serve_says_what_it_serves():
    node, mesh, *_ = make_node(wants=[TINY, OTHER])
    with pytest.raises(ValueError, match=r"^the mesh does not serve 'big' \(it serves: tiny-q4_k_m, other\)$"):
        node.drop("big")
    empty, *_ = make_node()
    with pytest.raises(ValueError, match=r"\(it serves: nothing\)$"):
        empty.drop("big")
    assert mesh.refreshes == 0


def test_dropping_the_pending_model_forgets_it():
    node, *_ = make_node(wants=[TINY], pending_model="tiny-q4_k_m")
    assert [status.id for status in node.model_statuses()] == ["tiny-q4_k_m"]
    node.drop("tiny-q4_k_m")
    assert node.pending_model is None and node.model_statuses() == []


# --- the pending model and aliases in requests ---------------------------------------------------

def test_the_pending_model_shows_as_loading_until_serving_reports_it():
    node, _, serving, *_ = make_node(pending_model="tiny-q4_k_m")
    assert node.model_statuses() == [ModelStatus("tiny-q4_k_m", "", ModelState.LOADING)]
    serving.statuses = [ModelStatus("tiny-q4_k_m", str(TINY), ModelState.READY)]
    assert node.model_statuses() == serving.statuses and node.model_ids() == ["tiny-q4_k_m"]


def test_a_request_for_the_pending_model_is_told_to_retry_shortly():
    node, _, serving, *_ = make_node(pending_model="tiny-q4_k_m", aliases={"tiny": "tiny-q4_k_m"})

    async def ask() -> list[dict]:
        return [event async for event in node.generate(chat_request("hi", model="tiny"))]

    with pytest.raises(ModelUnavailable, match="^model tiny-q4_k_m is starting; try again shortly$"):
        run(ask())
    serving.statuses = [ModelStatus("tiny-q4_k_m", str(TINY), ModelState.READY)]
    assert run(ask())[0]["text"] == "from tiny-q4_k_m"
    assert serving.requests == [("tiny-q4_k_m", False)]


# --- rename and the capacity cap -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "   ", "x" * (MAX_NAME + 1), "two\nlines", None, 7])
def test_a_name_that_is_not_1_to_64_printable_characters_is_refused(name):
    node, mesh, _, disk, own, notified = make_node()
    with pytest.raises(ValueError, match="^a node name is 1 to 64 printable characters$"):
        node.rename(name)
    assert disk.saved_names == [] and own.name == "alice" and mesh.refreshes == 0 and notified == []


def test_a_rename_is_saved_told_to_the_mesh_and_to_listeners():
    node, mesh, _, disk, own, notified = make_node()
    node.rename("  bob-desktop ")
    assert disk.saved_names == ["bob-desktop"]
    assert node.identity.name == own.name == mesh.credentials.name == "bob-desktop"
    assert mesh.refreshes == 1 and len(notified) == 1


def test_the_capacity_cap_changes_the_offer_and_the_mesh_is_told():
    node, mesh, *_ = make_node()
    node.set_capacity_cap(2.5)
    assert node.offer.capacity_bytes == int(2.5 * GIB) and mesh.refreshes == 1
    node.set_capacity_cap(None)
    assert node.offer.capacity_bytes == 8 * GIB and mesh.refreshes == 2
    node.set_donating(False)
    assert node.offer.capacity_bytes == 0 and mesh.refreshes == 3


@pytest.mark.parametrize("gigabytes", [-1, 1e6, float("nan")])
def test_a_capacity_cap_out_of_range_is_refused_and_the_offer_stays(gigabytes):
    node, mesh, *_ = make_node()
    with pytest.raises(ValueError, match="^a capacity cap is between 0 and 1000000 GB"):
        node.set_capacity_cap(gigabytes)
    assert node.offer.cap_bytes is None and mesh.refreshes == 0


# --- joining, invites, removal -------------------------------------------------------------------

def test_a_join_the_mesh_refuses_is_a_value_error_with_the_reason():
    node, mesh, *_, notified = make_node(mesh=FakeMesh(joins=[JoinRefused("this invite was revoked")]))
    with pytest.raises(ValueError, match="^cannot join: this invite was revoked$"):
        run(node.join(token_text()))
    assert len(mesh.joined) == 1 and notified == []


def test_an_unreachable_inviter_is_a_value_error_that_says_to_check_the_address():
    node, *_ = make_node(mesh=FakeMesh(joins=[False]))
    with pytest.raises(ValueError, match="^cannot reach the inviting node; check the address and try again$"):
        run(node.join(token_text()))


def test_a_join_tells_listeners_and_a_malformed_token_never_reaches_the_mesh():
    node, mesh, *_, notified = make_node(mesh=FakeMesh(joins=[True]))
    run(node.join(token_text()))
    assert [token.mesh_id for token in mesh.joined] == ["0123456789abcdef"] and len(notified) == 1
    with pytest.raises(TokenError):
        run(node.join("not a token"))
    assert len(mesh.joined) == 1


def test_invites_revocations_and_removals_need_a_mesh():
    node, mesh, *_ = make_node(mesh=FakeMesh(mesh_id=None))
    for attempt in (lambda: node.mint_invite(60), lambda: node.revoke(token_text()), lambda: node.remove("b" * 20)):
        with pytest.raises(ValueError, match="^this node is not in a mesh yet$"):
            attempt()
    assert mesh.revoked == [] and mesh.removed == []


def test_revoke_and_remove_reach_the_mesh():
    node, mesh, *_ = make_node()
    node.revoke(token_text())
    node.remove("b" * 20)
    assert [token.mesh_id for token in mesh.revoked] == ["0123456789abcdef"] and mesh.removed == ["b" * 20]


# --- running ---------------------------------------------------------------------------------------

def test_a_running_node_runs_its_workers_and_jobs_and_stops_serving_when_cancelled():
    started: list[str] = []
    all_started = asyncio.Event()

    def work(name: str):
        async def job() -> None:
            started.append(name)
            if len(started) == 2:
                all_started.set()
        return job

    disk = Disk(set())
    node, mesh, serving, *_ = make_node(disk=disk, hooks=disk.hooks(workers=(work("rpc worker"),),
                                                                     background_jobs=(work("rescan"),)))

    async def scenario():
        running = asyncio.ensure_future(node.run())
        await all_started.wait()
        await mesh.running.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    run(scenario())
    assert started == ["rpc worker", "rescan"] and serving.stopped
