"""Which top-level fields of a chat or completion body we read, and the 400 for the rest.

Three kinds: fields we honour (read by `fields`, `tools`, `response_format`); fields accepted
and ignored because they cannot change the answer (bookkeeping for OpenAI's own platform that
real clients send: the OpenAI SDKs, @ai-sdk/openai-compatible, pi, Codex); and fields accepted
only at the value that asks for nothing (false, null, 1, {}, ["text"]). Anything else is a 400
naming the field: never silence."""

from __future__ import annotations

from typing import Any

from meshdesk.core.openai_api.errors import RequestError, describe

COMMON_HONOURED = frozenset({"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream",
                             "stream_options", "n", "presence_penalty", "frequency_penalty"})
CHAT_HONOURED = COMMON_HONOURED | {"messages", "max_completion_tokens", "tools", "tool_choice",
                                   "parallel_tool_calls", "response_format",
                                   "functions", "function_call"}  # these two refused by name in `tools`
COMPLETION_HONOURED = COMMON_HONOURED | {"prompt"}

# Accepted and ignored: none of them can change the answer. reasoning_effort asks a reasoning
# model how long to think; no model we serve has a thinking budget, so the answer is the same.
CHAT_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key",
                          "prompt_cache_retention", "safety_identifier", "reasoning_effort"})
COMPLETION_IGNORED = frozenset({"user"})


def _no_logprobs(value: Any) -> bool:
    return value is False


def _zero(value: Any) -> bool:
    return value == 0 and not isinstance(value, bool)


def _one(value: Any) -> bool:
    return value == 1 and not isinstance(value, bool)


# Accepted only at the value that asks for nothing (null always counts as absent).
CHAT_DEFAULT_ONLY = {
    "logprobs": (_no_logprobs, "false (log probabilities are not supported)"),
    "top_logprobs": (_zero, "0 (log probabilities are not supported)"),
    "logit_bias": (lambda value: value == {}, "{} (logit bias is not supported)"),
    "modalities": (lambda value: value == ["text"], "[\"text\"] (only text answers are supported)"),
    "audio": (lambda value: False, "null (audio is not supported)"),
    "prediction": (lambda value: False, "null (predicted outputs are not supported)"),
    "web_search_options": (lambda value: False, "null (web search is not supported)"),
}
COMPLETION_DEFAULT_ONLY = {
    "logprobs": (_zero, "null or 0 (log probabilities are not supported)"),
    "echo": (lambda value: value is False, "false (echoing the prompt is not supported)"),
    "best_of": (_one, "1 (best_of is not supported)"),
    "logit_bias": (lambda value: value == {}, "{} (logit bias is not supported)"),
    "suffix": (lambda value: value == "", "null (suffix is not supported)"),
}

KNOWN = {
    "chat": (CHAT_HONOURED, CHAT_IGNORED, CHAT_DEFAULT_ONLY),
    "completion": (COMPLETION_HONOURED, COMPLETION_IGNORED, COMPLETION_DEFAULT_ONLY),
}


def check_known_fields(body: dict, kind: str) -> None:
    honoured, ignored, default_only = KNOWN[kind]
    for field, value in body.items():
        if field in honoured or field in ignored:
            continue
        if field in default_only:
            accepts, expected = default_only[field]
            if value is not None and not accepts(value):
                raise RequestError(f"'{field}' must be null or {expected}, got {describe(value)}", param=field)
            continue
        raise RequestError(f"the field {describe(field)} is not supported by this server", param=str(field))
