"""Run a FastAPI app with uvicorn: in the foreground for the CLI, in a thread for tests and benchmarks.

uvicorn handles SIGTERM/SIGINT itself: it stops accepting, lets in-flight requests finish (up to
`graceful_seconds`), runs the app's shutdown, then exits. Before that it calls the app's
`app.state.on_stop()`, if it has one: the serve app turns its queued requests away there (503)
rather than have uvicorn cancel them when the grace period ends (a plain-text 500).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from rewardlab.errors import WebError

__all__ = ["run_server", "background_server", "base_url", "free_port", "check_port_free",
           "wait_healthy"]

log = logging.getLogger(__name__)


def _config(app: Any, host: str, port: int, *, graceful_seconds: float) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=int(graceful_seconds), lifespan="on")


class _Server(uvicorn.Server):
    """uvicorn's server that tells the app first when a stop begins (see the module docstring)."""

    def __init__(self, app: Any, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.on_stop: Callable[[], object] | None = getattr(getattr(app, "state", None),
                                                             "on_stop", None)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        await super().shutdown(sockets)


def run_server(app: Any, *, host: str, port: int, graceful_seconds: float = 30.0) -> None:
    """Serve until SIGTERM/SIGINT; a port in use is a one-line error, not a traceback."""
    check_port_free(host, port)
    log.info("listening on %s (Ctrl-C or SIGTERM to stop)", base_url(host, port))
    # uvicorn re-raises the signal it stopped on once it is done; a graceful stop on SIGTERM is
    # the normal end of a server (systemd, Kubernetes, a test), so it exits 0 instead of dying by it
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        _Server(app, _config(app, host, port, graceful_seconds=graceful_seconds)).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM after uvicorn's graceful shutdown: nothing left to do."""


def base_url(host: str, port: int) -> str:
    """'http://127.0.0.1:8000', 'http://[::1]:8000': an IPv6 address goes in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """A port in use is a one-line WebError (checked before a model loads, and again at start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise WebError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for tests and benchmarks that start servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def background_server(app: Any, *, host: str = "127.0.0.1", port: int | None = None,
                      graceful_seconds: float = 5.0, start_timeout: float = 60.0) -> Iterator[str]:
    """Run `app` in a thread; yields its base URL ("http://127.0.0.1:PORT") and stops it after."""
    port = port or free_port(host)
    server = _Server(app, _config(app, host, port, graceful_seconds=graceful_seconds))
    # uvicorn installs signal handlers only from the main thread, so this one leaves them alone
    thread = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise WebError(f"server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield base_url(host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=graceful_seconds + 5)


def wait_healthy(url: str, proc: subprocess.Popen[Any], *, timeout: float = 180.0) -> None:
    """Until the server process `proc` answers `GET url/health` with 200 (for tests and
    benchmarks that start a server as a process); WebError if it exits or times out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.communicate()[1] or ""
            err = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
            raise WebError(f"server exited {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError):  # refused, reset, timed out: not listening yet
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise WebError(f"{url} did not become healthy within {timeout:g} s")
