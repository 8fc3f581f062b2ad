"""A scripted HTTP/1.1 server for client tests (stdlib only): statuses and faults per path.

Nothing synchronises by sleeping: `stop()` wakes the accept loop through a socket pair, sets
`release`, shuts every live connection down and joins every thread it started.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Self

_ACTIONS = ("respond", "reset", "hang", "close")
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class Reply:
    """What the server does with one request (the request is always read in full first).

    `respond` sends `status`, `headers` and `body` (with Content-Length); `reset` aborts the
    connection with a TCP RST; `close` closes it cleanly without a response; `hang` sends
    nothing until `ScriptedServer.release` is set or the server stops, then closes.
    """

    status: int = 200
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    action: Literal["respond", "reset", "hang", "close"] = "respond"

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"action must be one of {_ACTIONS}, not {self.action!r}")


@dataclass(frozen=True)
class Seen:
    """One request as the server received it: header names lower-cased, body de-chunked."""

    method: str
    path: str  # without the query string, as scripts are matched
    headers: dict[str, str]
    body: bytes
    query: str = ""


class _Handler(BaseHTTPRequestHandler):
    """Reads each request in full, records it, then acts on the scripted `Reply`."""

    protocol_version = "HTTP/1.1"
    # The stdlib writes the headers and the body in two sends: with Nagle on, the body
    # waits for the client's delayed ACK of the headers, ~40 ms per keep-alive response.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the client went away: nothing to report
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Keep quiet: no request log on stderr."""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "malformed body framing")
            return
        target = urlsplit(self.path)
        headers = {k.lower(): ", ".join(self.headers.get_all(k, ())) for k in self.headers}
        reply = self.server.owner._arrive(
            Seen(self.command, target.path, headers, body, target.query)
        )
        if reply.action == "respond":
            self._respond(reply)
            return
        self.close_connection = True
        if reply.action == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
        elif reply.action == "hang":
            self.server.owner.release.wait()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method (GET, POST, HEAD, ...) is served alike
            return self._serve
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self._read().split(b";")[0], 16):
                chunks.append(self._read(size))
                self._read(2)  # the CRLF after each chunk
            while self._read() not in (b"\r\n", b"\n"):
                pass  # trailers
            return b"".join(chunks)
        return self._read(int(self.headers.get("Content-Length") or 0))

    def _read(self, size: int | None = None) -> bytes:
        """Read `size` bytes, or a line if None; a client gone mid-body is a ConnectionError."""
        data = self.rfile.readline(65537) if size is None else self.rfile.read(size)
        if (size is None and not data) or (size is not None and len(data) < size):
            raise ConnectionAbortedError("the client closed the connection mid-body")
        return data

    def _respond(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204 and "content-length" not in {k.lower() for k in reply.headers}:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.status not in (204, 304) and self.command != "HEAD":
            self.wfile.write(reply.body)


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections and threads (accept loop, handlers) so `close()` ends them all."""

    block_on_close = False  # the stdlib skips daemon threads; we join our own list instead
    request_queue_size = 64
    timeout = 0  # handle_request() polls once: the accept loop has already selected

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner
        self.lock = threading.Lock()
        self.opened = 0
        self.live: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.wake = socket.socketpair()
        self.acceptor = threading.Thread(target=self.accept_loop, name="scripted-http")

    def accept_loop(self) -> None:
        """Accept connections until a byte arrives on the wake socket (no polling interval)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self.wake[0], selectors.EVENT_READ)
            while self.wake[0] not in {key.fileobj for key, _ in selector.select()}:
                self.handle_request()

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would do a reverse DNS lookup
        self.server_name, self.server_port = "127.0.0.1", self.socket.getsockname()[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )  # daemon only as a safety net: stop() joins every handler thread
        with self.lock:
            self.opened += 1
            self.live.add(request)
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.live.discard(request)
        if request.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(_ABORT)) == _ABORT:
            request.close()  # a reset: no shutdown(SHUT_WR), whose FIN would precede the RST
        else:
            super().shutdown_request(request)

    def close(self) -> None:
        """Stop accepting, wake every handler blocked on a connection, join, close sockets."""
        self.wake[1].send(b"x")
        self.acceptor.join()
        with self.lock:
            for request in self.live:
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
            threads, self.threads = self.threads, []
        for thread in threads:
            thread.join()
        self.server_close()
        for sock in self.wake:
            sock.close()


class ScriptedServer:
    """An HTTP/1.1 test server on 127.0.0.1 whose replies and faults are scripted per path.

    Use as a context manager, or call `start()` and `stop()`. Paths are matched without the
    query string. Every request, faulted or not, is recorded in `seen`.
    """

    def __init__(self) -> None:
        self.default: Reply = Reply()
        """The reply for any path whose script is empty."""
        self.release = threading.Event()
        """Set it to end every `hang` (stop() sets it too); `reset()` clears it."""
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = {}
        self._seen: list[Seen] = []
        self._down = False
        self._httpd: _HTTPServer | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        """The base URL, "http://127.0.0.1:<port>", once started."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._httpd.server_port}"

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (to check connection reuse and leaks)."""
        return 0 if self._httpd is None else self._httpd.opened

    @property
    def seen(self) -> list[Seen]:
        """A copy of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    def hits(self, path: str | None = None) -> int:
        """How many requests arrived for `path` (without query), or in all if None."""
        with self._lock:
            return sum(1 for s in self._seen if path is None or s.path == path)

    def script(self, path: str, *replies: Reply | int) -> None:
        """Replace the queue of replies for `path`; an int is shorthand for `Reply(status)`."""
        queue = deque(Reply(r) if isinstance(r, int) else r for r in replies)
        with self._lock:
            self._scripts[path] = queue

    def outage(self, down: bool) -> None:
        """While down, reset every request on every path; scripts are left untouched."""
        with self._lock:
            self._down = down

    def reset(self) -> None:
        """Clear scripts, `seen`, the outage, `release`, and restore the default `Reply()`."""
        with self._lock:
            self._scripts.clear()
            self._seen.clear()
            self._down = False
            self.default = Reply()
            self.release.clear()

    def start(self) -> Self:
        """Bind a free port and serve in a background thread; return self."""
        if self._httpd is not None:
            raise RuntimeError("a ScriptedServer can be started only once")
        self._httpd = _HTTPServer(self)
        self._httpd.acceptor.start()
        return self

    def stop(self) -> None:
        """End hangs, stop accepting, close every connection and join every thread (idempotent)."""
        if self._httpd is None or self._stopped:
            return
        self._stopped = True
        self.release.set()
        self._httpd.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _arrive(self, seen: Seen) -> Reply:
        """Record a request and take the reply for it (called from handler threads)."""
        with self._lock:
            self._seen.append(seen)
            if self._down:
                return Reply(action="reset")
            queue = self._scripts.get(seen.path)
            return queue.popleft() if queue else self.default
