"""Why the server could not start, in one sentence an operator can act on.

Start-up problems are raised as :class:`StartupError`, whose message names the cause and
whose ``exit_code`` tells a supervisor what kind of problem it was (README, "Exit codes"):
a port in use or a host that is not this machine's will not fix itself, a store that is
not up yet may.
"""

from __future__ import annotations

import enum
import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import trio


class ExitCode(enum.IntEnum):
    """The process exit codes of ``trio-scheduler`` (documented in README)."""

    OK = 0
    FAILED = 1  # an unexpected error (a bug): the traceback is printed
    BAD_CONFIG = 2  # invalid configuration or command line
    CANNOT_LISTEN = 3  # the port or host cannot be used
    STORE_UNREACHABLE = 4  # the configured Redis did not answer at start


class StartupError(Exception):
    """The server cannot start; ``str()`` is the cause, for one log line."""

    exit_code = ExitCode.FAILED


class CannotListen(StartupError):
    exit_code = ExitCode.CANNOT_LISTEN


class StoreUnreachable(StartupError):
    exit_code = ExitCode.STORE_UNREACHABLE


def listen_failure(exc: OSError, host: str, port: int) -> str:
    """What went wrong when listening on ``host:port``, in words."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: host {host!r} cannot be resolved ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where}: port {port} is already in use "
                "(another server running? choose another with --port)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: {host} is not an address of this machine "
                "(use 0.0.0.0 for every interface)")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where}: permission denied "
                "(ports below 1024 need privileges)")
    return f"cannot listen on {where}: {exc.strerror or exc}"


async def open_listeners(
    host: str, port: int, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """``trio.open_tcp_listeners``, failing with :class:`CannotListen`.

    With ``reuse_port``, the sockets are opened with ``SO_REUSEPORT``: several processes
    (instances sharing one Redis, or the workers of ``serve --workers``) then listen on
    the same port and the kernel spreads new connections among them.
    """
    with _cannot_listen(host, port):
        if not reuse_port:
            return await trio.open_tcp_listeners(port, host=host)
        sockets = await _bind_reuse_port(host, port, listen=True)
    return [trio.SocketListener(sock) for sock in sockets]


async def reserve_port(host: str, port: int) -> list[trio.socket.SocketType]:
    """Bind ``host:port`` with ``SO_REUSEPORT`` without listening, failing with
    :class:`CannotListen`; port 0 picks one free port for every address of ``host``.

    The parent of ``serve --workers`` holds these sockets while its workers run, so the
    port picked stays the workers' across their restarts; a socket that does not listen
    is given no connection. (With ``SO_REUSEADDR``, as a listener has it: without, the
    connections a server on the port closed a minute ago, in TIME_WAIT, would refuse it.)
    """
    with _cannot_listen(host, port):
        return await _bind_reuse_port(host, port)


@contextmanager
def _cannot_listen(host: str, port: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise CannotListen(listen_failure(exc, host, port)) from exc


async def _bind_reuse_port(
    host: str, port: int, *, listen: bool = False
) -> list[trio.socket.SocketType]:
    """As ``trio.open_tcp_listeners`` binds, with ``SO_REUSEPORT`` set before binding, and
    every address on the port the first one got (port 0 picks it once)."""
    addresses = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    sockets = []
    try:
        for family, kind, proto, _, address in addresses:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind((address[0], port, *address[2:]))
                if listen:
                    sock.listen(socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            sockets.append(sock)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, however deep in exception groups (``[exc]`` if none)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
    return [exc]


def startup_error(exc: BaseException) -> StartupError | None:
    """The start-up error inside ``exc`` (however deep in exception groups), if any."""
    return next((e for e in leaf_exceptions(exc) if isinstance(e, StartupError)), None)
