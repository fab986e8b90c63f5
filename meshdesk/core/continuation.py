"""An answer carried on by a new host after its host was lost mid-answer.

The node the request came in through keeps the text it has streamed; when the model is routable
again it sends the same request with `continue_from` set to that text. The new host's child
renders the prompt as before (for chat, the template with its generation prompt, so the
assistant turn is open), appends the text so far with no end of turn, and generates on from
there. It counts usage as if one host had written the whole answer: the prompt tokens of the
original prompt, the completion tokens of the text so far and the new text together, within the
original `max_tokens`. So the client sees one answer, one `usage` and one `finish_reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from meshdesk.core.openai_api import GenerationRequest


@dataclass
class Progress:
    """What one answer has streamed so far, across every host that wrote part of it."""

    parts: list[str] = field(default_factory=list)
    losses: int = 0  # hosts lost mid-answer

    def saw(self, event: dict) -> None:
        if event.get("type") == "delta":
            text = event.get("text")
            if isinstance(text, str) and text:
                self.parts.append(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def continuation(request: GenerationRequest, text_so_far: str) -> GenerationRequest:
    """The request that carries `request`'s answer on from `text_so_far` (the original's own
    text so far included: `request` is the one the client sent)."""
    if request.continue_from is not None:
        raise ValueError("continue from the client's request, not from a continuation")
    return replace(request, continue_from=text_so_far) if text_so_far else request


def continued_prompt(prompt_text: str, continue_from: str | None) -> str:
    """The text the model goes on from: the rendered prompt, then the answer so far."""
    return prompt_text + (continue_from or "")


def token_budget(max_tokens: int | None, room: int, tokens_so_far: int) -> int:
    """New tokens a host may write: what the client asked for less what was written before the
    host was lost, never past the end of the context (`room`). 0 means the answer is complete."""
    left = room if max_tokens is None else min(max_tokens - tokens_so_far, room)
    return max(0, left)
