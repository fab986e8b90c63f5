"""Mesh transport throughput and latency: raw TCP vs the TLS data plane vs QUIC (the control
stream, and a data stream: the data plane of a member with no TCP path, e.g. a punched one).

All on loopback (127.0.0.1). By default the accepting side runs in a child process (this same
script with `--serve`), so sender and receiver each get their own interpreter, event loop and
core, as two machines would. `--in-process` runs both sides on one event loop instead.

    .venv/bin/python bench/transport.py             # 256 MiB TCP/TLS, 16 MiB QUIC, 3 rounds
    .venv/bin/python bench/transport.py --quick     # tiny sizes, 1 round (smoke test)

Throughput: the client writes N MiB in 64 KiB chunks; the server reads and counts them and
answers with a 1-byte ack at the end. MiB/s = N / (first write .. ack received). Each plane
gets a fresh connection per run, and the mesh handshake (TLS and QUIC) is done before the
clock starts:
  - raw TCP: asyncio streams, no TLS, no handshake; `drain()` after each chunk.
  - TLS: TlsTransport, `handshake.dial`/`accept`, then `detach()` on both sides; `drain()`
    after each chunk (real backpressure from the TCP socket).
  - QUIC: QuicTransport, handshake, then raw bytes on the link's stream. aioquic's `drain()`
    never waits, so the sender yields to the event loop after each chunk and keeps at most
    QUIC_WINDOW bytes not yet acknowledged by the server (which sends a progress byte every
    QUIC_ACK_STEP bytes). QUIC's own flow control (1 MiB by default) still applies underneath.
  - QUIC data stream: the same connection and handshake, then a data stream opened on it
    (`adapters/quic/streams.py`), as a node's tunnel to a punched member uses it: `drain()`
    after each chunk, which waits while more than a MiB is unacknowledged.
  - QUIC via relay: the same data stream, on a connection through a `meshdesk relay` (its own
    process) at which the server registered (`node/relay_client.py`): the client dials the
    server's relayed address, as a member behind a symmetric router is reached.
The planes are interleaved (raw, tls, quic, raw, tls, quic, ...) and medians are reported.

Round-trip time: ping/pong control frames {"type": "ping", "t": ...} (length-prefixed JSON,
meshdesk.core.frames) on a handshaken link with `link.send`/`link.receive`, for QUIC and TLS,
and the same framing over plain TCP as a baseline. Median and p95 after a short warm-up.

Exit code 0 whatever the verdict (this is a measurement), 1 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from meshdesk.adapters.node_keys import NodeKey  # noqa: E402
from meshdesk.core.frames import FrameDecoder, FrameError, encode_frame  # noqa: E402
from meshdesk.core.identity import mesh_id_for  # noqa: E402
from meshdesk.node import handshake  # noqa: E402
from meshdesk.node.interfaces import LinkClosed  # noqa: E402
from meshdesk.node.relay_client import RelayClient  # noqa: E402
from tests.mesh_tools import credentials, quic_transport, tls_transport  # noqa: E402

HOST = "127.0.0.1"
MIB = 1 << 20
CHUNK = 64 * 1024
READ_CHUNK = 256 * 1024
QUIC_ACK_STEP = 256 * 1024  # the server sends b"." each time this many more bytes arrived
QUIC_WINDOW = 4 * MIB  # the QUIC sender keeps at most this much unacknowledged by the server
PROGRESS, DONE = b".", b"!"
TARGET_TLS_RATIO = 0.25
NOISY_SPREAD = 0.15
RUN_TIMEOUT = 60.0
PLANES = ("tcp", "tls", "quic", "stream", "relayed")
LABELS = {"tcp": "raw TCP", "tls": "TLS data plane", "quic": "QUIC control", "stream": "QUIC data",
          "relayed": "QUIC via relay"}


# --------------------------------------------------------------------------------------------
# Plain TCP with the same framing as the mesh links, so all three planes look alike.


class RawLink:
    plane = "tcp"
    server_public_key = None
    client_public_key = None

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.pending: list[dict] = []

    def authenticated(self) -> None:
        pass

    async def send(self, message: dict) -> None:
        self.writer.write(encode_frame(message))
        await self.writer.drain()

    async def receive(self) -> dict:
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise LinkClosed("connection closed")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def detach(self):
        if self.pending or self.decoder.buffered:
            raise FrameError("data before the stream was handed over")
        return self.reader, self.writer


def byte_stream(link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The raw stream under a link, once no frames are left over."""
    if hasattr(link, "detach"):
        return link.detach()
    if link.pending or link.decoder.buffered:  # QuicLink: its stream, directly
        raise FrameError("data before the stream was handed over")
    return link.reader, link.writer


