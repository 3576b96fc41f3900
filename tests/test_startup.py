"""A first run that explains itself: the real console script's messages and exit codes,
the Redis wait at start, and the scripts' one-line failures."""

from __future__ import annotations

import contextlib
import errno
import socket
import textwrap
from pathlib import Path

import fakeredis
import pytest
import trio
import trio_websocket

from console import one_line, run, run_script
from redis_server import free_port
from trio_scheduler import __version__
from trio_scheduler.simulate.peer import CannotConnect
from trio_scheduler.simulate.script import EXIT_UNREACHABLE, reachability_explained
from trio_scheduler.startup import (
    ExitCode,
    StoreUnreachable,
    listen_failure,
    open_listeners,
    reserve_port,
    startup_error,
)
from trio_scheduler.store.redis import open_redis_store, redacted


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scheduler.toml"
    path.write_text(textwrap.dedent(text))
    return path


# -- the console script ----------------------------------------------------------------


def test_version():
    done = run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"trio-scheduler {__version__}")


def test_invalid_config_exits_2_naming_the_key(tmp_path):
    done = run("serve", "--config", str(write(tmp_path, "[server]\nprot = 1\n")))
    assert done.returncode == ExitCode.BAD_CONFIG == 2
    assert "invalid configuration" in one_line(done.stderr) and "prot" in done.stderr


def test_contradictory_settings_exit_2(tmp_path):
    config = write(tmp_path, "[nodes]\nheartbeat_interval_s = 30.0\nheartbeat_timeout_s = 20.0\n")
    done = run("serve", "--config", str(config))
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "heartbeat_timeout_s (20)" in line and "heartbeat_interval_s (30)" in line


def test_busy_port_exits_3_with_one_line(busy_port):
    done = run("serve", "--host", "127.0.0.1", "--port", str(busy_port))
    assert done.returncode == ExitCode.CANNOT_LISTEN == 3
    assert f"port {busy_port} is already in use" in one_line(done.stderr)


def test_unknown_host_exits_3():
    done = run("serve", "--host", "no-such-host.invalid", "--port", "0")
    assert done.returncode == 3
    assert "'no-such-host.invalid' cannot be resolved" in one_line(done.stderr)


def test_unreachable_redis_exits_4_without_the_password(tmp_path):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    config = write(tmp_path, "[store]\nstartup_wait_s = 0.5\n")
    done = run("serve", "--config", str(config), "--port", "0", "--redis-url", url)
    assert done.returncode == ExitCode.STORE_UNREACHABLE == 4
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    waiting, failed = done.stderr.strip().splitlines()  # one warning while it waits
    assert "waiting for the store" in waiting
    assert "cannot start: Redis at redis://:***@127.0.0.1" in failed
    assert "did not answer within 0.5 s" in failed and "refused" in failed


def test_check_config(tmp_path):
    done = run("check-config", "config/scheduler.toml")
    assert (done.returncode, done.stdout) == (0, "config/scheduler.toml: valid\n")
    advised = write(tmp_path, "[jobs]\npending_timeout_ms = 60000\n")
    done = run("check-config", str(advised))
    assert done.returncode == 0
    warning, valid = done.stdout.splitlines()
    assert "warning: jobs.pending_timeout_ms (60000) is longer than jobs.timeout_ms" in warning
    assert valid.endswith(": valid")
    done = run("check-config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2 and "cannot read config file" in one_line(done.stderr)


# -- why listening failed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.EADDRINUSE, "Address already in use"), "port 5010 is already in use"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign"), "h is not an address of this machine"),
        (OSError(errno.EACCES, "Permission denied"), "ports below 1024 need privileges"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
         "host 'h' cannot be resolved (Name or service not known)"),
        (OSError(errno.EMFILE, "Too many open files"), "Too many open files"),
    ],
)
def test_listen_failure_names_the_cause(exc, expected):
    message = listen_failure(exc, "h", 5010)
    assert message.startswith("cannot listen on h:5010: ") and expected in message


def test_startup_error_is_found_inside_groups():
    error = StoreUnreachable("x")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert startup_error(group) is error
    assert startup_error(ExceptionGroup("other", [ValueError()])) is None


