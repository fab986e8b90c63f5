"""The local API's access policy as a table: method, path and headers in, a decision out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdesk.core.local_api_policy import ApiAccess, judge, parse_origin

PORT = 9337
TOKEN = "t" * 43
KEY = "sk-local-key"
HOST = ("Host", f"127.0.0.1:{PORT}")
SECRET = ("Authorization", f"Bearer {TOKEN}")
JSON = ("Content-Type", "application/json")
OPEN = ApiAccess(TOKEN)
KEYED = ApiAccess(TOKEN, api_key=KEY)
APP = "http://localhost:3000"
WITH_APP = ApiAccess(TOKEN, allowed_origins=frozenset({APP}))


def outcome(method: str, path: str, headers, access: ApiAccess = OPEN) -> int | str:
    """200 for allowed, 204 for an answered preflight, else the refusal's status and code."""
    decision = judge(method, path, headers, PORT, access)
    if decision.refusal is not None:
        return f"{decision.refusal.status} {decision.refusal.code}"
    return 204 if decision.preflight else 200


@pytest.mark.parametrize("method, path, headers, access, expected", [
    # the honest callers: the CLI with its secret, a local program on /v1
    ("GET", "/api/status", [HOST, SECRET], OPEN, 200),
    ("POST", "/api/name", [HOST, SECRET, JSON], OPEN, 200),
    ("POST", "/api/invite", [HOST, SECRET, ("content-type", "application/json; charset=utf-8")], OPEN, 200),
    ("GET", "/v1/models", [HOST], OPEN, 200),
    ("POST", "/v1/chat/completions", [HOST, JSON], OPEN, 200),
    ("GET", "/v1/models", [("Host", f"localhost:{PORT}")], OPEN, 200),
    ("GET", "/v1/models", [("Host", f"LOCALHOST:{PORT}")], OPEN, 200),
    ("GET", "/v1/models", [("Host", f"[::1]:{PORT}")], OPEN, 200),
    # DNS rebinding: the page's own name, whatever else it carries
    ("GET", "/api/status", [("Host", f"evil.example:{PORT}"), SECRET], OPEN, "403 host_not_allowed"),
    ("POST", "/api/invite", [("Host", f"evil.example:{PORT}"), SECRET, JSON], OPEN, "403 host_not_allowed"),
    ("GET", "/v1/models", [("Host", f"evil.example:{PORT}")], OPEN, "403 host_not_allowed"),
    ("GET", "/v1/models", [("Host", f"127.0.0.1.nip.io:{PORT}")], OPEN, "403 host_not_allowed"),
    ("GET", "/v1/models", [("Host", "127.0.0.1:1")], OPEN, "403 host_not_allowed"),
    ("GET", "/v1/models", [("Host", "127.0.0.1")], OPEN, "403 host_not_allowed"),  # port 80 only
    ("GET", "/v1/models", [], OPEN, "403 host_not_allowed"),
    ("GET", "/v1/models", [HOST, ("Host", "evil.example")], OPEN, "400 duplicate_header"),
    # cross-site: any Origin but an allowed one
    ("POST", "/api/name", [HOST, ("Origin", "http://evil.example"), ("Content-Type", "text/plain")], OPEN,
     "403 origin_not_allowed"),
    ("POST", "/api/name", [HOST, ("Origin", "null"), SECRET, JSON], OPEN, "403 origin_not_allowed"),
    ("GET", "/v1/models", [HOST, ("Origin", "http://evil.example")], WITH_APP, "403 origin_not_allowed"),
    ("GET", "/v1/models", [HOST, ("Origin", APP)], WITH_APP, 200),
    ("GET", "/v1/models", [HOST, ("Origin", "HTTP://LOCALHOST:3000")], WITH_APP, 200),
    ("OPTIONS", "/v1/chat/completions", [HOST, ("Origin", APP), ("Access-Control-Request-Method", "POST")],
     WITH_APP, 204),
    ("OPTIONS", "/v1/chat/completions", [HOST, ("Origin", "http://evil.example"),
                                         ("Access-Control-Request-Method", "POST")], WITH_APP,
     "403 origin_not_allowed"),
    # an allowed origin still needs the secret for management
    ("GET", "/api/status", [HOST, ("Origin", APP)], WITH_APP, "401 invalid_api_token"),
    # the local secret
    ("GET", "/api/status", [HOST], OPEN, "401 invalid_api_token"),
    ("GET", "/api/status", [HOST, ("Authorization", "Bearer wrong")], OPEN, "401 invalid_api_token"),
    ("GET", "/api/status", [HOST, ("Authorization", f"Basic {TOKEN}")], OPEN, "401 invalid_api_token"),
    ("GET", "/api/status", [HOST, ("Authorization", f"bearer {TOKEN}")], OPEN, 200),
    ("GET", "/api/status", [HOST, ("Authorization", "Bearer tëst")], OPEN, "401 invalid_api_token"),
    ("GET", "/anything/else", [HOST], OPEN, "401 invalid_api_token"),
    ("GET", "/v1", [HOST], OPEN, "401 invalid_api_token"),
    ("GET", "/api/status", [HOST, ("Authorization", f"Bearer {KEY}")], KEYED, "401 invalid_api_token"),
    # simple requests: a POST must be JSON, even with the secret
    ("POST", "/api/name", [HOST, SECRET, ("Content-Type", "text/plain")], OPEN, "415 unsupported_media_type"),
    ("POST", "/api/name", [HOST, SECRET], OPEN, "415 unsupported_media_type"),
    ("POST", "/api/name", [HOST, SECRET, ("Content-Type", "application/x-www-form-urlencoded")], OPEN,
     "415 unsupported_media_type"),
    ("POST", "/v1/completions", [HOST, ("Content-Type", "multipart/form-data; boundary=x")], OPEN,
     "415 unsupported_media_type"),
    # --api-key: /v1 needs it, as OpenAI's API does; management still needs the secret
    ("GET", "/v1/models", [HOST], KEYED, "401 invalid_api_key"),
    ("GET", "/v1/models", [HOST, ("Authorization", "Bearer nope")], KEYED, "401 invalid_api_key"),
    ("GET", "/v1/models", [HOST, ("Authorization", f"Bearer {TOKEN}")], KEYED, "401 invalid_api_key"),
    ("GET", "/v1/models", [HOST, ("Authorization", f"Bearer {KEY}")], KEYED, 200),
    ("GET", "/api/status", [HOST, SECRET], KEYED, 200),
])
def test_judge(method, path, headers, access, expected):
    assert outcome(method, path, headers, access) == expected


