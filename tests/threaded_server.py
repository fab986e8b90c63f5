"""A real OpenAiServer on an ephemeral port, on its own event loop thread, for tests that talk
to it with blocking clients (the official SDKs)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def serving(server) -> Iterator[int]:
    """Starts `server` (an `OpenAiServer`), yields its port, and stops it and its loop after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(server.start(0), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
