"""Web pages against the local API, through real HTTP on 127.0.0.1.

Most tests run the real `OpenAiServer` in this process, in front of a fake gateway that records
every change a request makes, and attack it as a browser would: a DNS-rebinding page (its own
name in Host), a cross-site "simple" POST (text/plain, no preflight), a foreign Origin, a local
program without the secret. Each attack must be refused with an OpenAI-shaped error and leave
the node's state as it was; the honest callers (the secret's holder, the openai client, an
allowed origin) must still be served. Two slow tests repeat the story on a real node process,
with the command line (`meshdesk invite`, `revoke`, `models`, `drop`) as the honest caller.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import os
import stat
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import openai
import pytest

from meshdesk.adapters.openai_server import OpenAiServer
from meshdesk.core.invite import decode_token
from meshdesk.core.local_api_policy import ApiAccess
from tests.nodes import run_meshdesk

TOKEN = "local-secret-" + "s" * 32
KEY = "sk-meshdesk-test-key"
APP = "http://localhost:3000"
EVIL = "http://evil.example"
MODEL = "tiny"

# Every state-changing route, with a body that would change something if it got through.
STATE_CHANGES = [
    ("/api/name", {"name": "pwned"}),
    ("/api/capacity", {"max_vram_gb": 0, "donating": False}),
    ("/api/serve", {"model": "attacker-model"}),
    ("/api/remove", {"node_id": "a" * 20}),
    ("/api/drop", {"model": MODEL}),
    ("/api/revoke", {"token": "x"}),
    ("/api/invite", {"expires_in": 0}),
]


class FakeGateway:
    """The node as the API sees it; `state()` is everything a request could have changed."""

    def __init__(self):
        self.name, self.cap, self.donating = "alice", None, True
        self.wants, self.removed, self.revoked = [MODEL], [], []
        self.invites = self.generations = self.status_reads = 0

    def state(self) -> dict:
        return copy.deepcopy({key: value for key, value in vars(self).items() if key != "status_reads"})

    def model_statuses(self):
        return [SimpleNamespace(id=MODEL)]

    async def generate(self, request):
        self.generations += 1
        yield {"type": "delta", "text": "hello"}
        yield {"type": "finish", "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}

    def status(self):
        self.status_reads += 1
        offer = SimpleNamespace(to_wire=lambda: {"max_vram_gb": self.cap, "donating": self.donating})
        wire = {"node": {"name": self.name}, "peers": [{"name": "bob", "addresses": [["192.168.1.7", 7000]]}]}
        return SimpleNamespace(offer=offer, to_wire=lambda: wire)

    def mint_invite(self, expires_in: int) -> dict:
        self.invites += 1
        return {"token": "secret-invite", "link": "meshdesk://join/secret-invite", "expires_at": expires_in,
                "token_id": "id"}

    def revoke(self, token_text: str) -> None:
        self.revoked.append(token_text)

    def remove(self, node_id: str) -> None:
        self.removed.append(node_id)

    def set_capacity_cap(self, gigabytes) -> None:
        self.cap = gigabytes

    def set_donating(self, donating: bool) -> None:
        self.donating = donating

    async def serve(self, model: str) -> str:
        self.wants.insert(0, model)
        return model

    def drop(self, model: str) -> None:
        self.wants.remove(model)

    def rename(self, name: str) -> None:
        self.name = name


class ServedApi:
    """The real server on a free 127.0.0.1 port, its event loop in a thread of its own."""

    def __init__(self, access: ApiAccess):
        self.gateway = FakeGateway()
        self.server = OpenAiServer(self.gateway, access)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(self.server.start(0))

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, api_key: str = "anything") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://{self.host}/v1", api_key=api_key, max_retries=0, timeout=10)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def error(self) -> dict:
        """The OpenAI-shaped error this answer must be."""
        body = json.loads(self.text)
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["message"] and "\n" not in body["error"]["message"]
        return body["error"]


def send(port: int, method: str, path: str, headers: dict | list = (), body: bytes | None = None) -> Answer:
    """One request with exactly these headers (Host included, or left out), as a browser would
    send it after a rebinding, or as a page's form or fetch would."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in (headers.items() if isinstance(headers, dict) else headers):
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


