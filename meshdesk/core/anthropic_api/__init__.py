"""The Anthropic Messages API (`POST /v1/messages`), pure: a body read into the generation
request (`request`, `content`), the node's answer events shaped into a message or its stream of
named events (`output`), errors in Anthropic's shape (`errors`)."""

from meshdesk.core.anthropic_api.errors import OVERLOADED, error_body
from meshdesk.core.anthropic_api.output import MessageEvents, whole_message
from meshdesk.core.anthropic_api.request import parse_messages_request

__all__ = ["OVERLOADED", "MessageEvents", "error_body", "parse_messages_request", "whole_message"]
