"""`meshdesk invite | revoke | remove`: mesh commands that act on one home's node."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from meshdesk.adapters.secret_store import open_secret_store
from meshdesk.app.command_line import CommandFailed, OneLineErrorParser
from meshdesk.app.home import Home, default_home
from meshdesk.app.mesh_setup import load_node_key
from meshdesk.app.running_node import RunningNode, running_node
from meshdesk.core.invite import InviteToken, TokenError, decode_token, parse_duration
from meshdesk.node.mesh_state import load_memory, save_memory


def duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=f"meshdesk {command}", description=DESCRIPTIONS[command])
    parser.add_argument("--home", type=Path, metavar="DIR",
                        help="the node's data folder (default: $MESHDESK_HOME or the platform's)")
    if command == "invite":
        parser.add_argument("--expires", type=duration, default=parse_duration("7d"),
                            metavar="DURATION", help="e.g. 30m, 12h, 7d, 2w or never (default: 7d)")
    elif command == "revoke":
        parser.add_argument("token", help="the invite token or meshdesk://join/ link to revoke")
    elif command == "drop":
        parser.add_argument("model", help="the model this node should stop serving")
    elif command == "admin":
        parser.add_argument("node_id", help="the id of the member to name admin (see /api/status)")
    else:
        parser.add_argument("node_id", help="the id of the node to remove (see /api/status)")
    return parser


DESCRIPTIONS = {
    "invite": "Mint an invite token for this node's mesh.",
    "revoke": "Revoke an invite token, mesh-wide.",
    "remove": "Remove a node from the mesh, mesh-wide; it cannot come back with its old credentials.",
    "drop": "Stop serving a model on every node of the mesh (any member may); serve it again to undo.",
    "admin": "Name a member an admin, who may then remove members and revoke invites (the founder only).",
}


def run_command(command: str, argv: list[str]) -> int:
    if command in ("models", "download"):
        from meshdesk.app.model_commands import run_model_command

        return run_model_command(command, argv)
    if command == "run":
        from meshdesk.app.agent_run import run_agent_command

        return run_agent_command(argv)
    arguments = command_parser(command).parse_args(argv)
    home = Home((arguments.home or default_home()).expanduser().resolve())
    try:
        if command == "invite":
            print_invite(mint(home, arguments.expires))
        elif command == "revoke":
            revoke(home, arguments.token)
        elif command == "drop":
            drop(home, arguments.model)
        elif command == "admin":
            make_admin(home, arguments.node_id)
        else:
            remove(home, arguments.node_id)
    except CommandFailed as failure:
        sys.stderr.write(f"meshdesk {command}: error: {failure}\n")
        return 2
    return 0


def print_invite(token: InviteToken) -> None:
    print(f"Invite token: {token.encode()}")
    print(f"Invite link: {token.link()}")
    if token.expires_at:
        print(f"Expires: {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(token.expires_at))}")


def mint(home: Home, expires_in: int) -> InviteToken:
    """By the running node when there is one (it knows its addresses now), else offline."""
    node = running_node(home)
    if node is None:
        return mint_offline(home, expires_in)
    answer = node.post("/api/invite", {"expires_in": expires_in})
    try:
        return decode_token(answer["token"])
    except (KeyError, TypeError, TokenError) as error:
        raise CommandFailed(f"the running node minted no usable invite: {error}") from None


def mint_offline(home: Home, expires_in: int) -> InviteToken:
    """Signs an invite with the node's key, for a node that is not running. (The invite names
    the mesh by id; the mesh secret, rotated after a removal, is not in it.)"""
    memory = load_memory(home.root)
    secrets = open_secret_store(home.root)
    if not memory.mesh_id:
        raise CommandFailed(f"{home.root} has no mesh yet: start `meshdesk --home {home.root}` first")
    if not memory.advertised:
        raise CommandFailed("this node has never listened on a mesh port; start it first")
    key = load_node_key(secrets)
    expires_at = 0 if expires_in == 0 else int(time.time()) + expires_in
    token = InviteToken(mesh_id=memory.mesh_id, join_secret=os.urandom(16), inviter_key=key.public_bytes,
                        addresses=tuple(tuple(address) for address in memory.advertised),
                        expires_at=expires_at)
    return token.signed(key.sign)


def revoke(home: Home, token_text: str) -> None:
    try:
        token = decode_token(token_text)
    except TokenError as error:
        raise CommandFailed(str(error)) from None
    node = running_node(home)
    if node is not None:
        node.post("/api/revoke", {"token": token_text})
        print(f"Revoked invite {token.token_id} across the mesh.")
        return
    record_offline(home, "revoked", token.token_id, token.mesh_id)
    print(f"Revoked invite {token.token_id}; the mesh hears of it when this node next starts.")


def live_node(home: Home, why: str) -> RunningNode:
    """The node running for `home`, for a command only a running node can carry out."""
    node = running_node(home)
    if node is None:
        raise CommandFailed(f"no MeshDesk node is running for {home.root}; {why}")
    return node


def make_admin(home: Home, node_id: str) -> None:
    live_node(home, "an admin is named by a running node").post("/api/admin", {"node_id": node_id})
    print(f"Node {node_id} is now an admin of the mesh: it may remove members and revoke invites.")


def remove(home: Home, node_id: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{20}", node_id):
        raise CommandFailed(f"not a node id: {node_id!r} (20 hex characters, as in /api/status)")
    node = running_node(home)
    if node is not None:
        node.post("/api/remove", {"node_id": node_id})
        print(f"Removed node {node_id} from the mesh.")
        return
    record_offline(home, "removed", node_id, None)
    print(f"Removed node {node_id}; the mesh hears of it when this node next starts.")


def drop(home: Home, model: str) -> None:
    live_node(home, "a stopped node serves nothing").post("/api/drop", {"model": model})
    print(f"Dropped {model}.")


def record_offline(home: Home, field: str, value: str, mesh_id: str | None) -> None:
    memory = load_memory(home.root)
    if not memory.mesh_id:
        raise CommandFailed(f"{home.root} has no mesh yet")
    if mesh_id is not None and mesh_id != memory.mesh_id:
        raise CommandFailed(f"that invite is for another mesh ({mesh_id}), not {memory.mesh_id}")
    if not memory.may_decide(load_node_key(open_secret_store(home.root)).public_bytes):
        raise CommandFailed("only the mesh's founder and the admins it names can remove members or revoke invites")
    values = getattr(memory, field)
    if value not in values:
        values.append(value)
    save_memory(home.root, memory)
