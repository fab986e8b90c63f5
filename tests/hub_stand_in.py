"""A local stand-in for the Hugging Face hub, served over real HTTP on 127.0.0.1.

It answers what huggingface-hub and MeshDesk ask of `/{repo}/resolve/{revision}/{file}`:
HEAD with the hub's metadata headers (X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size) and
GET with Range support; unknown repos and files get the hub's 404s with X-Error-Code. Knobs
make it slow or make it drop a connection mid-way; it records every request it saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None


@dataclass
class HubFile:
    data: bytes
    sha256: bool = True           # give the LFS etag (the sha256) as X-Linked-Etag
    claimed_sha256: str | None = None  # lie about it


class StandInHub:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], HubFile] = {}
        self.seen: list[Seen] = []
        self.drop_after: int | None = None  # the next GET sends this many body bytes, then hangs up
        self.chunk_bytes = 64 * 1024
        self.chunk_delay_s = 0.0
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.port = 0

    def add(self, repo: str, filename: str, data: bytes, **options) -> None:
        self.files[(repo, filename)] = HubFile(data, **options)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gets(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == "GET"]

    # --- serving ----------------------------------------------------------------------------

    def start(self) -> StandInHub:
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("HEAD", "/{owner}/{name}/resolve/{revision}/{filename:.+}", self.handle)
        app.router.add_route("GET", "/{owner}/{name}/resolve/{revision}/{filename:.+}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Range")))
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        if not any(known == repo for known, _ in self.files):
            return web.Response(status=404, headers={"X-Error-Code": "RepoNotFound"}, text="Repository not found")
        hub_file = self.files.get((repo, request.match_info["filename"]))
        if hub_file is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"}, text="Entry not found")
        if request.method == "HEAD":
            return web.Response(headers=self.metadata_headers(hub_file))
        return await self.send(request, hub_file)

    def metadata_headers(self, hub_file: HubFile) -> dict:
        size = str(len(hub_file.data))
        git_etag = hashlib.sha1(hub_file.data).hexdigest()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{git_etag}"', "X-Linked-Size": size}
        if hub_file.sha256:
            sha256 = hub_file.claimed_sha256 or hashlib.sha256(hub_file.data).hexdigest()
            headers["X-Linked-Etag"] = f'"{sha256}"'
        return headers

    async def send(self, request: web.Request, hub_file: HubFile) -> web.StreamResponse:
        data, start = hub_file.data, 0
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        response = web.StreamResponse(status=206 if match else 200)
        if match:
            start = int(match.group(1))
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response.content_length = len(data) - start
        await response.prepare(request)
        limit, self.drop_after = self.drop_after, None
        end = len(data) if limit is None else min(len(data), start + limit)
        for offset in range(start, end, self.chunk_bytes):
            await response.write(data[offset:min(offset + self.chunk_bytes, end)])
            await asyncio.sleep(self.chunk_delay_s)
        if end < len(data):
            request.transport.close()  # hang up mid-body, as a dropped connection does
        return response


def write_tiny_gguf(path: Path, values: int = 768 * 1024) -> bytes:
    """A valid GGUF of a few MB (float32 tensor data), as a llama-architecture model."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("stand-in model")
    writer.add_block_count(2)
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_tensor("token_embd.weight", np.random.default_rng(5).standard_normal(values).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()
