"""Chat conversations kept in SQLite (`HOME/chat.sqlite3`), committed after every message.

WAL journal with `synchronous=NORMAL`: a commit is durable once it returns as far as a killed
process is concerned (the WAL is in the OS's page cache), and it costs no fsync, so the GUI
thread can write a message without stalling. Only a power cut can lose the last messages.

A database from an older version gains the newer columns on opening (`ADD COLUMN`, so its
messages stay as they were, with no speed and no machines recorded).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "chat.sqlite3"
TITLE_LENGTH = 48

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    model TEXT,
    finish_reason TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);
"""
# Columns added after the first version, with their types; `migrate` adds those a file lacks.
LATER_COLUMNS = {"tokens_per_second": "REAL", "served_by": "TEXT"}
MESSAGE_COLUMNS = ("id, conversation_id, role, content, model, finish_reason, created_at, "
                   "tokens_per_second, served_by")


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str
    created_at: float


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    model: str | None
    finish_reason: str | None  # "stop", "length", "stopped" (by the user), "error"
    created_at: float
    tokens_per_second: float | None = None  # the reply's generation speed, when measured
    served_by: tuple[str, ...] = ()         # names of the machines that served it, host first

    def for_request(self) -> dict:
        return {"role": self.role, "content": self.content}


def machine_names(stored: str | None) -> tuple[str, ...]:
    """The `served_by` column (a JSON list); anything else reads as no names, never a crash."""
    try:
        names = json.loads(stored) if stored else []
    except ValueError:
        return ()
    return tuple(str(name) for name in names) if isinstance(names, list) else ()


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


class ChatStore:
    def __init__(self, path: Path, clock=time.time):
        self.path = Path(path)
        self.clock = clock
        self.connection = sqlite3.connect(self.path)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute("PRAGMA foreign_keys=ON")
        self.connection.executescript(SCHEMA)
        self.migrate()

    def migrate(self) -> None:
        present = {row[1] for row in self.connection.execute("PRAGMA table_info(messages)")}
        with self.connection:
            for name, kind in LATER_COLUMNS.items():
                if name not in present:
                    self.connection.execute(f"ALTER TABLE messages ADD COLUMN {name} {kind}")

    @classmethod
    def in_home(cls, home: Path) -> ChatStore:
        return cls(Path(home) / FILE_NAME)

    def close(self) -> None:
        self.connection.close()

    def create_conversation(self, model: str, title: str = "New chat") -> Conversation:
        now = self.clock()
        with self.connection:
            cursor = self.connection.execute(
                "INSERT INTO conversations (title, model, created_at) VALUES (?, ?, ?)",
                (title, model, now))
        return Conversation(cursor.lastrowid, title, model, now)

    def conversations(self) -> list[Conversation]:
        rows = self.connection.execute(
            "SELECT id, title, model, created_at FROM conversations ORDER BY id DESC")
        return [Conversation(*row) for row in rows]

    def conversation(self, conversation_id: int) -> Conversation | None:
        row = self.connection.execute(
            "SELECT id, title, model, created_at FROM conversations WHERE id = ?",
            (conversation_id,)).fetchone()
        return None if row is None else Conversation(*row)

    def delete_conversation(self, conversation_id: int) -> None:
        with self.connection:
            self.connection.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def add_message(self, conversation_id: int, role: str, content: str,
                    model: str | None = None, finish_reason: str | None = None,
                    tokens_per_second: float | None = None, served_by: tuple[str, ...] = ()) -> Message:
        """Appends and commits; the first user message names the conversation."""
        now = self.clock()
        with self.connection:
            cursor = self.connection.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS.removeprefix('id, ')})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, model, finish_reason, now, tokens_per_second,
                 json.dumps(list(served_by)) if served_by else None))
            if role == "user":
                self._name_if_untitled(conversation_id, content)
        return Message(cursor.lastrowid, conversation_id, role, content, model, finish_reason, now,
                       tokens_per_second, tuple(served_by))

    def _name_if_untitled(self, conversation_id: int, content: str) -> None:
        earlier = self.connection.execute(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND role = 'user'",
            (conversation_id,)).fetchone()[0]
        if earlier == 1:
            self.connection.execute("UPDATE conversations SET title = ? WHERE id = ?",
                                    (title_from(content), conversation_id))

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.connection.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,))
        return [Message(*row[:7], row[7], machine_names(row[8])) for row in rows]

    def drop_trailing_reply(self, conversation_id: int) -> Message | None:
        """Deletes the last message if the assistant wrote it (before regenerating it)."""
        history = self.messages(conversation_id)
        if not history or history[-1].role != "assistant":
            return None
        with self.connection:
            self.connection.execute("DELETE FROM messages WHERE id = ?", (history[-1].id,))
        return history[-1]
