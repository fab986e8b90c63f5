"""Real nodes: incompatible builds are refused, invite links work, and mesh commands validate."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

import pytest

from meshdesk.adapters.node_keys import NodeKey, verify_signature
from meshdesk.app.mesh_setup import node_versions
from meshdesk.core import handshake as core_handshake
from meshdesk.core.handshake import PROTOCOL_VERSION, HandshakeError
from meshdesk.core.invite import LINK_PREFIX, decode_token
from meshdesk.node import handshake
from meshdesk.node.handshake import Credentials
from meshdesk.node.mesh_state import STATE_FILE
from tests.mesh_tools import quic_transport
from tests.nodes import poll

pytestmark = pytest.mark.slow


def http(node, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **node.auth()})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_openai_error(status: int, body: dict, param: str | None, *fragments: str) -> None:
    assert status == 400, body
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert isinstance(error["message"], str) and "\n" not in error["message"]
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


def refusal_for(token_text: str, name: str, versions: dict) -> str:
    """Dials the inviter with a fresh key and these versions; the handshake's refusal, as text."""
    token = decode_token(token_text)

    async def dial() -> str:
        key = NodeKey.generate()
        credentials = Credentials(key.public_bytes, key.sign, verify_signature, name, versions, os.urandom)
        transport = quic_transport(key)
        link = await transport.connect(token.addresses[0])
        try:
            with pytest.raises(HandshakeError) as raised:
                await handshake.dial(link, credentials, token.mesh_id, None, invite=token_text,
                                     expected_node_key=token.inviter_key)
        finally:
            link.close("done")
            await transport.stop()
        return str(raised.value)

    return asyncio.run(dial())


def test_a_peer_of_another_rpc_build_is_refused_and_the_founder_says_why(node_factory):
    founder = node_factory("--client")
    token_text = founder.invite_token()
    assert node_versions()["rpc"] is not None  # the founder has an rpc version to compare
    reason = refusal_for(token_text, "odd-peer", {"app": "x", "protocol": PROTOCOL_VERSION, "rpc": "other build"})
    assert reason.startswith("refused by peer: incompatible rpc version"), reason
    assert "'other build'" in reason
    refusals = poll(lambda: [r for r in founder.status()["refusals"] if "incompatible rpc version" in r["reason"]],
                    10, message="the founder to record the refusal")
    assert "other build" in refusals[0]["reason"] and refusals[0]["address"].startswith("127.0.0.1:")
    status = founder.status()
    assert status["mesh"]["members"] == 1 and status["peers"] == []


def test_a_node_of_the_previous_protocol_is_refused_and_the_founder_says_why(node_factory, monkeypatch):
    """Mesh protocol 4 (requests carry tools, tool_choice and response_format) refuses a protocol 3
    node at the handshake, before any request it would strip of its tools, and says which
    protocols met."""
    founder = node_factory("--client")
    token_text = founder.invite_token()
    monkeypatch.setattr(core_handshake, "PROTOCOL_VERSION", PROTOCOL_VERSION - 1)  # an older build dials
    reason = refusal_for(token_text, "old-peer", node_versions())
    assert reason == f"refused by peer: peer speaks mesh protocol {PROTOCOL_VERSION - 1}, we speak {PROTOCOL_VERSION}"
    refusals = poll(lambda: [r for r in founder.status()["refusals"] if "mesh protocol" in r["reason"]],
                    10, message="the founder to record the refusal")
    assert refusals[0]["reason"] == f"peer speaks mesh protocol {PROTOCOL_VERSION - 1}, we speak {PROTOCOL_VERSION}"
    assert founder.status()["mesh"]["members"] == 1


def test_a_node_joins_with_the_printed_invite_link(node_factory):
    founder = node_factory("--client")
    link = founder.printed("Invite link: ")
    assert link.startswith(LINK_PREFIX) and link == LINK_PREFIX + founder.invite_token()
    joiner = node_factory("--client", "--join", link)
    joiner.printed("Joined mesh")
    poll(lambda: joiner.node_id in founder.peer_ids() and founder.node_id in joiner.peer_ids(), 10,
         message="the node joined by link to link up")
    assert joiner.status()["mesh"]["id"] == founder.status()["mesh"]["id"]
    assert joiner.status()["refusals"] == [] and founder.status()["refusals"] == []


def test_mesh_commands_reject_bad_input_with_openai_errors(node_factory):
    founder = node_factory("--client")
    founder.invite_token()  # in a mesh by now
    own_id = founder.node_id

    for expires, shown in (("1h", '"1h"'), (-300, "-300"), (100000 * 86400, "8640000000"), (True, "true")):
        status, body = http(founder, "POST", "/api/invite", {"expires_in": expires})
        assert_openai_error(status, body, "expires_in", shown)
    status, body = http(founder, "POST", "/api/invite", {"expires_in": 3600})
    assert status == 200 and body["link"].startswith(LINK_PREFIX)

    for node_id, fragment in [("nonsense", "not a node id: 'nonsense'"),
                              ("0" * 20, f"no node {'0' * 20} is known in this mesh"),
                              ("A" * 20, "not a node id"),
                              (own_id, "cannot remove itself")]:
        status, body = http(founder, "POST", "/api/remove", {"node_id": node_id})
        assert_openai_error(status, body, "node_id", fragment)
    for body_sent in ({}, {"node_id": 5}, {"node_id": ""}):
        status, body = http(founder, "POST", "/api/remove", body_sent)
        assert_openai_error(status, body, "node_id", "'node_id' must be a non-empty string")
    status, body = http(founder, "POST", "/api/remove", b"not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"

    for token, fragment in [("garbage", "not a MeshDesk invite token"),
                            (LINK_PREFIX + "AAAA", "not a MeshDesk invite token")]:
        status, body = http(founder, "POST", "/api/revoke", {"token": token})
        assert_openai_error(status, body, "token", fragment)
    status, body = http(founder, "POST", "/api/revoke", {"token": ["garbage"]})
    assert_openai_error(status, body, "token", "'token' must be a non-empty string")
    status, body = http(founder, "POST", "/api/revoke", b"\xff\xfe")
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}

    memory = json.loads((founder.home / STATE_FILE).read_text())
    assert memory["removed"] == [] and memory["revoked"] == []  # nothing bogus was recorded
    assert founder.status()["mesh"]["removed_from_mesh"] is False


def test_removing_a_real_member_still_works(node_factory):
    founder = node_factory("--client")
    friend = node_factory("--client", "--join", founder.invite_token())
    friend_id = friend.node_id
    poll(lambda: friend_id in founder.peer_ids(), 10, message="the friend to join")
    status, body = http(founder, "POST", "/api/remove", {"node_id": friend_id})
    assert status == 200 and body == {"removed": friend_id}
    poll(lambda: friend.status()["mesh"]["removed_from_mesh"], 10, message="the friend to learn it was removed")
    status, body = http(founder, "POST", "/api/remove", {"node_id": friend_id})  # again: harmless
    assert status == 200
