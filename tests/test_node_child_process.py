"""Supervised children against a fake process starter: announcements, failed starts, stopping, restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from meshdesk.core.launcher import Runtime, child_command
from meshdesk.node.child_process import (ANNOUNCEMENT_LIMIT, Backoff, ChildProcess, app_command, parse_announcement,
                                         python_module_command, supervise)
from tests.fakes import ManualClock, ProcessStarter, eventually, run, within


def child_in(tmp_path, starter: ProcessStarter) -> ChildProcess:
    return ChildProcess("test child", ["child-program", "--flag"], tmp_path / "logs" / "child.log", starter)


def test_a_child_starts_with_its_command_a_pipe_for_stdin_and_stderr_in_its_log_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)

    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        [(command, options)] = starter.calls
        assert command == ("child-program", "--flag")
        assert options["stdin"] == asyncio.subprocess.PIPE  # the child exits on EOF there
        assert options["stdout"] == asyncio.subprocess.PIPE
        assert options["stderr"].name == str(tmp_path / "logs" / "child.log")
        assert options["limit"] == ANNOUNCEMENT_LIMIT
        assert options["env"]["PYTHONUNBUFFERED"] == "1"
        assert child.process is await starter.next_process()

    run(scenario())


def test_announcements_skip_lines_that_are_not_json_objects(tmp_path):
    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        process = await starter.next_process()
        for line in (b"loading the model...", b"[1, 2]", b'"ready"', b"\xff\xfe not utf-8", b"{broken"):
            process.print_line(line)
        process.announce({"event": "ready", "port": 5000})
        process.announce({"event": "bye"})
        process.exit(0)
        assert await child.next_announcement() == {"event": "ready", "port": 5000}
        assert await child.next_announcement() == {"event": "bye"}
        assert await child.next_announcement() is None  # stdout closed

    run(scenario())


def test_an_overlong_line_is_dropped_and_the_next_announcement_still_arrives(tmp_path):
    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        process = await starter.next_process()
        process.print_line(b"x" * (ANNOUNCEMENT_LIMIT * 2))
        process.announce({"event": "ready", "port": 7})
        assert await within(child.next_announcement()) == {"event": "ready", "port": 7}

    run(scenario())


@pytest.mark.parametrize("line, expected", [
    (b'{"event": "ready"}\n', {"event": "ready"}),
    (b"  {}  ", {}),
    (b"[]", None),
    (b"42", None),
    (b"null", None),
    (b"not json", None),
    (b"\x80\x81", None),
    (b"", None),
])
def test_parse_announcement(line, expected):
    assert parse_announcement(line) == expected


def test_a_failed_start_raises_out_of_supervision_without_an_exit(tmp_path):
    async def scenario():
        starter = ProcessStarter()
        starter.failure = FileNotFoundError("no such program: child-program")
        exits, starts = [], []

        async def on_start(child):
            starts.append(child)
            return True

        with pytest.raises(FileNotFoundError):
            await supervise(lambda: child_in(tmp_path, starter), on_start, exits.append)
        assert starts == [] and exits == []
        assert (tmp_path / "logs").is_dir()  # the log folder exists for the next attempt

    run(scenario())


def test_stop_terminates_and_waits(tmp_path):
    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        process = await starter.next_process()
        await child.stop()
        assert process.signals == ["terminate"]
        assert process.returncode == -15
        await child.stop()  # already gone: nothing more is sent
        assert process.signals == ["terminate"]

    run(scenario())


def test_stop_kills_a_child_that_ignores_terminate_after_the_grace_period(tmp_path):
    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        process = await starter.next_process()
        process.exits_on_terminate = False
        await child.stop(grace_seconds=0)
        assert process.signals == ["terminate", "kill"]
        assert process.returncode == -9

    run(scenario())


def test_stop_before_start_does_nothing(tmp_path):
    run(child_in(tmp_path, ProcessStarter()).stop())


def test_wait_returns_the_exit_code_while_draining_what_the_child_still_prints(tmp_path):
    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        process = await starter.next_process()
        waiting = asyncio.ensure_future(child.wait())
        process.print_line(b"x" * 100_000)
        process.exit(3)
        assert await within(waiting) == 3

    run(scenario())


@pytest.mark.parametrize("previous, ran_for, expected", [
    (None, 0.1, 0.5),     # the first restart
    (0.5, 0.1, 1.0),      # crashing again soon doubles the delay
    (16.0, 0.1, 30.0),    # up to the longest
    (30.0, 5.0, 30.0),
    (8.0, 60.0, 0.5),     # a long healthy run starts over
])
def test_backoff(previous, ran_for, expected):
    assert Backoff().next_delay(previous, ran_for) == expected


class Supervised:
    """Records what supervision told it and lets the test end each child."""

    def __init__(self, tmp_path, worth_restarting=True):
        self.starter = ProcessStarter()
        self.tmp_path = tmp_path
        self.worth_restarting = worth_restarting
        self.exits: list[int] = []
        self.started: list[ChildProcess] = []

    def make_child(self) -> ChildProcess:
        return child_in(self.tmp_path, self.starter)

    async def on_start(self, child: ChildProcess) -> bool:
        self.started.append(child)
        return self.worth_restarting


def test_supervision_restarts_after_each_exit_with_growing_delays_reset_by_a_healthy_run(tmp_path):
    async def scenario():
        clock = ManualClock()
        supervised = Supervised(tmp_path)
        task = asyncio.ensure_future(supervise(supervised.make_child, supervised.on_start, supervised.exits.append,
                                               Backoff(first=1, longest=4, healthy_after=60),
                                               clock=clock.time, sleep=clock.sleep))
        for code, ran_for in [(1, 0), (2, 0), (3, 0), (4, 0), (5, 100), (6, 0)]:
            process = await supervised.starter.next_process()
            clock.advance(ran_for)
            process.exit(code)
        await supervised.starter.next_process()
        assert supervised.exits == [1, 2, 3, 4, 5, 6]
        # doubling from 1 up to 4; the 100 s run counts as healthy and starts over at 1
        assert clock.sleeps == [1, 2, 4, 4, 1, 2]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario())


def test_supervision_ends_after_a_child_that_a_restart_will_not_fix(tmp_path):
    async def scenario():
        clock = ManualClock()
        supervised = Supervised(tmp_path, worth_restarting=False)
        task = asyncio.ensure_future(supervise(supervised.make_child, supervised.on_start, supervised.exits.append,
                                               clock=clock.time, sleep=clock.sleep))
        process = await supervised.starter.next_process()
        process.exit(1)
        await within(task)
        assert supervised.exits == [1] and clock.sleeps == []
        assert supervised.starter.waiting == 0 and len(supervised.starter.calls) == 1

    run(scenario())


def test_cancelling_supervision_stops_the_running_child(tmp_path):
    async def scenario():
        supervised = Supervised(tmp_path)
        task = asyncio.ensure_future(supervise(supervised.make_child, supervised.on_start, supervised.exits.append))
        process = await supervised.starter.next_process()
        await eventually(lambda: supervised.started)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert process.signals == ["terminate"] and process.returncode == -15
        assert supervised.exits == []  # a stop by us is not an exit to report

    run(scenario())


def test_announcement_limit_is_what_the_fake_reader_enforces(tmp_path):
    """Guards the fake itself: a line just under the limit passes whole."""
    async def scenario():
        starter = ProcessStarter()
        child = child_in(tmp_path, starter)
        await child.start()
        process = await starter.next_process()
        padding = "y" * (ANNOUNCEMENT_LIMIT - 100)
        process.announce({"event": "note", "text": padding})
        assert (await child.next_announcement())["text"] == padding

    run(scenario())


# --- children inside a bundle: a launcher that runs only the app module, as Briefcase's do ----

def bundle_launcher(tmp_path) -> str:
    """Stands in for Briefcase's launcher: runs the `meshdesk` module with its arguments, and
    knows no `-m`."""
    launcher = tmp_path / "MeshDesk"
    root = Path(__file__).resolve().parent.parent
    launcher.write_text(f'#!/bin/sh\ncd {root} && exec {sys.executable} -m meshdesk "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


def test_a_bundle_launcher_runs_a_child_module_through_the_hidden_child_option(tmp_path):
    runtime = Runtime(bundle_launcher(tmp_path), installer="briefcase")
    command = child_command(runtime, "meshdesk.adapters.llama.rpc_worker", "--help")
    assert command[1:3] == ["--child", "meshdesk.adapters.llama.rpc_worker"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: meshdesk-rpc-worker" in result.stdout


def test_a_bundle_launcher_given_a_foreign_child_says_so_and_fails(tmp_path):
    result = subprocess.run([bundle_launcher(tmp_path), "--child", "os"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "meshdesk: 'os' is not a module of meshdesk" in result.stderr


def test_this_checkout_runs_its_children_with_python_dash_m():
    assert python_module_command("meshdesk.adapters.llama.host", "-x") == [
        sys.executable, "-m", "meshdesk.adapters.llama.host", "-x"]
    assert app_command("--home", "/h") == [sys.executable, "-m", "meshdesk", "--home", "/h"]