@pytest.fixture
def served():
    started: list[ServedApi] = []

    def start(**settings) -> ServedApi:
        api = ServedApi(ApiAccess(TOKEN, **settings))
        started.append(api)
        return api

    yield start
    for api in started:
        api.close()


def secret() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


# --- DNS rebinding ----------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("GET", "/api/status"), ("GET", "/api/invite"),
                                          ("POST", "/api/invite"), ("GET", "/v1/models"),
                                          ("POST", "/v1/chat/completions")])
def test_a_rebinding_page_reads_and_mints_nothing(served, method, path):
    """After rebinding, the page is same-origin with the API: it may send JSON and any header,
    even (were it to learn it) the secret. Only its name in Host gives it away."""
    api = served()
    before = api.gateway.state()
    body = json.dumps({"expires_in": 0, "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    answer = send(api.port, method, path, {"Host": f"evil.example:{api.port}", "Content-Type": "application/json",
                                           **secret()}, body.encode() if method == "POST" else None)
    assert answer.status == 403 and answer.error["code"] == "host_not_allowed"
    assert "DNS rebinding" in answer.error["message"]
    assert "secret-invite" not in answer.text and "192.168" not in answer.text
    assert api.gateway.state() == before and api.gateway.status_reads == 0


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:1",
                                  "localhost.evil.example:{port}", "127.0.0.1"])
def test_only_the_loopback_names_with_this_port_are_hosts(served, host):
    api = served()
    answer = send(api.port, "GET", "/v1/models", {"Host": host.format(port=api.port)})
    assert answer.status == 403 and answer.error["code"] == "host_not_allowed"
    assert send(api.port, "GET", "/v1/models").status == 400  # no Host: aiohttp refuses it itself
    for honest in ("127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"):
        assert send(api.port, "GET", "/v1/models", {"Host": honest.format(port=api.port)}).status == 200


def test_a_second_host_header_is_refused(served):
    api = served()
    answer = send(api.port, "GET", "/v1/models", [("Host", api.host), ("Host", f"evil.example:{api.port}")])
    assert answer.status in (400, 403)


# --- cross-site simple requests -----------------------------------------------------------------


@pytest.mark.parametrize("path, body", STATE_CHANGES)
@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded"])
def test_a_cross_site_simple_post_changes_nothing(served, path, body, content_type):
    """What a page can send to http://127.0.0.1:PORT without a preflight: right Host, its own
    Origin, a simple content type, no secret."""
    api = served()
    before = api.gateway.state()
    answer = send(api.port, "POST", path, {"Host": api.host, "Origin": EVIL, "Content-Type": content_type},
                  json.dumps(body).encode())
    assert answer.status == 403 and answer.error["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert api.gateway.state() == before


@pytest.mark.parametrize("path, body", STATE_CHANGES)
def test_each_layer_alone_refuses_a_state_change(served, path, body):
    """Take away the Origin (an old browser, a plugin): the secret refuses. Hold the secret: the
    text/plain body still does not count. Send JSON with the secret from a foreign page: its
    Origin refuses. Nothing changes in any case; JSON with the secret and no page is served."""
    api = served()
    before = api.gateway.state()
    data = json.dumps(body).encode()
    cases = [({"Content-Type": "text/plain"}, 401, "invalid_api_token"),
             ({"Content-Type": "application/json"}, 401, "invalid_api_token"),
             ({"Content-Type": "text/plain", **secret()}, 415, "unsupported_media_type"),
             ({**secret()}, 415, "unsupported_media_type"),
             ({"Content-Type": "application/json", "Origin": EVIL, **secret()}, 403, "origin_not_allowed")]
    for headers, status, code in cases:
        answer = send(api.port, "POST", path, {"Host": api.host, **headers}, data)
        assert (answer.status, answer.error["code"]) == (status, code), headers
    assert api.gateway.state() == before
    honest = send(api.port, "POST", path, {"Host": api.host, "Content-Type": "application/json", **secret()}, data)
    assert honest.status == 200, honest.text
    assert api.gateway.state() != before


def test_a_cross_site_post_to_v1_runs_no_generation(served):
    api = served()
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "mine now"}]}).encode()
    for headers in ({"Origin": EVIL, "Content-Type": "text/plain"}, {"Content-Type": "text/plain"}):
        answer = send(api.port, "POST", "/v1/chat/completions", {"Host": api.host, **headers}, body)
        assert answer.status in (403, 415)
    assert api.gateway.generations == 0


