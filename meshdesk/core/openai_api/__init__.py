"""The OpenAI-compatible API, pure: requests read and validated, responses shaped (ids and
timestamps are parameters). One module per concept: `errors` (a client's mistake, in OpenAI's
error shape), `fields` (each field of a request body), `known_fields` (which top-level fields
are honoured, accepted and ignored, or a 400), `tools` (tools, tool_choice, messages' tool calls),
`response_format` (JSON answers), `request` (the generation request from a body and across the
mesh), `responses` (bodies, stream chunks with tool calls, server-sent events)."""

from meshdesk.core.openai_api.errors import RequestError, error_body
from meshdesk.core.openai_api.fields import (CHAT_ROLES, DEFAULT_TEMPERATURE, DEFAULT_TOP_P,
                                             MAX_STOP_SEQUENCES, MAX_TOKENS_LIMIT, SEED_MAX, SEED_MIN)
from meshdesk.core.openai_api.request import (GenerationRequest, parse_chat_request,
                                              parse_completion_request, parse_json_body)
from meshdesk.core.openai_api.responses import (CHAT_FINISH_REASONS, COMPLETION_FINISH_REASONS, SSE_DONE,
                                                Usage, chat_chunk, chat_completion, completion,
                                                completion_chunk, models_list, openai_tool_calls, sse_event,
                                                tool_call_chunks, usage_chunk)

__all__ = [
    "CHAT_FINISH_REASONS", "CHAT_ROLES", "COMPLETION_FINISH_REASONS", "DEFAULT_TEMPERATURE", "DEFAULT_TOP_P",
    "MAX_STOP_SEQUENCES", "MAX_TOKENS_LIMIT", "SEED_MAX", "SEED_MIN", "SSE_DONE", "GenerationRequest",
    "RequestError", "Usage", "chat_chunk", "chat_completion", "completion", "completion_chunk", "error_body",
    "models_list", "openai_tool_calls", "parse_chat_request", "parse_completion_request", "parse_json_body",
    "sse_event", "tool_call_chunks", "usage_chunk",
]