# --------------------------------------------------------------------------------------------
# The accepting side.


class BenchServer:
    def __init__(self, mesh_secret: bytes):
        self.mesh_secret = mesh_secret
        self.mesh_id = mesh_id_for(mesh_secret)
        self.key = NodeKey.generate()
        self.credentials = credentials(self.key, "bench-server")
        self.folder = tempfile.TemporaryDirectory(prefix="meshdesk-bench-transport-")
        self.quic = quic_transport(self.key)
        self.tls = tls_transport(self.key, Path(self.folder.name))
        self.tcp: asyncio.Server | None = None
        self.ports: dict[str, int] = {}
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> dict[str, int]:
        self.ports["quic"] = await self.quic.start(HOST, 0, self.on_mesh_link)
        try:  # the data plane shares the QUIC port's number, as a node does
            self.ports["tls"] = await self.tls.start(HOST, self.ports["quic"], self.on_mesh_link)
        except OSError:
            self.ports["tls"] = await self.tls.start(HOST, 0, self.on_mesh_link)
        self.tcp = await asyncio.start_server(self.on_tcp, HOST, 0)
        self.ports["tcp"] = self.tcp.sockets[0].getsockname()[1]
        self.ports["stream"] = self.ports["quic"]
        self.ports["relayed"] = await self.register_at_a_relay()
        return self.ports

    async def register_at_a_relay(self) -> int:
        """A `meshdesk relay` of our own on loopback, and our relayed address's port there."""
        self.relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "meshdesk", "relay", "--host", HOST, "--port", "0",
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
        line = (await asyncio.wait_for(self.relay.stdout.readline(), 30)).decode()
        relay_port = int(line.rsplit(" ", 1)[1])
        registered = asyncio.Event()
        self.relay_client = RelayClient((HOST, relay_port), self.key.public_bytes, self.key.sign,
                                        self.quic.send_datagram, registered.set)
        self.relay_client.start()
        await asyncio.wait_for(registered.wait(), 10)
        return self.relay_client.relayed_address[1]

    async def stop(self) -> None:
        if getattr(self, "relay_client", None) is not None:
            await self.relay_client.stop()
        if getattr(self, "relay", None) is not None and self.relay.returncode is None:
            self.relay.terminate()
            await self.relay.wait()
        for task in list(self.tasks):
            task.cancel()
        if self.tcp is not None:
            self.tcp.close()
        await self.tls.stop()
        await self.quic.stop()
        self.folder.cleanup()

    async def on_tcp(self, reader, writer) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self.serve(RawLink(reader, writer))
        except (LinkClosed, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def on_mesh_link(self, link) -> None:
        await handshake.accept(link, self.credentials, self.mesh_id, self.mesh_secret, lambda hello: None)
        if hasattr(link, "accept_streams"):
            link.accept_streams(self.on_stream)
        try:
            await self.serve(link)
        except (asyncio.IncompleteReadError, LinkClosed):
            pass

    async def on_stream(self, stream) -> None:
        try:
            await self.serve(stream)
        except (asyncio.IncompleteReadError, LinkClosed, ConnectionError):
            pass

    async def serve(self, link) -> None:
        request = await link.receive()
        if request["type"] == "throughput":
            await self.sink(link, int(request["bytes"]), int(request.get("ack_every") or 0))
        elif request["type"] == "pings":
            await link.send({"type": "ready"})
            while True:
                message = await link.receive()
                if message["type"] != "ping":
                    break
                await link.send({"type": "pong", "t": message["t"], "seq": message["seq"]})
        # wait for the client to hang up (EOF; QUIC readers get EOF when the connection ends)
        reader = link.reader
        while await reader.read(READ_CHUNK):
            pass

    async def sink(self, link, total: int, ack_every: int) -> None:
        await link.send({"type": "ready"})
        reader, writer = byte_stream(link)
        received = 0
        next_ack = ack_every
        while received < total:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise LinkClosed(f"stream ended after {received} of {total} bytes")
            received += len(data)
            if ack_every:
                while next_ack <= received and next_ack < total:
                    writer.write(PROGRESS)
                    next_ack += ack_every
        writer.write(DONE)
        await writer.drain()


async def serve_forever() -> int:
    """`--serve`: the mesh secret comes as hex on stdin's first line; ports go to stdout as JSON.
    Runs until stdin closes."""
    secret = bytes.fromhex(sys.stdin.readline().strip())
    server = BenchServer(secret)
    ports = await server.start()
    print(json.dumps(ports), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.stop()
    return 0


class ServerProcess:
    def __init__(self, mesh_secret: bytes):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=REPO_ROOT)
        self.process.stdin.write(mesh_secret.hex() + "\n")
        self.process.stdin.flush()

    async def start(self) -> dict[str, int]:
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 30)
        if not line:
            raise RuntimeError(f"server process exited early (code {self.process.wait()})")
        return json.loads(line)

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------------------------
# The dialling side.