# --- origins and CORS ---------------------------------------------------------------------------


def test_a_foreign_origin_is_refused_and_an_allowed_one_gets_cors(served):
    api = served(allowed_origins=frozenset({APP}))
    refused = send(api.port, "GET", "/v1/models", {"Host": api.host, "Origin": EVIL})
    assert refused.status == 403 and "Access-Control-Allow-Origin" not in refused.headers
    preflight_refused = send(api.port, "OPTIONS", "/v1/chat/completions",
                             {"Host": api.host, "Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert preflight_refused.status == 403 and "Access-Control-Allow-Origin" not in preflight_refused.headers

    preflight = send(api.port, "OPTIONS", "/v1/chat/completions",
                     {"Host": api.host, "Origin": APP, "Access-Control-Request-Method": "POST",
                      "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    listed = send(api.port, "GET", "/v1/models", {"Host": api.host, "Origin": APP})
    assert listed.status == 200 and listed.headers["Access-Control-Allow-Origin"] == APP
    assert json.loads(listed.text)["data"][0]["id"] == MODEL
    body = json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    streamed = send(api.port, "POST", "/v1/chat/completions",
                    {"Host": api.host, "Origin": APP, "Content-Type": "application/json"}, body)
    assert streamed.status == 200 and streamed.headers["Access-Control-Allow-Origin"] == APP
    assert "hello" in streamed.text and "[DONE]" in streamed.text
    # an allowed page reads the refusal it gets, but still needs the secret for management
    status = send(api.port, "GET", "/api/status", {"Host": api.host, "Origin": APP})
    assert status.status == 401 and status.headers["Access-Control-Allow-Origin"] == APP


# --- the local secret ---------------------------------------------------------------------------


def test_management_needs_the_local_secret(served):
    api = served()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = send(api.port, "GET", "/api/status", {"Host": api.host, **headers})
        assert answer.status == 401 and answer.error["code"] == "invalid_api_token"
        assert "api-token" in answer.error["message"] and "192.168" not in answer.text
    assert api.gateway.status_reads == 0
    answer = send(api.port, "GET", "/api/status", {"Host": api.host, **secret()})
    assert answer.status == 200 and json.loads(answer.text)["node"]["name"] == "alice"


@pytest.mark.parametrize("path", ["/v1/../api/status", "/v1/%2e%2e/api/status", "/v1%2F..%2Fapi/status",
                                  "//api/status", "/v1/./../api/status", "/api//status", "/API/status"])
def test_no_spelling_of_a_path_skips_the_secret(served, path):
    api = served()
    answer = send(api.port, "GET", path, {"Host": api.host})
    assert answer.status in (401, 404), answer.text
    assert api.gateway.status_reads == 0


def test_invites_are_minted_with_post_only(served):
    api = served()
    moved = send(api.port, "GET", "/api/invite", {"Host": api.host, **secret()})
    assert moved.status == 405 and moved.headers["Allow"] == "POST"
    assert "POST /api/invite" in moved.error["message"] and api.gateway.invites == 0
    json_headers = {"Host": api.host, "Content-Type": "application/json", **secret()}
    for bad in ({"expires_in": "1h"}, {"expires_in": -1}, {"expires_in": True}, {"expires_in": 10 ** 12}):
        answer = send(api.port, "POST", "/api/invite", json_headers, json.dumps(bad).encode())
        assert answer.status == 400 and answer.error["param"] == "expires_in"
    assert api.gateway.invites == 0
    minted = send(api.port, "POST", "/api/invite", json_headers, b'{"expires_in": 3600}')
    assert minted.status == 200 and json.loads(minted.text)["expires_at"] == 3600
    default = send(api.port, "POST", "/api/invite", json_headers, b"{}")
    assert json.loads(default.text)["expires_at"] == 7 * 24 * 3600


# --- /v1 and --api-key --------------------------------------------------------------------------


def test_v1_is_open_to_local_programs_by_default(served):
    api = served()
    reply = api.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello"
    assert [model.id for model in api.client("any-key").models.list()] == [MODEL]
    assert send(api.port, "GET", "/v1/models", {"Host": api.host}).status == 200  # no Authorization at all


def test_an_api_key_guards_v1_as_openai_does(served):
    api = served(api_key=KEY)
    with pytest.raises(openai.AuthenticationError) as refused:
        api.client("wrong").chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    bare = send(api.port, "GET", "/v1/models", {"Host": api.host})
    assert bare.status == 401 and bare.headers["WWW-Authenticate"] == "Bearer"
    assert "didn't provide an API key" in bare.error["message"]
    with pytest.raises(openai.AuthenticationError):
        api.client(TOKEN).models.list()  # the management secret is not the API key
    assert api.gateway.generations == 0

    client = api.client(KEY)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello"
    chunks = client.chat.completions.create(model=MODEL, stream=True, messages=[{"role": "user", "content": "hi"}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "hello"
    assert send(api.port, "GET", "/api/status", {"Host": api.host, **secret()}).status == 200


# --- a real node --------------------------------------------------------------------------------


def attack_real_node(node) -> None:
    """A rebinding page and a cross-site form against a running node: nothing read or changed."""
    port = node.port
    for method, path in (("GET", "/api/status"), ("POST", "/api/invite"), ("GET", "/api/invite")):
        answer = send(port, method, path, {"Host": f"evil.example:{port}", "Content-Type": "application/json"},
                      b"{}" if method == "POST" else None)
        assert answer.status == 403 and "Invite" not in answer.text and "token" not in json.loads(answer.text)
    before = node.status()
    for path, body in STATE_CHANGES:
        answer = send(port, "POST", path, {"Host": f"127.0.0.1:{port}", "Origin": EVIL,
                                           "Content-Type": "text/plain"}, json.dumps(body).encode())
        assert answer.status == 403, answer.text
    after = node.status()
    assert after["node"]["name"] == before["node"]["name"] and after["wants"] == before["wants"]
    assert after["offer"] == before["offer"]


def seeded_home(tmp_path, model_path):
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.link(model_path, home / "models" / model_path.name)
    return home


@pytest.mark.slow
def test_a_real_node_refuses_web_pages_and_serves_its_owner(node_factory, tmp_path, default_model_path):
    node = node_factory("--threads", "1", "--api-key", KEY, "--allow-origin", APP,
                        home=seeded_home(tmp_path, default_model_path))
    token_file = node.home / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    attack_real_node(node)

    node.wait_until_ready()
    model = node.status()["models"][0]["id"]
    reply = node.client(api_key=KEY).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0)
    assert reply.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        node.client(api_key="meshdesk").models.list()
    listed = send(node.port, "GET", "/v1/models", {"Host": f"localhost:{node.port}", "Origin": APP,
                                                   "Authorization": f"Bearer {KEY}"})
    assert listed.status == 200 and listed.headers["Access-Control-Allow-Origin"] == APP

    home = ["--home", str(node.home)]
    listing = run_meshdesk("models", "--json", *home)
    assert listing.returncode == 0 and json.loads(listing.stdout)["mesh_members"] == 1, listing.stderr
    dropped = run_meshdesk("drop", model, *home)
    assert dropped.returncode == 0 and model not in node.status()["wants"], dropped.stderr


@pytest.mark.slow
def test_the_command_line_drives_a_real_node_with_the_secret(node_factory):
    node = node_factory("--client")
    node.invite_token()
    attack_real_node(node)
    home = ["--home", str(node.home)]
    minted = run_meshdesk("invite", "--expires", "1h", *home)
    assert minted.returncode == 0, minted.stderr
    token = decode_token(minted.stdout.split("Invite token: ")[1].split()[0])
    assert token.mesh_id == node.status()["mesh"]["id"]
    revoked = run_meshdesk("revoke", token.encode(), *home)
    assert revoked.returncode == 0 and "across the mesh" in revoked.stdout, revoked.stderr

    token_file = node.home / "api-token"
    real = token_file.read_text()
    token_file.write_text("someone-else-" + "x" * 32)
    try:
        refused = run_meshdesk("invite", *home)
        assert refused.returncode == 2 and "refused the secret" in refused.stderr
        assert "Invite token" not in refused.stdout
    finally:
        token_file.write_text(real)
    assert run_meshdesk("invite", *home).returncode == 0
