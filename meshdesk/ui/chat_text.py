"""A chat transcript as Markdown text (a Qt-free view model; `transcript` shows it)."""

from __future__ import annotations

FINISH_NOTES = {"stopped": "stopped", "length": "cut off at the length limit", "error": "failed"}


def message_markdown(role: str, content: str, model: str | None, finish_reason: str | None) -> str:
    speaker = "You" if role == "user" else (model or role)
    note = FINISH_NOTES.get(finish_reason or "")
    body = content if content.strip() else "…"
    if note:
        body += f"\n\n*({note})*"
    # A code fence left open by a cut-off reply must not swallow the next message.
    if body.count("```") % 2:
        body += "\n```"
    return f"**{speaker}**\n\n{body}"


def transcript_markdown(messages: list, streaming: str | None = None, streaming_model: str = "") -> str:
    parts = [message_markdown(m.role, m.content, m.model, m.finish_reason) for m in messages]
    if streaming is not None:
        parts.append(message_markdown("assistant", streaming, streaming_model, None))
    return "\n\n".join(parts)