class Client:
    def __init__(self, mesh_secret: bytes, ports: dict[str, int]):
        self.mesh_secret = mesh_secret
        self.mesh_id = mesh_id_for(mesh_secret)
        self.ports = ports
        self.key = NodeKey.generate()
        self.credentials = credentials(self.key, "bench-client")
        self.folder = tempfile.TemporaryDirectory(prefix="meshdesk-bench-transport-")
        self.quic = quic_transport(self.key)
        self.tls = tls_transport(self.key, Path(self.folder.name))

    async def open(self, plane: str):
        address = (HOST, self.ports[plane])
        if plane == "tcp":
            return RawLink(*await asyncio.open_connection(*address))
        link = await (self.tls if plane == "tls" else self.quic).connect(address)
        try:
            await handshake.dial(link, self.credentials, self.mesh_id, self.mesh_secret)
        except BaseException:
            await self.close(link)
            raise
        if plane in ("stream", "relayed"):
            stream = await link.open_stream()
            stream.control_link = link  # closed with the stream
            return stream
        return link

    async def close(self, link) -> None:
        link = getattr(link, "control_link", link)
        if link.plane == "quic":
            link.close("done")
            try:  # let the close finish so the next run does not share the loop with it
                await asyncio.wait_for(link.protocol.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        else:
            link.writer.close()
            try:
                await link.writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def stop(self) -> None:
        await self.quic.stop()
        self.folder.cleanup()

    async def throughput(self, plane: str, total: int) -> float:
        """Seconds from the first write to the server's final ack."""
        link = await self.open(plane)
        try:
            windowed = plane == "quic"
            await link.send({"type": "throughput", "bytes": total,
                             "ack_every": QUIC_ACK_STEP if windowed else 0})
            reply = await link.receive()
            if reply.get("type") != "ready":
                raise RuntimeError(f"server answered {reply!r}")
            reader, writer = byte_stream(link)
            chunk = os.urandom(CHUNK)
            sent = acked = 0
            started = time.perf_counter()
            while sent < total:
                size = min(CHUNK, total - sent)
                writer.write(chunk if size == CHUNK else chunk[:size])
                sent += size
                if windowed:
                    await asyncio.sleep(0)  # let aioquic transmit and process acks
                    while sent - acked > QUIC_WINDOW:
                        acked += await expect_ack(reader, sent - acked)
                else:
                    await writer.drain()
            while await expect_ack(reader, total - acked) != -1:
                pass
            return time.perf_counter() - started
        finally:
            await self.close(link)

    async def round_trips(self, plane: str, count: int, warmup: int) -> list[float]:
        link = await self.open(plane)
        try:
            await link.send({"type": "pings"})
            if (await link.receive()).get("type") != "ready":
                raise RuntimeError("server did not accept the ping test")
            times = []
            for seq in range(warmup + count):
                started = time.perf_counter()
                await link.send({"type": "ping", "t": started, "seq": seq})
                pong = await link.receive()
                elapsed = time.perf_counter() - started
                if pong.get("type") != "pong" or pong.get("seq") != seq or pong.get("t") != started:
                    raise RuntimeError(f"unexpected reply {pong!r}")
                if seq >= warmup:
                    times.append(elapsed)
            await link.send({"type": "done"})
            return times
        finally:
            await self.close(link)


async def expect_ack(reader: asyncio.StreamReader, outstanding: int) -> int:
    """Bytes acknowledged by the next ack byte; -1 for the final one."""
    byte = await reader.readexactly(1)
    if byte == DONE:
        return -1
    if byte != PROGRESS:
        raise RuntimeError(f"unexpected ack byte {byte!r}")
    return min(QUIC_ACK_STEP, outstanding)


# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    sizes: dict[str, int]
    in_process: bool
    rates: dict[str, list[float]] = field(default_factory=lambda: {plane: [] for plane in PLANES})
    # CPU seconds per wall second during each run: (client, server); server None when unknown
    cpu: dict[str, list[tuple[float, float | None]]] = field(
        default_factory=lambda: {plane: [] for plane in PLANES})
    udp_drops: int | None = None  # system-wide UDP receive-buffer drops during the QUIC runs
    rtts: dict[str, list[float]] = field(default_factory=dict)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def udp_receive_drops() -> int | None:
    """System-wide count of UDP datagrams dropped for a full receive buffer (Linux), or None."""
    try:
        rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=512.0, metavar="N",
                        help="MiB per raw TCP and TLS throughput run (default 512)")
    parser.add_argument("--quic-mib", type=float, default=16.0, metavar="N",
                        help="MiB per QUIC throughput run (default 16; QUIC moves a few MiB/s)")
    parser.add_argument("--repetitions", type=int, default=3, metavar="N",
                        help="interleaved rounds of throughput runs (default 3)")
    parser.add_argument("--pings", type=int, default=200, metavar="N",
                        help="timed round trips per plane (default 200, after 20 uncounted)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server on this process's event loop instead of a child process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: --mib 4 --quic-mib 0.5 --repetitions 1 --pings 20, no warm-up")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.mib, arguments.quic_mib, arguments.repetitions, arguments.pings = 4, 0.5, 1, 20
    if arguments.mib <= 0 or arguments.quic_mib <= 0 or arguments.repetitions < 1 or arguments.pings < 1:
        parser.error("sizes, --repetitions and --pings must be positive")
    return arguments


