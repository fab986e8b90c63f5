"""Who may use the node's HTTP API on 127.0.0.1, decided from the request alone (pure).

The API listens on loopback, but a web page can still reach it: through DNS rebinding (its
own name resolving to 127.0.0.1, so the browser lets it read the answers) and through
"simple" cross-site requests (a `text/plain` POST needs no CORS preflight). So every request
is judged, in this order:

1. Host must name this API (127.0.0.1, localhost or [::1] with its port): stops rebinding.
2. An Origin header must be one the user allowed (`--allow-origin`; none by default). A
   preflight from an allowed origin is answered here, with the CORS headers it asks for.
3. Routes outside `/v1/` are management: they need the node's local secret (a token in a
   0600 file in the home) as `Authorization: Bearer TOKEN`. `/v1/` is open to local
   processes unless the user set an API key, which it then needs, as OpenAI's API does
   (`Authorization: Bearer KEY`, or `x-api-key: KEY` as Anthropic's clients send it).
4. A POST must say `Content-Type: application/json`, which no page can send without a
   preflight.

`judge` returns a `Decision`; the aiohttp middleware only carries it out.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
OPEN_PREFIX = "/v1/"  # the OpenAI API; everything else is management
TOKEN_FILE_NAME = "api-token"
PREFLIGHT_MAX_AGE = "600"
ALLOWED_METHODS = "GET, POST, OPTIONS"
DEFAULT_ALLOWED_HEADERS = "Authorization, Content-Type"
# Headers whose second copy could make the middleware and aiohttp read different values.
SINGLE_HEADERS = ("host", "origin", "authorization", "x-api-key", "content-type")
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?/?")
_HEADER_LIST = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHOWN = 80  # characters of a client's header value quoted back in an error


@dataclass(frozen=True)
class ApiAccess:
    """The node's settings: the management secret, the optional /v1 key, allowed origins."""

    management_token: str
    api_key: str | None = None
    allowed_origins: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    code: str
    type: str = "invalid_request_error"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Decision:
    """`refusal`: answer with that error. `preflight`: answer 204 now. `cors_headers`: add these
    to whatever answer goes out (only ever for an allowed origin)."""

    refusal: Refusal | None = None
    preflight: bool = False
    cors_headers: tuple[tuple[str, str], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.refusal is None and not self.preflight


def parse_origin(text: str) -> str:
    """An origin as browsers send it (`scheme://host[:port]`, lower case, no default port);
    ValueError with the reason for anything else, "*" and "null" included."""
    cleaned = text.strip().lower() if isinstance(text, str) else ""
    if cleaned in ("*", "null"):
        raise ValueError(f"{text!r} would let any web page drive this node; name one origin, "
                         "e.g. https://chat.example.com")
    match = _ORIGIN.fullmatch(cleaned)
    if not match:
        raise ValueError(f"{text!r} is not an origin: scheme://host[:port], e.g. http://localhost:3000")
    scheme, host, port = match.groups()
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} has no valid port")
    if port is None or int(port) == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def judge(method: str, path: str, headers: Iterable[tuple[str, str]], port: int,
          access: ApiAccess) -> Decision:
    """What to do with one request to the API listening on 127.0.0.1:`port`."""
    values, repeated = _collect(headers)
    if repeated:
        return Decision(Refusal(400, f"refused: the request carries more than one {repeated} header",
                                "duplicate_header"))
    refusal = _host_refusal(values.get("host"), port)
    if refusal is None:
        refusal = _origin_refusal(values.get("origin"), access)
    if refusal is not None:
        return Decision(refusal)  # no CORS headers: the page learns nothing
    cors = _cors_headers(values, access)
    if method == "OPTIONS" and "origin" in values and "access-control-request-method" in values:
        return Decision(preflight=True, cors_headers=cors)
    refusal = _credential_refusal(path, values.get("authorization"), access, values.get("x-api-key"))
    if refusal is None and method == "POST":
        refusal = _content_type_refusal(values.get("content-type"))
    return Decision(refusal, cors_headers=cors)