def test_an_allowed_origin_gets_cors_headers_and_others_none():
    preflight = judge("OPTIONS", "/v1/chat/completions",
                      [HOST, ("Origin", APP), ("Access-Control-Request-Method", "POST"),
                       ("Access-Control-Request-Headers", "authorization, content-type, x-stainless-os"),
                       ("Access-Control-Request-Private-Network", "true")], PORT, WITH_APP)
    headers = dict(preflight.cors_headers)
    assert headers["Access-Control-Allow-Origin"] == APP and headers["Vary"] == "Origin"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
    assert headers["Access-Control-Allow-Private-Network"] == "true"
    simple = judge("GET", "/v1/models", [HOST, ("Origin", APP)], PORT, WITH_APP)
    assert dict(simple.cors_headers) == {"Access-Control-Allow-Origin": APP, "Vary": "Origin"}
    refused = judge("GET", "/v1/models", [HOST, ("Origin", "http://evil.example")], PORT, WITH_APP)
    assert refused.cors_headers == ()
    assert judge("GET", "/v1/models", [HOST], PORT, WITH_APP).cors_headers == ()


def test_odd_requested_headers_are_not_echoed():
    preflight = judge("OPTIONS", "/v1/models", [HOST, ("Origin", APP), ("Access-Control-Request-Method", "GET"),
                                                ("Access-Control-Request-Headers", "x\r\nSet-Cookie: a")],
                      PORT, WITH_APP)
    assert dict(preflight.cors_headers)["Access-Control-Allow-Headers"] == "Authorization, Content-Type"


def test_refusals_say_why_in_one_line():
    cases = {
        "DNS rebinding": [("Host", "evil.example:9337")],
        "--allow-origin": [HOST, ("Origin", "http://evil.example")],
        "api-token": [HOST],
        "application/json": [HOST, SECRET, ("Content-Type", "text/plain")],
    }
    for fragment, headers in cases.items():
        refusal = judge("POST", "/api/name", headers, PORT, OPEN).refusal
        assert fragment in refusal.message and "\n" not in refusal.message
    assert "x" * 100 not in judge("GET", "/", [("Host", "x" * 5000)], PORT, OPEN).refusal.message


@pytest.mark.parametrize("text, expected", [
    ("http://localhost:3000", "http://localhost:3000"),
    ("HTTPS://Chat.Example.com/", "https://chat.example.com"),
    ("https://chat.example.com:443", "https://chat.example.com"),
    ("http://127.0.0.1:80", "http://127.0.0.1"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("chrome-extension://abcdefghijklmnop", "chrome-extension://abcdefghijklmnop"),
])
def test_origins_are_normalised_as_browsers_send_them(text, expected):
    assert parse_origin(text) == expected


@pytest.mark.parametrize("text", ["*", "null", "localhost:3000", "http://", "http://a.example/path",
                                  "http://a.example?x", "http://a.example:99999", "", "http://a b"])
def test_what_is_not_one_origin_is_refused(text):
    with pytest.raises(ValueError):
        parse_origin(text)


header_names = st.sampled_from(["Host", "Origin", "Authorization", "Content-Type", "X-Other",
                                "Access-Control-Request-Method", "Access-Control-Request-Headers"])


@given(method=st.sampled_from(["GET", "POST", "OPTIONS", "PUT", "DELETE"]),
       path=st.sampled_from(["/api/status", "/api/name", "/v1/models", "/", "/v1/../api/x"]),
       headers=st.lists(st.tuples(header_names, st.text(max_size=40)), max_size=6))
def test_no_header_soup_reaches_management_without_the_secret(method, path, headers):
    """Whatever a client sends without this node's secret, no route outside /v1/ lets it in."""
    decision = judge(method, path, headers, PORT, OPEN)
    if not path.startswith("/v1/") and not decision.preflight:
        assert decision.refusal is not None
    if decision.refusal is None and method == "POST":
        assert any(name == "Content-Type" and value.split(";")[0].strip().lower() == "application/json"
                   for name, value in headers)
