"""Commands that point coding agents (goose, pi, opencode) at this node's API (pure)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

API_KEY = "meshdesk"  # the local API needs no key, but these agents insist on one
PROVIDER = "meshdesk"


@dataclass(frozen=True)
class AgentCommand:
    agent: str
    command: str
    setup: str = ""       # a config file to write first, if the agent needs one
    setup_path: str = ""


def goose(port: int, model: str) -> AgentCommand:
    environment = {"GOOSE_PROVIDER": "openai", "OPENAI_HOST": f"http://127.0.0.1:{port}",
                   "OPENAI_API_KEY": API_KEY, "GOOSE_MODEL": model}
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items())
    return AgentCommand("goose", f"{assignments} goose session")


def pi(port: int, model: str) -> AgentCommand:
    provider = {"baseUrl": f"http://127.0.0.1:{port}/v1", "api": "openai-completions",
                "apiKey": API_KEY, "models": [{"id": model}]}
    setup = json.dumps({"providers": {PROVIDER: provider}}, indent=2)
    return AgentCommand("pi", f"pi --provider {PROVIDER} --model {shlex.quote(model)}",
                        setup=setup, setup_path="~/.pi/agent/models.json")


def opencode(port: int, model: str) -> AgentCommand:
    provider = {"npm": "@ai-sdk/openai-compatible", "name": "MeshDesk",
                "options": {"baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": API_KEY},
                "models": {model: {"name": model}}}
    config = json.dumps({"$schema": "https://opencode.ai/config.json",
                         "provider": {PROVIDER: provider}}, separators=(",", ":"))
    return AgentCommand("opencode", f"OPENCODE_CONFIG_CONTENT={shlex.quote(config)} "
                                    f"opencode -m {shlex.quote(f'{PROVIDER}/{model}')}")


def agent_commands(port: int | None, model: str | None) -> list[AgentCommand]:
    """Empty until the API listens and a model is served."""
    if not port or not model:
        return []
    return [goose(port, model), pi(port, model), opencode(port, model)]