def _collect(headers: Iterable[tuple[str, str]]) -> tuple[dict[str, str], str | None]:
    values: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in values and key in SINGLE_HEADERS:
            return values, name
        values[key] = value
    return values, None


def shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _host_refusal(host: str | None, port: int) -> Refusal | None:
    names = [f"{name}:{port}" for name in LOOPBACK_NAMES]
    accepted = set(names) | (set(LOOPBACK_NAMES) if port == 80 else set())
    if host is not None and host.strip().lower() in accepted:
        return None
    got = "no Host header" if host is None else f"Host {shown(host)}"
    return Refusal(403, f"refused: {got} does not name this node's API ({', '.join(names)}); "
                        "a web page whose own name points at 127.0.0.1 (DNS rebinding) may not use it",
                   "host_not_allowed")


def _origin_refusal(origin: str | None, access: ApiAccess) -> Refusal | None:
    if origin is None or _normal_origin(origin) in access.allowed_origins:
        return None
    return Refusal(403, f"refused: web pages from the origin {shown(origin)} may not use this node's "
                        "API; if you trust that page, start MeshDesk with --allow-origin ORIGIN",
                   "origin_not_allowed")


def _normal_origin(origin: str) -> str | None:
    try:
        return parse_origin(origin)
    except ValueError:
        return None


def _cors_headers(values: dict[str, str], access: ApiAccess) -> tuple[tuple[str, str], ...]:
    origin = values.get("origin")
    if origin is None:
        return ()
    headers = [("Access-Control-Allow-Origin", origin.strip()), ("Vary", "Origin")]
    if "access-control-request-method" in values:
        asked = values.get("access-control-request-headers", "").strip()
        allowed = asked if _HEADER_LIST.fullmatch(asked) else DEFAULT_ALLOWED_HEADERS
        headers += [("Access-Control-Allow-Methods", ALLOWED_METHODS),
                    ("Access-Control-Allow-Headers", allowed),
                    ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)]
        if values.get("access-control-request-private-network", "").strip().lower() == "true":
            headers.append(("Access-Control-Allow-Private-Network", "true"))
    return tuple(headers)


def _credential_refusal(path: str, authorization: str | None, access: ApiAccess,
                        api_key_header: str | None = None) -> Refusal | None:
    if path.startswith(OPEN_PREFIX):
        # Anthropic's clients send the key as `x-api-key`; a page cannot send that header
        # without a preflight, which a foreign Origin never passes (step 2).
        if access.api_key is None or _bearer_matches(authorization, access.api_key) or (
                api_key_header is not None and hmac.compare_digest(
                    api_key_header.strip().encode("utf-8", "replace"), access.api_key.encode("utf-8"))):
            return None
        said = ("You didn't provide an API key" if authorization is None and api_key_header is None
                else "Incorrect API key provided")
        return Refusal(401, f"{said}: this node's /v1 API needs the key it was started with "
                            "(--api-key), sent as 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
                       "invalid_api_key",
                       headers=(("WWW-Authenticate", "Bearer"),))
    if _bearer_matches(authorization, access.management_token):
        return None
    said = ("does not carry" if authorization is None
            else "carries a local secret that does not match")
    return Refusal(401, f"refused: this management route needs the node's local secret and the "
                        f"request {said} it; send 'Authorization: Bearer TOKEN' with the token in "
                        f"the node's home folder, file {TOKEN_FILE_NAME}", "invalid_api_token",
                   headers=(("WWW-Authenticate", "Bearer"),))


def _bearer_matches(authorization: str | None, secret: str) -> bool:
    if authorization is None:
        return False
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credential.strip().encode("utf-8", "replace"), secret.encode("utf-8"))


def _content_type_refusal(content_type: str | None) -> Refusal | None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return None
    got = "none" if content_type is None else shown(content_type)
    return Refusal(415, f"refused: a POST must send Content-Type: application/json (got {got}); "
                        "web pages can send other types to any address without asking",
                   "unsupported_media_type")
