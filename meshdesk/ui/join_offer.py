"""What the Join view shows before a join, and what the user must confirm (a view model: no Qt).

An invite reaches this node from a link, a paste or a QR code; none of those is consent. The
offer names the mesh, the inviter, the addresses and the expiry, says plainly when joining
leaves the mesh this node is in, and tells the view which confirmations the join button needs.
The same lines are printed by a headless node given a bare link.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from meshdesk.core.invite import InviteToken, describe_age
from meshdesk.core.status import StatusSnapshot

SHORT_ID = 8  # characters of a mesh or node id shown; the full id is in the details


def short(identifier: str) -> str:
    return identifier[:SHORT_ID]


@dataclass(frozen=True)
class JoinOffer:
    text: str                    # the token or link to join with once confirmed
    mesh_id: str
    title: str                   # "Join mesh 1a2b3c4d?"
    details: tuple[str, ...]     # mesh, inviter, addresses, expiry: one line each
    leaving: str | None          # "You are in mesh X with N members; joining Y leaves it."
    leave_label: str | None      # the tick that consents to leaving it
    note: str | None             # a milder remark (this node's own mesh, alone, is left)
    problem: str | None          # why it cannot be joined (expired, forged, already in it)
    confirm_label: str

    @property
    def can_join(self) -> bool:
        return self.problem is None

    @property
    def needs_leave_confirmation(self) -> bool:
        """Joining leaves a mesh with other members: a second, explicit tick is needed."""
        return self.leaving is not None

    def lines(self) -> list[str]:
        """Everything the offer says, as plain text (the headless description)."""
        return [self.title, *self.details, *(line for line in (self.leaving, self.note, self.problem) if line)]


def expiry_line(expires_at: int, now: float) -> str:
    if expires_at == 0:
        return "never expires"
    when = datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if now >= expires_at:
        return f"expired {describe_age(now - expires_at)} ({when})"
    return f"expires in {duration(expires_at - now)} ({when})"


def duration(seconds: float) -> str:
    for unit_seconds, unit, switch_after in ((1, "s", 90), (60, "min", 90), (3600, "h", 48)):
        if seconds < unit_seconds * switch_after:
            return f"{int(seconds // unit_seconds)} {unit}"
    return f"{int(seconds // 86400)} d"


def address_line(addresses: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in addresses)


def inviter_line(token: InviteToken, snapshot: StatusSnapshot | None) -> str:
    names = {peer.id: peer.name for peer in snapshot.peers} if snapshot is not None else {}
    name = names.get(token.inviter_id)
    return f"{name} ({short(token.inviter_id)})" if name else f"node {short(token.inviter_id)} (name not known yet)"


def join_offer(text: str, token: InviteToken, now: float, snapshot: StatusSnapshot | None,
               leaving: tuple[str, int] | None, problem: str | None = None) -> JoinOffer:
    """`leaving` is the (mesh id, members) the node says a join would leave (`Node.mesh_left_by`);
    `problem` what the node found wrong with the token on its own (`Node.invite_problem`)."""
    target = short(token.mesh_id)
    details = (f"Mesh: {target} (id {token.mesh_id})",
               f"Invited by: {inviter_line(token, snapshot)}",
               f"Addresses: {address_line(token.addresses)}",
               f"Invite {expiry_line(token.expires_at, now)}")
    if token.expires_at and now >= token.expires_at:
        problem = problem or f"This invite {expiry_line(token.expires_at, now)}."
    current = snapshot.mesh if snapshot is not None else None
    if current is not None and current.id == token.mesh_id and not current.removed_from_mesh:
        problem = problem or f"This node is already in mesh {target}."
    leave_text = leave_label = note = None
    if leaving is not None:
        current_id, members = leaving
        leave_text = (f"You are in mesh {short(current_id)} with {members} members; "
                      f"joining {target} leaves it.")
        leave_label = f"Yes, leave mesh {short(current_id)} and its {members} members"
    elif current is not None and current.id != token.mesh_id:
        note = f"This node's own mesh {short(current.id)} has no other members; joining {target} replaces it."
    confirm = f"Leave mesh {short(leaving[0])} and join {target}" if leaving else f"Join mesh {target}"
    return JoinOffer(text=text, mesh_id=token.mesh_id, title=f"Join mesh {target}?", details=details,
                     leaving=leave_text, leave_label=leave_label, note=note, problem=problem, confirm_label=confirm)
