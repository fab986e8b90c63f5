"""Telling the terminal when each model becomes ready or fails (headless and desktop alike)."""

from __future__ import annotations

from meshdesk.core.states import ModelState
from meshdesk.node.node import Node


class ReadinessPrinter:
    """Tells the terminal when each model becomes ready or fails."""

    def __init__(self, node: Node):
        self.node = node
        self.last_states: dict[str, str] = {}

    def __call__(self) -> None:
        for status in self.node.model_statuses():
            if self.last_states.get(status.id) == status.state:
                continue
            self.last_states[status.id] = status.state
            if status.state == ModelState.READY:
                print(f"Model {status.id} is ready.", flush=True)
            elif status.state == ModelState.FAILED:
                print(f"Model {status.id} failed: {status.error}", flush=True)
