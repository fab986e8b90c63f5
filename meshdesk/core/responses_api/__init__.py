"""The OpenAI Responses API (`POST /v1/responses`), pure: a body read into the generation
request (`request`, `input_items`), the node's answer events shaped into a response object
(`output`) or its stream of named events (`stream`). Ids derive from a token and times are
given, as in `core.openai_api`."""

from meshdesk.core.responses_api.output import named_sse_event, output_text, whole_response
from meshdesk.core.responses_api.request import ResponsesCall, parse_responses_request
from meshdesk.core.responses_api.stream import ResponseEvents

__all__ = ["ResponseEvents", "ResponsesCall", "named_sse_event", "output_text", "parse_responses_request",
           "whole_response"]
