"""Connects the Chat view to the ChatService: conversations, sending, streaming, stop, regenerate."""

from __future__ import annotations

from meshdesk.node.chat_service import ChatService, ReplyListener
from meshdesk.node.chat_store import ChatStore
from meshdesk.ui.chat_view import ChatView


class ChatController:
    def __init__(self, view: ChatView, service: ChatService, store: ChatStore):
        self.view = view
        self.service = service
        self.store = store
        self.current: int | None = None
        view.send_requested.connect(self.send)
        view.stop_requested.connect(service.stop)
        view.regenerate_requested.connect(self.regenerate)
        view.new_conversation_requested.connect(self.new_conversation)
        view.conversation_selected.connect(self.select)
        conversations = store.conversations()
        self.select(conversations[0].id if conversations else None)

    def listener(self, conversation_id: int) -> ReplyListener:
        def done(_message) -> None:
            self.view.end_reply(self.store.messages(conversation_id))

        def failed(reason: str) -> None:
            done(None)
            self.view.show_error(reason)

        return ReplyListener(on_delta=self.view.append_delta, on_done=done, on_error=failed)

    def send(self, text: str, model: str) -> None:
        if not model:
            self.view.show_error("No model to talk to yet.")
            return
        if self.service.busy:
            return
        if self.current is None:
            self.current = self.store.create_conversation(model).id
        self.service.send(self.current, text, model, self.listener(self.current))
        self._show_conversations()
        self.view.show_messages(self.store.messages(self.current))
        self.view.begin_reply(model)

    def regenerate(self, model: str) -> None:
        if self.current is None or self.service.busy or not model:
            return
        self.service.regenerate(self.current, model, self.listener(self.current))
        self.view.show_messages(self.store.messages(self.current))
        self.view.begin_reply(model)

    def new_conversation(self) -> None:
        if not self.service.busy:
            self.select(None)

    def select(self, conversation_id: int | None) -> None:
        if self.service.busy:
            self.view.show_error("Stop the reply before switching conversations.")
            self._show_conversations()
            return
        self.current = conversation_id
        self.view.show_error("")
        self._show_conversations()
        self.view.show_messages(self.store.messages(conversation_id) if conversation_id else [])

    def _show_conversations(self) -> None:
        listed = [(c.id, c.title) for c in self.store.conversations()]
        self.view.show_conversations(listed, self.current)
