"""Chat: the SQLite store (restart, SIGKILL), the streaming service, and the Chat tab around it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from meshdesk.node.chat_service import ChatService, ReplyListener
from meshdesk.node.chat_store import ChatStore
from meshdesk.node.interfaces import ModelUnavailable
from meshdesk.ui.chat_controller import ChatController
from meshdesk.ui.chat_view import ChatView


class TalkingNode:
    """Generates a fixed reply word by word, like `Node.generate`; records each request.

    With `hold_after=N` it stops after N words, sets `holding` and waits there until the reply
    is cancelled, like a model still generating when the user presses Stop."""

    def __init__(self, words=("Hello", " there", "!"), failure=None, hold_after: int | None = None):
        self.words, self.failure, self.hold_after = words, failure, hold_after
        self.requests = []
        self.holding = asyncio.Event()

    async def generate(self, request):
        self.requests.append(request)
        if isinstance(self.failure, Exception):
            raise self.failure
        for count, word in enumerate(self.words):
            if count == self.hold_after:
                self.holding.set()
                await asyncio.Future()  # until cancelled
            yield {"type": "delta", "text": word}
        if self.failure:
            yield {"type": "error", "kind": "server", "message": self.failure}
            return
        yield {"type": "finish", "finish_reason": "stop", "usage": {}}


class Heard:
    def __init__(self):
        self.deltas, self.done, self.errors = [], [], []

    def listener(self) -> ReplyListener:
        return ReplyListener(self.deltas.append, self.done.append, self.errors.append)


@pytest.fixture
def store(tmp_path):
    opened = ChatStore.in_home(tmp_path)
    yield opened
    opened.close()


def test_history_survives_closing_and_reopening(tmp_path):
    store = ChatStore.in_home(tmp_path)
    conversation = store.create_conversation("gemma")
    store.add_message(conversation.id, "user", "What is a mesh?")
    store.add_message(conversation.id, "assistant", "Computers working together.", "gemma", "stop")
    store.close()
    reopened = ChatStore.in_home(tmp_path)
    [kept] = reopened.conversations()
    assert kept.title == "What is a mesh?"
    assert [(m.role, m.content) for m in reopened.messages(kept.id)] == [
        ("user", "What is a mesh?"), ("assistant", "Computers working together.")]
    reopened.close()


def test_history_survives_a_killed_process(tmp_path):
    writer = textwrap.dedent(f"""
        import sys
        from meshdesk.node.chat_store import ChatStore
        store = ChatStore.in_home({str(tmp_path)!r})
        conversation = store.create_conversation("gemma")
        for number in range(5):
            store.add_message(conversation.id, "user", f"message {{number}}")
        print("written", flush=True)
        sys.stdin.read()  # until killed (or, should the test die first, until its pipe closes)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=os.getcwd())
    assert process.stdout.readline().strip() == "written"
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL
    store = ChatStore.in_home(tmp_path)
    [conversation] = store.conversations()
    assert [m.content for m in store.messages(conversation.id)] == [f"message {n}" for n in range(5)]
    store.close()


def test_a_reply_streams_to_the_listener_and_is_stored(store):
    node, heard = TalkingNode(), Heard()
    service = ChatService(node, store)
    conversation = store.create_conversation("gemma")

    async def chat():
        await service.send(conversation.id, "Hi", "gemma", heard.listener())

    asyncio.run(chat())
    assert heard.deltas == ["Hello", " there", "!"] and heard.errors == []
    assert heard.done[0].content == "Hello there!" and heard.done[0].finish_reason == "stop"
    assert [m.role for m in store.messages(conversation.id)] == ["user", "assistant"]
    assert node.requests[0].messages == ({"role": "user", "content": "Hi"},)
    assert node.requests[0].stream and node.requests[0].model == "gemma"


def test_stop_keeps_what_was_said_and_regenerate_replaces_it(store):
    node, heard = TalkingNode(words=["one"] + [" more"] * 50, hold_after=3), Heard()
    service = ChatService(node, store)
    conversation = store.create_conversation("gemma")

    async def chat():
        task = service.send(conversation.id, "Count", "gemma", heard.listener())
        await asyncio.wait_for(node.holding.wait(), 10)
        assert heard.deltas == ["one", " more", " more"]
        service.stop()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not service.busy
        node.words, node.hold_after = ["Done."], None
        await service.regenerate(conversation.id, "gemma", heard.listener())

    asyncio.run(chat())
    stopped, regenerated = heard.done
    assert stopped.finish_reason == "stopped" and stopped.content.startswith("one more more")
    assert regenerated.content == "Done."
    assert [m.content for m in store.messages(conversation.id)] == ["Count", "Done."]
    assert node.requests[1].messages == ({"role": "user", "content": "Count"},)


@pytest.mark.parametrize("failure, reason", [
    (ModelUnavailable("model gemma is loading; try again shortly"), "loading"),
    ("out of memory", "out of memory"),
])
def test_failures_reach_the_listener_and_store_no_reply(store, failure, reason):
    heard = Heard()
    service = ChatService(TalkingNode(words=["partial"], failure=failure), store)
    conversation = store.create_conversation("gemma")

    async def chat():
        await service.send(conversation.id, "Hi", "gemma", heard.listener())

    asyncio.run(chat())
    assert reason in heard.errors[0] and heard.done == []
    assert [m.role for m in store.messages(conversation.id)] == ["user"]


def test_chat_tab_creates_conversations_and_shows_the_stored_reply(qtbot, store):
    view = ChatView()
    qtbot.addWidget(view)
    view.show_models(["gemma"])
    controller = ChatController(view, ChatService(TalkingNode(), store), store)

    async def chat():
        view.input.setPlainText("Hi")
        view.send_button.click()
        assert view.stop_button.isEnabled()
        await controller.service.reply_task

    asyncio.run(chat())
    assert "Hello there!" in view.transcript.toPlainText() and view.send_button.isEnabled()
    assert [view.conversations.item(i).text() for i in range(view.conversations.count())] == ["Hi"]
    view.new_button.click()
    assert view.transcript.toPlainText() == "" and controller.current is None
    view.conversations.itemClicked.emit(view.conversations.item(0))
    assert "Hello there!" in view.transcript.toPlainText()


def test_chat_tab_reopens_the_latest_conversation_after_a_restart(qtbot, tmp_path):
    first = ChatStore.in_home(tmp_path)
    conversation = first.create_conversation("gemma")
    first.add_message(conversation.id, "user", "Remember me")
    first.close()
    store = ChatStore.in_home(tmp_path)
    view = ChatView()
    qtbot.addWidget(view)
    ChatController(view, ChatService(TalkingNode(), store), store)
    assert "Remember me" in view.transcript.toPlainText()
    store.close()