async def measure(arguments: argparse.Namespace) -> Results:
    secret = os.urandom(32)
    server = BenchServer(secret) if arguments.in_process else ServerProcess(secret)
    client = None
    try:
        ports = await server.start()
        client = Client(secret, ports)
        sizes = {"tcp": int(arguments.mib * MIB), "tls": int(arguments.mib * MIB),
                 "quic": int(arguments.quic_mib * MIB), "stream": int(arguments.quic_mib * MIB),
                 "relayed": int(arguments.quic_mib * MIB)}
        results = Results(sizes, arguments.in_process)
        server_pid = None if arguments.in_process else server.process.pid
        if not arguments.quick:  # warm-up: first connections, imports, caches; not counted
            for plane in PLANES:
                async with asyncio.timeout(RUN_TIMEOUT):
                    await client.throughput(plane, min(sizes[plane], 4 * MIB) // 4)
        for repetition in range(1, arguments.repetitions + 1):
            for plane in PLANES:
                drops_before = udp_receive_drops()
                client_cpu = time.process_time()
                server_cpu = process_cpu_seconds(server_pid) if server_pid else None
                async with asyncio.timeout(RUN_TIMEOUT):
                    seconds = await client.throughput(plane, sizes[plane])
                client_cpu = (time.process_time() - client_cpu) / seconds
                if server_cpu is not None:
                    after = process_cpu_seconds(server_pid)
                    server_cpu = None if after is None else (after - server_cpu) / seconds
                drops_after = udp_receive_drops()
                if plane == "quic" and drops_before is not None and drops_after is not None:
                    results.udp_drops = (results.udp_drops or 0) + drops_after - drops_before
                rate = sizes[plane] / MIB / seconds
                results.rates[plane].append(rate)
                results.cpu[plane].append((client_cpu, server_cpu))
                cpu_text = (f"cpu {client_cpu:4.0%} both sides" if arguments.in_process else
                            f"cpu client {client_cpu:4.0%} server "
                            f"{'?' if server_cpu is None else format(server_cpu, '4.0%')}")
                print(f"  round {repetition}  {LABELS[plane]:<15} {sizes[plane] / MIB:8.1f} MiB "
                      f"in {seconds:7.3f} s = {rate:9.1f} MiB/s   {cpu_text}", flush=True)
        for plane in PLANES:
            async with asyncio.timeout(RUN_TIMEOUT):
                results.rtts[plane] = await client.round_trips(plane, arguments.pings,
                                                               0 if arguments.quick else 20)
            print(f"  ping/pong {LABELS[plane]:<15} {arguments.pings} round trips, median "
                  f"{statistics.median(results.rtts[plane]) * 1000:.3f} ms", flush=True)
        return results
    finally:
        if client is not None:
            await client.stop()
        await server.stop()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def cpu_summary(samples: list[tuple[float, float | None]], in_process: bool) -> str:
    client = statistics.median(sample[0] for sample in samples)
    if in_process:
        return f"{client:.0%}"
    servers = [sample[1] for sample in samples if sample[1] is not None]
    return f"{client:.0%} / {statistics.median(servers):.0%}" if servers else f"{client:.0%} / ?"


def report(results: Results, arguments: argparse.Namespace, load_before) -> None:
    print()
    print("Throughput (MiB/s; 1 MiB = 1,048,576 bytes)")
    cpu_header = "cpu (1 loop)" if results.in_process else "cpu client/server"
    print(f"  {'plane':<15} {'MiB/run':>8} {'runs':>5} {'median':>9} {'min':>9} {'max':>9} "
          f"{'spread':>7} {'median MB/s':>12}  {cpu_header}")
    median = {}
    spreads = {}
    for plane in PLANES:
        rates = results.rates[plane]
        median[plane] = statistics.median(rates)
        spreads[plane] = (max(rates) - min(rates)) / median[plane] if median[plane] else math.nan
        print(f"  {LABELS[plane]:<15} {results.sizes[plane] / MIB:8.1f} {len(rates):5d} "
              f"{median[plane]:9.1f} {min(rates):9.1f} {max(rates):9.1f} {spreads[plane]:7.0%} "
              f"{median[plane] * MIB / 1e6:12.1f}  {cpu_summary(results.cpu[plane], results.in_process)}")
    print()
    print("Control-message round trip (ping/pong frames on a handshaken link)")
    print(f"  {'plane':<15} {'n':>5} {'median ms':>10} {'p95 ms':>8} {'min ms':>8} {'max ms':>8}")
    for plane in PLANES:
        rtts = results.rtts[plane]
        print(f"  {LABELS[plane]:<15} {len(rtts):5d} {statistics.median(rtts) * 1000:10.3f} "
              f"{percentile(rtts, 0.95) * 1000:8.3f} {min(rtts) * 1000:8.3f} {max(rtts) * 1000:8.3f}")
    load_after = os.getloadavg()
    print()
    print("  cpu = CPU seconds per wall-clock second of the run (median); 100% is one core busy.")
    if results.udp_drops is not None:
        print(f"  UDP datagrams dropped for a full receive buffer during the QUIC runs (system-wide): "
              f"{results.udp_drops}; each one costs aioquic a loss recovery and a smaller "
              f"congestion window")
    where = ("one asyncio process: client and server share one event loop and one core"
             if arguments.in_process else
             "server in a child process: each side has its own interpreter and event loop, "
             "like two machines (a 2-core box gives each its own core)")
    print(f"  setup: loopback {HOST}, {where}")
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on "
          f"{os.cpu_count()} cores")
    reasons = (["quick run"] if arguments.quick else []) + [
        f"{LABELS[plane]} runs spread {spreads[plane]:.0%}" for plane in PLANES
        if len(results.rates[plane]) > 1 and spreads[plane] > NOISY_SPREAD]
    if load_before[0] > (os.cpu_count() or 1) - 1.25:  # this bench itself keeps up to 2 cores busy
        reasons.append(f"other work running: load average {load_before[0]:.2f} before the start")
    if reasons:
        print(f"  WARNING: numbers may be noisy ({', '.join(reasons)})")
    tls_ratio = median["tls"] / median["tcp"]
    quic_ratio = median["quic"] / median["tcp"]
    print()
    print(f"tls / raw tcp = {tls_ratio:.2f} (target >= {TARGET_TLS_RATIO:.2f}) "
          f"{'PASS' if tls_ratio >= TARGET_TLS_RATIO else 'FAIL'}")
    print(f"quic / raw tcp = {quic_ratio:.2f}  (quic / tls = {median['quic'] / median['tls']:.3f})")
    print(f"quic data stream / tls = {median['stream'] / median['tls']:.3f}  (what a member with no TCP "
          f"path costs the data plane)")
    print(f"quic via relay / quic data stream = {median['relayed'] / median['stream']:.3f}  (what the relay's "
          f"extra hop costs)")
    print(f"RTT medians: raw tcp {statistics.median(results.rtts['tcp']) * 1000:.3f} ms, "
          f"tls {statistics.median(results.rtts['tls']) * 1000:.3f} ms, "
          f"quic {statistics.median(results.rtts['quic']) * 1000:.3f} ms, "
          f"quic data stream {statistics.median(results.rtts['stream']) * 1000:.3f} ms, "
          f"quic via relay {statistics.median(results.rtts['relayed']) * 1000:.3f} ms")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.serve:
        try:
            return asyncio.run(serve_forever())
        except Exception:
            traceback.print_exc()
            return 1
    load_before = os.getloadavg()
    print(f"mesh transport bench: {arguments.mib:g} MiB per TCP/TLS run, {arguments.quic_mib:g} MiB per "
          f"QUIC run, {arguments.repetitions} round(s), {arguments.pings} pings, "
          f"{'in-process server' if arguments.in_process else 'server in a child process'}",
          flush=True)
    started = time.perf_counter()
    try:
        results = asyncio.run(measure(arguments))
        report(results, arguments, load_before)
    except Exception:
        traceback.print_exc()
        return 1
    print(f"(took {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