class TwoLoopbacks(trio.abc.HostnameResolver):
    """A host name with two addresses of this machine, as ``localhost`` often has."""

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
                for address in ("127.0.0.1", "127.0.0.2")]

    async def getnameinfo(self, sockaddr, flags):
        raise NotImplementedError


async def test_a_reserved_port_is_one_port_that_reuse_port_listeners_share():
    """What the parent of serve --workers holds: port 0 picks one port for every address;
    a plain bind cannot take it, a listener with SO_REUSEPORT joins it and gets the
    connections (the reservation does not listen)."""
    previous = trio.socket.set_custom_hostname_resolver(TwoLoopbacks())
    try:
        reserved = await reserve_port("two-loopbacks", 0)
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    with contextlib.ExitStack() as held:
        for sock in reserved:
            held.enter_context(sock)
        [port] = {sock.getsockname()[1] for sock in reserved}
        assert len(reserved) == 2
        with socket.socket() as plain, pytest.raises(OSError) as refused:
            plain.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE
        [listener] = await open_listeners("127.0.0.1", port, reuse_port=True)
        async with listener, await trio.open_tcp_stream("127.0.0.1", port):
            with trio.fail_after(5):
                await (await listener.accept()).aclose()


# -- Redis at start ------------------------------------------------------------------------


async def test_unreachable_redis_fails_after_the_wait():
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = trio.current_time()
    with pytest.raises(StoreUnreachable) as failed:
        async with open_redis_store(url, startup_wait_s=0.5):
            pytest.fail("opened")
    assert 0.5 <= trio.current_time() - started < 5
    assert str(failed.value).startswith(f"Redis at {url} did not answer within 0.5 s: ")


async def test_redis_that_comes_up_during_the_wait_is_used():
    server = fakeredis.FakeServer()
    server.connected = False  # still starting
    client = fakeredis.FakeRedis(server=server, decode_responses=True)

    async def comes_up():
        await trio.sleep(0.3)
        server.connected = True

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(comes_up)
        async with open_redis_store("redis://fake", client=client, startup_wait_s=10) as store:
            assert trio.current_time() - started >= 0.3  # it waited for Redis
            assert await store.ping() is True


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:p@ss@h/0", "rediss://user:***@h/0"),
        ("unix:///run/redis.sock?password=pw&db=1", "unix:///run/redis.sock?password=***&db=1"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redacted_urls_hide_passwords(url, shown):
    assert redacted(url) == shown


# -- the scripts -----------------------------------------------------------------------------


def test_replay_against_a_server_that_is_down():
    done = run_script("replay_trace.py", "tests/data/two_way_basic.jsonl",
                      "--url", f"ws://127.0.0.1:{free_port()}")
    assert done.returncode == EXIT_UNREACHABLE == 2
    line = one_line(done.stderr)
    assert line.startswith("replay_trace: cannot connect to ws://127.0.0.1:")
    assert "is the server running?" in line


def test_fake_client_with_a_wrong_url():
    done = run_script("fake_client.py", "--url", "http://127.0.0.1:5010/ws/session")
    assert done.returncode == 2
    assert "is not a WebSocket URL" in one_line(done.stderr)


def test_reachability_explained_passes_other_errors_through(capsys):
    unreachable = CannotConnect("cannot connect to ws://x: down")
    with pytest.raises(SystemExit) as exited:
        with reachability_explained("tool"):
            raise ExceptionGroup("tasks", [unreachable, CannotConnect("again")])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "tool: cannot connect to ws://x: down\n"
    closed = trio_websocket.ConnectionClosed(trio_websocket.CloseReason(1001, "bye"))
    with pytest.raises(SystemExit):
        with reachability_explained("tool"):
            raise closed
    assert capsys.readouterr().err == "tool: the server closed the connection: 1001 GOING_AWAY (bye)\n"
    with pytest.raises(ExceptionGroup):  # a bug among them: the traceback stays
        with reachability_explained("tool"):
            raise ExceptionGroup("tasks", [unreachable, KeyError("bug")])
