"""The rpc worker's supervisor against a fake process starter: readiness, devices, GPU memory, exits."""

from __future__ import annotations

import asyncio

import pytest

from meshdesk.node.rpc_worker import RpcWorker
from tests.fakes import ManualClock, ProcessStarter, eventually, run, within


class Worker:
    """An RpcWorker whose children are fake processes, running in the background."""

    def __init__(self, tmp_path, ready_seconds: float = 20.0):
        self.starter = ProcessStarter()
        self.clock = ManualClock()
        self.readies: list[int | None] = []  # the GPU memory each ready run reported
        self.worker = RpcWorker(["rpc-worker", "--threads", "2"], tmp_path / "worker.log",
                                start_process=self.starter, sleep=self.clock.sleep, on_ready=self.readies.append,
                                ready_seconds=ready_seconds)
        self.task = asyncio.ensure_future(self.worker.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_ready_announcement_gives_port_endpoint_pid_and_devices(tmp_path):
    async def scenario():
        harness = Worker(tmp_path)
        process = await harness.starter.next_process()
        assert harness.worker.endpoint is None
        process.announce({"event": "loading"})
        process.announce({"event": "ready", "port": "5000"})  # not a port: ignored
        process.announce({"event": "ready", "port": 50123, "devices": ["CUDA0", 7],
                          "gpu_memory_bytes": 8_000_000_000})
        await eventually(lambda: len(harness.readies) == 1)
        worker = harness.worker
        assert (worker.port, worker.endpoint, worker.pid) == (50123, "127.0.0.1:50123", process.pid)
        assert worker.devices == ["CUDA0", "7"]
        assert worker.gpu_memory_bytes == 8_000_000_000 and harness.readies == [8_000_000_000]
        assert worker.error is None
        assert harness.starter.calls[0][0] == ("rpc-worker", "--threads", "2")
        await harness.stop()

    run(scenario())


@pytest.mark.parametrize("announced, expected", [
    ({"gpu_memory_bytes": 1}, 1),
    ({"gpu_memory_bytes": 0}, None),         # a CPU-only build reports nothing usable
    ({"gpu_memory_bytes": -5}, None),
    ({"gpu_memory_bytes": "8000000000"}, None),
    ({"gpu_memory_bytes": 8.5e9}, None),
    ({"gpu_memory_bytes": None}, None),
    ({}, None),
])
def test_gpu_memory_is_kept_only_as_a_positive_integer(tmp_path, announced, expected):
    async def scenario():
        harness = Worker(tmp_path)
        process = await harness.starter.next_process()
        process.announce({"event": "ready", "port": 1, **announced})
        await eventually(lambda: len(harness.readies) == 1)
        assert harness.worker.gpu_memory_bytes == expected and harness.readies == [expected]
        await harness.stop()

    run(scenario())


@pytest.mark.parametrize("devices, expected", [
    (["Metal"], ["Metal"]),
    ([], []),
    ("CUDA0", []),
    (None, []),
])
def test_devices_are_a_list_of_names(tmp_path, devices, expected):
    async def scenario():
        harness = Worker(tmp_path)
        process = await harness.starter.next_process()
        process.announce({"event": "ready", "port": 1, "devices": devices})
        await eventually(lambda: len(harness.readies) == 1)
        assert harness.worker.devices == expected
        await harness.stop()

    run(scenario())


def test_a_worker_that_exits_loses_its_port_and_comes_back_on_a_new_one(tmp_path):
    async def scenario():
        harness = Worker(tmp_path)
        first = await harness.starter.next_process()
        first.announce({"event": "ready", "port": 6001, "gpu_memory_bytes": 10})
        await eventually(lambda: len(harness.readies) == 1)
        first.exit(-11)
        second = await harness.starter.next_process()
        assert harness.worker.port is None and harness.worker.endpoint is None and harness.worker.pid is None
        assert harness.clock.sleeps == [0.5]
        second.announce({"event": "ready", "port": 6002})
        await eventually(lambda: len(harness.readies) == 2)
        assert harness.worker.endpoint == "127.0.0.1:6002" and harness.worker.pid == second.pid
        assert harness.worker.gpu_memory_bytes is None  # each run reports afresh
        assert harness.readies == [10, None]
        await harness.stop()

    run(scenario())


def test_a_failed_announcement_records_the_error_and_ends_supervision(tmp_path):
    async def scenario():
        harness = Worker(tmp_path)
        process = await harness.starter.next_process()
        process.announce({"event": "failed", "message": "ggml_backend_rpc_start_server not found"})
        process.exit(1)
        await within(harness.task)
        assert harness.worker.error == "ggml_backend_rpc_start_server not found"
        assert harness.worker.port is None and harness.readies == []
        assert harness.starter.waiting == 0 and len(harness.starter.calls) == 1

    run(scenario())


def test_a_worker_that_exits_without_announcing_is_restarted(tmp_path):
    async def scenario():
        harness = Worker(tmp_path)
        process = await harness.starter.next_process()
        process.print_line(b"Segmentation fault")
        process.exit(139)
        await harness.starter.next_process()
        assert harness.worker.error is None and harness.readies == []
        await harness.stop()

    run(scenario())


def test_a_new_ready_clears_an_earlier_error(tmp_path):
    async def scenario():
        harness = Worker(tmp_path)
        harness.worker.error = "from an earlier run"
        process = await harness.starter.next_process()
        process.announce({"event": "ready", "port": 3})
        await eventually(lambda: len(harness.readies) == 1)
        assert harness.worker.error is None
        await harness.stop()

    run(scenario())


def test_a_worker_that_never_announces_is_asked_for_its_stacks_and_restarted(tmp_path):
    """Seen under load: a child that neither announces nor exits. It must not hold the split
    back for good (a host waits for its own worker before hosting)."""
    async def scenario():
        harness = Worker(tmp_path, ready_seconds=0.05)
        stuck = await harness.starter.next_process()
        second = await within(harness.starter.next_process())
        assert stuck.signals[:2] == ["SIGUSR1", "terminate"] and stuck.returncode is not None
        second.announce({"event": "ready", "port": 6003})
        await eventually(lambda: harness.worker.endpoint == "127.0.0.1:6003")
        await harness.stop()

    run(scenario())
