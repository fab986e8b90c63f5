"""The Responses API's streamed events for one answer, as a plain object: feed it the node's
answer events, get back (event name, payload) pairs to send, each with its `sequence_number`.

The order is OpenAI's: response.created, response.in_progress; for text, output_item.added,
content_part.added, output_text.delta..., output_text.done, content_part.done,
output_item.done; for each tool call (which arrives whole, in the finish event),
output_item.added, function_call_arguments.delta, function_call_arguments.done,
output_item.done; then response.completed (or response.incomplete when the answer ran out of
tokens, response.failed when it broke off)."""

from __future__ import annotations

from meshdesk.core.responses_api import output as shapes
from meshdesk.core.responses_api.request import ResponsesCall

Event = tuple[str, dict]


class ResponseEvents:
    def __init__(self, call: ResponsesCall, token: str, created_at: int):
        self.call = call
        self.token = token
        self.created_at = created_at
        self.sequence = 0
        self.text: list[str] | None = None  # None until the message item is open
        self.output: list[dict] = []

    def opening(self) -> list[Event]:
        in_progress = self._response("in_progress")
        return [self._event("response.created", response=in_progress),
                self._event("response.in_progress", response=in_progress)]

    def delta(self, text: str) -> list[Event]:
        if not text:
            return []
        events = self._open_message()
        self.text.append(text)
        return events + [self._event("response.output_text.delta", **self._part_place(), delta=text,
                                     logprobs=[])]

    def finish(self, finish: dict) -> list[Event]:
        calls = finish.get("tool_calls") or []
        events = self._open_message() if self.text is None and not calls else []
        if self.text is not None:
            events += self._close_message(shapes.status_of(finish))
        for index, call in enumerate(calls):
            events += self._call_events(index, call)
        status = shapes.status_of(finish)
        events.append(self._event(f"response.{status}", response=self._response(status, finish)))
        return events

    def failure(self, message: str, code: str = "server_error") -> list[Event]:
        """The answer broke off after the stream began: what was sent so far, and the error."""
        error = {"code": code, "message": message}
        return [self._event("response.failed", response=self._response("failed", error=error))]

    def _open_message(self) -> list[Event]:
        if self.text is not None:
            return []
        self.text = []
        item = shapes.message_item(self.token, None, "in_progress")
        return [self._event("response.output_item.added", output_index=0, item=item),
                self._event("response.content_part.added", **self._part_place(),
                            part=shapes.output_text_part(""))]

    def _close_message(self, status: str) -> list[Event]:
        text = "".join(self.text)
        item = shapes.message_item(self.token, text, status)
        self.output.append(item)
        return [self._event("response.output_text.done", **self._part_place(), text=text, logprobs=[]),
                self._event("response.content_part.done", **self._part_place(),
                            part=shapes.output_text_part(text)),
                self._event("response.output_item.done", output_index=0, item=item)]

    def _call_events(self, index: int, call: dict) -> list[Event]:
        output_index = len(self.output)
        item_id = shapes.call_item_id(self.token, index)
        added = shapes.function_call_item(self.token, index, call, "in_progress", arguments="")
        done = shapes.function_call_item(self.token, index, call)
        self.output.append(done)
        place = {"item_id": item_id, "output_index": output_index}
        return [self._event("response.output_item.added", output_index=output_index, item=added),
                self._event("response.function_call_arguments.delta", **place, delta=call["arguments"]),
                self._event("response.function_call_arguments.done", **place, name=call["name"],
                            arguments=call["arguments"]),
                self._event("response.output_item.done", output_index=output_index, item=done)]

    def _part_place(self) -> dict:
        return {"item_id": shapes.message_id(self.token), "output_index": 0, "content_index": 0}

    def _response(self, status: str, finish: dict | None = None, error: dict | None = None) -> dict:
        return shapes.response_object(self.call, self.token, self.created_at, status=status,
                                      output=list(self.output), finish=finish, error=error)

    def _event(self, event_type: str, /, **fields) -> Event:
        payload = {"type": event_type, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event_type, payload
