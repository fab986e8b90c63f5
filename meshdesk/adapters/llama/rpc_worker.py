"""The rpc worker child: llama.cpp's RPC server on 127.0.0.1, serving this machine's CPU.

Run as `python -m meshdesk.adapters.llama.rpc_worker [--threads N]`. It picks a free port on
127.0.0.1 (never anything else: the RPC server has no authentication), announces
`{"event": "ready", "port": N}` and serves until killed; it exits when its node goes away.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import socket
import sys
import threading
import time

from meshdesk.adapters.llama.common import (announce, compute_devices, describe_devices, exit_when_parent_goes,
                                             ggml_library, start_rpc_server)

LISTEN_HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LISTEN_HOST, 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meshdesk-rpc-worker")
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)  # the node asks when we are stuck
    exit_when_parent_goes()
    port = free_port()
    library = ggml_library()
    devices = compute_devices(library)
    failure: list[str] = []
    server = threading.Thread(target=serve, args=(port, arguments.threads, devices, failure), daemon=True)
    server.start()
    if not wait_until_listening(port, server):
        announce({"event": "failed", "message": failure[0] if failure else "rpc server did not start"})
        return 1
    announce({"event": "ready", "port": port, **describe_devices(library, devices)})
    server.join()
    return 0


def serve(port: int, threads: int, devices: list[int], failure: list[str]) -> None:
    try:
        start_rpc_server(f"{LISTEN_HOST}:{port}", threads, devices)
    except Exception as error:
        failure.append(str(error))


def wait_until_listening(port: int, server: threading.Thread, timeout: float = 30.0) -> bool:
    """The RPC server call blocks for good, so readiness is seen from outside: it accepts.

    The probe connection is one the server reads EOF from and forgets.
    """
    deadline = time.monotonic() + timeout
    while server.is_alive() and time.monotonic() < deadline:
        try:
            socket.create_connection((LISTEN_HOST, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


if __name__ == "__main__":
    raise SystemExit(main())
