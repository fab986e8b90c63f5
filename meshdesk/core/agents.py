"""How each coding agent is pointed at a node's API, and which served model it gets (pure).

`meshdesk run AGENT` and the desktop's Settings both build on this: an `AgentSetup` says what
to set in the agent's environment, which arguments go before the user's, and which config file
(if any) must carry a provider first; the merge functions add ours to a user's file without
touching anything else in it. The API key never goes into a file: every config names the
variable `KEY_VARIABLE`, which the agent's environment carries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from meshdesk.core.model_advert import file_stem
from meshdesk.core.states import ModelState

AGENTS = ("goose", "opencode", "pi", "claude", "codex")
KEY_VARIABLE = "MESHDESK_API_KEY"
PROVIDER = "meshdesk"      # opencode's and codex's provider id
PI_PROVIDER = "mesh"       # pi's, as mesh-llm names it (`pi --provider mesh`)
PI_MODELS_FILE = ".pi/agent/models.json"    # under the user's home (or $PI_CODING_AGENT_DIR/models.json)
PI_SETTINGS_FILE = ".pi/agent/settings.json"
CODEX_CONFIG_FILE = ".codex/config.toml"    # under the user's home (or $CODEX_HOME/config.toml)
DEFAULT_OUTPUT_TOKENS = 2048
SLOW_ANSWER_MS = 3_600_000  # a long prompt on a small CPU mesh takes minutes; Claude Code gives up at 10

INSTALL = {
    "goose": "brew install block-goose-cli, pipx install goose-ai, or "
             "curl -fsSL https://github.com/block/goose/releases/download/stable/download_cli.sh | bash",
    "opencode": "npm i -g opencode-ai",
    "pi": "npm i -g @mariozechner/pi-coding-agent",
    "claude": "npm i -g @anthropic-ai/claude-code",
    "codex": "npm i -g @openai/codex",
}


@dataclass(frozen=True)
class Endpoint:
    """The node's API as an agent sees it."""

    port: int
    model: str
    api_key: str
    context: int   # the tokens the agent may assume the model's context holds
    max_tokens: int | None = None  # the most an answer may take; None: a quarter of the context

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    @property
    def output_tokens(self) -> int:
        return self.max_tokens or max(256, min(DEFAULT_OUTPUT_TOKENS, self.context // 4))


@dataclass(frozen=True)
class AgentSetup:
    agent: str
    program: str                               # the executable looked up on PATH
    environment: dict[str, str]                # set for the agent (the key included)
    defaults: dict[str, str] = field(default_factory=dict)  # set unless the user's environment has them
    arguments: tuple[str, ...] = ()            # before the user's arguments
    default_arguments: tuple[str, ...] = ()    # when the user gives none
    unset: tuple[str, ...] = ()                # variables the agent must not inherit
    config_file: str = ""                      # relative to the user's home: must hold `config` first
    config: dict = field(default_factory=dict)  # the provider to merge into that file
    settings: dict = field(default_factory=dict)  # pi: settings.json values a user's own file lacks

    def command(self, user_arguments: list[str] | tuple[str, ...] = ()) -> list[str]:
        return [self.program, *self.arguments, *(user_arguments or self.default_arguments)]


def setup_for(agent: str, endpoint: Endpoint) -> AgentSetup:
    if agent not in BUILDERS:
        raise ValueError(f"unknown agent {agent!r}; one of {', '.join(AGENTS)}")
    return BUILDERS[agent](endpoint)


def goose(endpoint: Endpoint) -> AgentSetup:
    environment = {"GOOSE_PROVIDER": "openai", "OPENAI_HOST": endpoint.root,
                   "OPENAI_BASE_PATH": "v1/chat/completions", "OPENAI_API_KEY": endpoint.api_key,
                   "GOOSE_MODEL": endpoint.model, KEY_VARIABLE: endpoint.api_key}
    return AgentSetup("goose", "goose", environment, {"GOOSE_CONTEXT_LIMIT": str(endpoint.context)},
                      default_arguments=("session",))


def opencode_config(endpoint: Endpoint) -> dict:
    model = {"name": endpoint.model, "tool_call": True,
             "limit": {"context": endpoint.context, "output": endpoint.output_tokens}}
    provider = {"npm": "@ai-sdk/openai-compatible", "name": "MeshDesk",
                "options": {"baseURL": endpoint.base_url, "apiKey": "{env:%s}" % KEY_VARIABLE},
                "models": {endpoint.model: model}}
    chosen = f"{PROVIDER}/{endpoint.model}"
    return {"$schema": "https://opencode.ai/config.json", "provider": {PROVIDER: provider},
            "model": chosen, "small_model": chosen, "autoupdate": False, "share": "disabled"}


def opencode(endpoint: Endpoint) -> AgentSetup:
    environment = {"OPENCODE_CONFIG_CONTENT": json.dumps(opencode_config(endpoint), separators=(",", ":")),
                   KEY_VARIABLE: endpoint.api_key}
    return AgentSetup("opencode", "opencode", environment,
                      {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1"})


def pi_provider(endpoint: Endpoint) -> dict:
    """pi reads `apiKey` as a variable's name when such a variable is set."""
    return {"baseUrl": endpoint.base_url, "api": "openai-completions", "apiKey": KEY_VARIABLE,
            "compat": {"supportsDeveloperRole": False, "supportsReasoningEffort": False},
            "models": [{"id": endpoint.model, "name": f"{endpoint.model} (MeshDesk)",
                        "contextWindow": endpoint.context, "maxTokens": endpoint.output_tokens}]}


def pi(endpoint: Endpoint) -> AgentSetup:
    """pi compacts a session once its tokens pass the model's window less `reserveTokens`
    (16384 by default: all of our context, so it would summarise after every answer); a
    quarter of the context is reserved instead, where the user's settings reserve too much."""
    return AgentSetup("pi", "pi", {KEY_VARIABLE: endpoint.api_key},
                      arguments=("--provider", PI_PROVIDER, "--model", endpoint.model),
                      config_file=PI_MODELS_FILE, config=pi_provider(endpoint),
                      settings={"compaction": {"reserveTokens": endpoint.context // 4}})


def claude(endpoint: Endpoint) -> AgentSetup:
    """Claude Code speaks the Anthropic Messages API (/v1/messages); every model it would pick
    by itself (the small fast one, subagents') is ours, and nothing else leaves the machine."""
    model = endpoint.model
    environment = {"ANTHROPIC_BASE_URL": endpoint.root, "ANTHROPIC_AUTH_TOKEN": endpoint.api_key,
                   "ANTHROPIC_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model,
                   "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
                   "ANTHROPIC_DEFAULT_OPUS_MODEL": model, "CLAUDE_CODE_SUBAGENT_MODEL": model,
                   "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", KEY_VARIABLE: endpoint.api_key}
    defaults = {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(endpoint.context),
                "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(endpoint.output_tokens),
                "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
                "API_TIMEOUT_MS": str(SLOW_ANSWER_MS)}
    return AgentSetup("claude", "claude", environment, defaults, unset=("ANTHROPIC_API_KEY",))


def codex_provider(endpoint: Endpoint) -> dict:
    """Current Codex accepts only the Responses API for a provider (`wire_api = "responses"`)."""
    return {"name": "MeshDesk", "base_url": endpoint.base_url, "env_key": KEY_VARIABLE,
            "wire_api": "responses"}


def codex(endpoint: Endpoint) -> AgentSetup:
    overrides = {"model_provider": PROVIDER, "model": endpoint.model,
                 "model_context_window": endpoint.context}
    arguments = tuple(part for name, value in overrides.items()
                      for part in ("-c", f"{name}={toml_value(value)}"))
    return AgentSetup("codex", "codex", {KEY_VARIABLE: endpoint.api_key}, arguments=arguments,
                      config_file=CODEX_CONFIG_FILE, config=codex_provider(endpoint))


BUILDERS = {"goose": goose, "opencode": opencode, "pi": pi, "claude": claude, "codex": codex}


def not_installed(agent: str) -> str:
    return f"{agent} is not installed (not found on PATH); install it with: {INSTALL[agent]}"


# --- config files: ours merged in, the user's own entries kept ---------------------------

class ConfigFileError(ValueError):
    """The user's file cannot be read as its format: we leave it alone and say why."""


def _json_object(existing: str | None) -> dict:
    """A user's JSON config file as an object; an empty or missing file is an empty one."""
    if existing is None or not existing.strip():
        return {}
    try:
        document = json.loads(existing)
    except ValueError as error:
        raise ConfigFileError(f"it is not JSON ({error})") from None
    if not isinstance(document, dict):
        raise ConfigFileError("it is not a JSON object")
    return document


def merge_pi_models(existing: str | None, provider: dict) -> str:
    """`~/.pi/agent/models.json` with our provider under "mesh", every other entry kept."""
    document = _json_object(existing)
    providers = document.setdefault("providers", {})
    if not isinstance(providers, dict):
        raise ConfigFileError('its "providers" is not an object')
    providers[PI_PROVIDER] = provider
    return json.dumps(document, indent=2) + "\n"


def merge_pi_settings(existing: str | None, settings: dict, context: int) -> str | None:
    """`~/.pi/agent/settings.json` with our compaction reserve where the user's leaves no room in
    a `context`-token window (or sets none); None when the file needs no change."""
    document = _json_object(existing)
    compaction = document.setdefault("compaction", {})
    if not isinstance(compaction, dict):
        raise ConfigFileError('its "compaction" is not an object')
    reserve = compaction.get("reserveTokens")
    if isinstance(reserve, int) and not isinstance(reserve, bool) and 0 < reserve < context // 2:
        return None
    compaction["reserveTokens"] = settings["compaction"]["reserveTokens"]
    return json.dumps(document, indent=2) + "\n"


_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_OUR_TABLE = f"model_providers.{PROVIDER}"


def merge_codex_config(existing: str | None, provider: dict) -> str:
    """`~/.codex/config.toml` with our `[model_providers.meshdesk]` table replaced or added at
    the end; every other line stays as the user wrote it."""
    lines = (existing or "").splitlines()
    kept, ours = [], False
    for line in lines:
        header = _TABLE_HEADER.match(line)
        if header:
            name = re.sub(r"\s*\.\s*", ".", header.group(1)).replace('"', "")
            ours = name == _OUR_TABLE or name.startswith(_OUR_TABLE + ".")
        elif re.match(r"^\s*model_providers\s*\.\s*\"?%s\"?\s*[.=]" % PROVIDER, line) and not ours:
            raise ConfigFileError(f"it sets {_OUR_TABLE} with dotted keys; remove those lines first")
        if not ours:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    table = [f"[{_OUR_TABLE}]"] + [f"{name} = {toml_value(value)}" for name, value in provider.items()]
    return "\n".join(kept + ([""] if kept else []) + table) + "\n"


def toml_value(value) -> str:
    """A TOML literal for a string, an integer or a flag (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


# --- which model an agent gets ------------------------------------------------------------

_CHAT_TUNED = re.compile(r"instruct|chat|(^|[-_.])it($|[-_.])|qwen3|glm-4", re.IGNORECASE)


@dataclass(frozen=True)
class ServedModel:
    id: str
    size_bytes: int | None


def chat_tuned(model_id: str) -> bool:
    """Whether the name says the model was tuned to follow instructions (Instruct, -it, Chat;
    Qwen3 and GLM-4 are chat models without saying so): such a model has a chat template."""
    return bool(_CHAT_TUNED.search(model_id))


def ready_models(status) -> list[ServedModel]:
    """The models a node's `StatusSnapshot` can answer with now (hosted here or routed), with the
    size the mesh's adverts give each (the largest copy's, if files differ)."""
    sizes: dict[str, int] = {}
    for peer in status.peers:
        for model in peer.model_files():
            if model.size_bytes is not None:
                stem = file_stem(model.name)
                sizes[stem] = max(sizes.get(stem, 0), model.size_bytes)
    return [ServedModel(model.id, sizes.get(model.id)) for model in status.models
            if model.state in (ModelState.READY, ModelState.REMOTE)]


def best_model(models: list[ServedModel], local_sizes: dict[str, int] | None = None) -> str | None:
    """The rule: a chat-tuned model over a base one, then the largest, then the first by name.
    `local_sizes` gives the size of files this node holds, which no advert tells it."""
    local_sizes = local_sizes or {}

    def rank(model: ServedModel):
        size = model.size_bytes if model.size_bytes is not None else local_sizes.get(model.id, 0)
        return (not chat_tuned(model.id), -size, model.id)
    return min(models, key=rank).id if models else None
