"""Run an ASGI app in a real uvicorn server on loopback, for tests and benchmarks.

Stable interface (other test modules import it):

    with running_server(app) as base_url:       # "http://127.0.0.1:<port>"
        httpx.get(f"{base_url}/path")
    # here the server has stopped and the app's lifespan shutdown has run

    with UvicornThread(app) as server:          # the same, with the running object
        server.base_url; server.server          # the uvicorn.Server, e.g. to read state

The server runs its own asyncio loop in a daemon thread on a socket bound by the helper to
127.0.0.1 on a free port (no port race). Start waits for uvicorn's startup (lifespan
included) on an event, at most `startup_timeout` seconds, and raises `RuntimeError` if the
server died first (a failing lifespan startup, for instance). Stop asks uvicorn to exit,
gives open connections `shutdown_timeout` seconds, then forces the exit, and joins the
thread: a server that still does not stop raises `RuntimeError` rather than leak.
Nothing here synchronises by sleeping.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Any, Literal

import uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator

    from typing_extensions import Self

__all__ = ["UvicornThread", "running_server"]

STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """A uvicorn server that signals a thread-safe event once it has started."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class UvicornThread:
    """A real uvicorn server for one ASGI app, in a thread, on 127.0.0.1.

    Args:
        app: The ASGI application.
        lifespan: uvicorn's lifespan mode (`"on"`, `"off"` or `"auto"`).
        startup_timeout: Seconds to wait for the server to start.
        shutdown_timeout: Seconds to wait for it to stop, before and after forcing it.
        **config: Further `uvicorn.Config` options (e.g. `http="h11"`, `access_log=False`).
    """

    def __init__(
        self,
        app: Any,
        *,
        lifespan: Literal["auto", "on", "off"] = "on",
        startup_timeout: float = STARTUP_TIMEOUT,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        **config: Any,
    ) -> None:
        config.setdefault("log_level", "warning")
        config.setdefault("timeout_graceful_shutdown", shutdown_timeout)
        self.server = _Server(uvicorn.Config(app, lifespan=lifespan, **config))
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.error: BaseException | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def _run(self) -> None:
        assert self._socket is not None
        try:
            self.server.run(sockets=[self._socket])
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
        finally:
            self.server.ready.set()

    def start(self) -> Self:
        """Bind a free loopback port, start the server and wait until it serves."""
        # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only on sockets
        # whose proto says TCP; without it each response waits ~40 ms for an ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._run, name="uvicorn-test", daemon=True)
        self._thread.start()
        if not self.server.ready.wait(self.startup_timeout) or not self.server.started:
            self.stop()
            if self.error is not None:
                msg = f"uvicorn failed to start: {self.error!r}"
            else:
                msg = f"uvicorn did not start within {self.startup_timeout} s"
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        """Stop the server (lifespan shutdown included) and join its thread."""
        thread = self._thread
        if thread is None:
            return
        self.server.should_exit = True
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            self.server.force_exit = True
            thread.join(self.shutdown_timeout)
        if self._socket is not None:
            self._socket.close()
        if thread.is_alive():
            msg = f"uvicorn did not stop within {2 * self.shutdown_timeout} s"
            raise RuntimeError(msg)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(app: Any, **options: Any) -> Iterator[str]:
    """Serve `app` with a real uvicorn on loopback; yield its base URL, then stop it.

    Args:
        app: The ASGI application.
        **options: As for `UvicornThread` (lifespan, timeouts, uvicorn.Config options).
    """
    with UvicornThread(app, **options) as server:
        yield server.base_url
