"""ASGI middleware: requests per second of a trivial endpoint, with and without stalwart.

One uvicorn server (a subprocess, one worker, on loopback) serves copies of the same
Starlette app with a trivial endpoint, side by side under one path prefix each, and the
client sends each of them the same requests:

- ``plain`` and ``install()``: the app alone, and with `stalwart.contrib.fastapi.install`
  and its defaults (correlation id, exception handlers); requests without headers, so
  the middleware makes a fresh id for each;
- ``plain + header``: the app with a minimal ASGI middleware adding a fixed header as
  long as the correlation id: what one more response header costs the server (h11
  checks and writes each), the floor under ``install()``;
- ``plain, headers`` and ``install() + deadline``: the app alone, and installed with
  ``request_deadline=10`` and a deadline header; requests with ``X-Correlation-ID`` and
  ``X-Request-Timeout`` (every rule at work; the server parses the same bytes for both);
- ``fastapi`` and ``fastapi, install()``: a FastAPI app whose endpoint is the one of
  FastAPI's first steps (``async def`` returning ``{"message": "hello"}``, serialised
  to JSON by FastAPI), alone and with `install` and its defaults.

The client, in this process, keeps `CONNECTIONS` keep-alive connections busy with raw
sockets (a request written, its response read, the next written), so the server's one
worker is saturated and the client costs little. The apps take turns, round after
round, in one run on one server. Each round gives the ratio of each installed app to
its plain twin measured beside it; the table shows the median of those ratios (and of
the rates). The target: the middleware costs at most 5%.

Run: ``python benchmarks/fastapi_middleware.py --fast``; ``--json PATH`` keeps the
figures. ``--http httptools`` serves with httptools, as ``uvicorn[standard]`` (and
``fastapi[standard]``) does, instead of h11, which a plain ``pip install uvicorn``
gets; each response header costs the server less there.

``--instructions`` measures the server's own work instead, repeatably on a busy
machine: the server runs under ``valgrind --tool=callgrind`` twice for each app, once
for 200 requests and once for 2,200, and the difference divided by 2,000 is the
instructions a request costs the server (uvicorn, h11, Starlette and the middleware).
"""

from __future__ import annotations

import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

CONNECTIONS = 4
KINDS = (
    "plain",
    "plain + header",
    "install()",
    "plain, headers",
    "install() + deadline",
    "fastapi",
    "fastapi, install()",
)
TWIN = {
    "plain + header": "plain",
    "install()": "plain",
    "install() + deadline": "plain, headers",
    "fastapi, install()": "fastapi",
}
"""Each installed app and the plain app it is compared with."""
PATHS = {
    "plain": "/plain/",
    "plain + header": "/header/",
    "install()": "/install/",
    "plain, headers": "/plain/",
    "install() + deadline": "/deadline/",
    "fastapi": "/fastapi/",
    "fastapi, install()": "/fastapi-install/",
}
_BOTH = b"X-Correlation-ID: bench-42\r\nX-Request-Timeout: 5\r\n"
HEADERS = {
    "plain": b"",
    "plain + header": b"",
    "install()": b"",
    "plain, headers": _BOTH,
    "install() + deadline": _BOTH,
    "fastapi": b"",
    "fastapi, install()": b"",
}


def fastapi_app(*, installed: bool) -> Any:
    """FastAPI's first-steps app, with `install` and its defaults when `installed`."""
    from fastapi import FastAPI

    from stalwart.contrib.fastapi import install

    made = FastAPI()

    @made.get("/")
    async def root() -> dict[str, str]:
        return {"message": "hello"}

    if installed:
        install(made, close_on_shutdown=False)
    return made


def make_app() -> Any:
    """The apps behind one dispatcher (which costs each the same)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from stalwart.contrib.fastapi import install

    async def hello(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    class AddHeader:
        """Add ``x-correlation-id`` with a fixed value, as the middleware sends it."""

        field = (b"x-correlation-id", b"0123456789abcdef" * 2)

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            name = self.field[0]

            async def send_with_header(message: Any) -> None:
                if message["type"] == "http.response.start":
                    headers = [h for h in message.get("headers", ()) if h[0].lower() != name]
                    headers.append(self.field)
                    message["headers"] = headers
                await send(message)

            await self.app(scope, receive, send_with_header)

    def app(**options: Any) -> Starlette:
        made = Starlette(routes=[Route("/", hello)])
        if options:
            install(made, close_on_shutdown=False, **options)
        return made

    apps = {
        b"/plain/": app(),
        b"/header/": Starlette(routes=[Route("/", hello)], middleware=[Middleware(AddHeader)]),
        b"/install/": app(correlation_header="X-Correlation-ID"),
        b"/deadline/": app(request_deadline=10, deadline_header="X-Request-Timeout"),
        b"/fastapi/": fastapi_app(installed=False),
        b"/fastapi-install/": fastapi_app(installed=True),
    }

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        prefix = scope["raw_path"][: scope["raw_path"].index(b"/", 1) + 1]
        scope = {**scope, "path": "/", "raw_path": b"/"}
        await apps[prefix](scope, receive, send)

    return dispatch


def serve(http: str) -> None:
    """The server process: bind a free loopback port, print it, serve until killed."""
    import uvicorn

    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only on sockets
    # whose proto says TCP, and without that each response waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn has started
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        make_app(), http=http, lifespan="off", access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


class Connection:
    """One keep-alive connection sending the same request again and again."""

    def __init__(self, port: int, request: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.request = request
        self.buffer = b""

    def send(self) -> None:
        self.sock.sendall(self.request)  # small: fits the socket buffer at once

    def receive(self) -> bool:
        """Read what arrived; true when a whole response is in (and dropped)."""
        self.buffer += self.sock.recv(65536)
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buffer[:end].lower()
        start = head.index(b"content-length:") + 15
        length = int(head[start : head.index(b"\r\n", start)])
        if len(self.buffer) < end + 4 + length:
            return False
        if not self.buffer.startswith(b"HTTP/1.1 200"):
            sys.exit(f"unexpected response: {self.buffer[:200]!r}")
        self.buffer = self.buffer[end + 4 + length :]
        return True


def rate(port: int, kind: str, requests: int, connections: int = CONNECTIONS) -> float:
    """Requests per second over `requests` requests of `kind` on `connections` connections."""
    request = (
        f"GET {PATHS[kind]} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + HEADERS[kind] + b"\r\n"
    )
    opened = [Connection(port, request) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    for connection in opened:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    sent = done = 0
    started = time.perf_counter()
    for connection in opened:
        connection.send()
        sent += 1
    while done < requests:
        for key, _ in selector.select(10):
            connection = key.data
            if connection.receive():
                done += 1
                if sent < requests:
                    connection.send()
                    sent += 1
    elapsed = time.perf_counter() - started
    for connection in opened:
        selector.unregister(connection.sock)
        connection.sock.close()
    selector.close()
    return requests / elapsed


def cpu_seconds(pid: int) -> float | None:
    """The CPU time process `pid` has used (user and system), or ``None`` off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def take_http() -> str:
    """Remove ``--http NAME`` from the command line; return NAME (``h11`` without it)."""
    if "--http" not in sys.argv:
        return "h11"
    at = sys.argv.index("--http")
    name = sys.argv[at + 1]
    del sys.argv[at : at + 2]
    if name not in {"h11", "httptools"}:
        sys.exit(f"--http takes h11 or httptools, got {name!r}")
    return name


def server_instructions(kind: str, requests: int, http: str) -> int:
    """Instructions a server under callgrind ran to start, serve `requests` of `kind`, stop."""
    server = subprocess.Popen(
        [
            *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
            *(sys.executable, __file__, "--serve", "--http", http),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert server.stdout is not None
    try:
        port = int(server.stdout.readline())
        # One connection: with several, how many requests the server finds ready at
        # each wake-up (and so its cost per request) depends on timing.
        rate(port, kind, requests, connections=1)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn stops cleanly; callgrind reports
        _, err = server.communicate(timeout=300)
    for line in err.splitlines():
        if "Collected :" in line:
            return int(line.split()[-1])
    sys.exit(f"no instruction count from callgrind:\n{err[-2000:]}")


def instructions(http: str) -> None:
    """Print the server's instructions per request for each app, and each app's ratio."""
    few, many = 200, 2_200
    per_request = {
        kind: (server_instructions(kind, many, http) - server_instructions(kind, few, http))
        / (many - few)
        for kind in KINDS
    }
    print(f"uvicorn with {http}, one connection")
    print("| app | server instructions per request | vs its plain twin |")
    print("|---|---:|---:|")
    for kind, count in per_request.items():
        twin = TWIN.get(kind)
        share = f"+{count / per_request[twin] - 1:.1%}" if twin else ""
        print(f"| {kind} | {count:,.0f} | {share} |")


def main() -> None:
    http = take_http()
    if "--serve" in sys.argv:
        serve(http)
        return
    if "--instructions" in sys.argv:
        instructions(http)
        return
    from _common import section_args, write_section

    args = section_args(__doc__.splitlines()[0])
    rounds, requests = (7, 1_500) if args.fast else (21, 5_000)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--http", http], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for kind in KINDS:  # warm up: imports, first requests, the server's caches
            rate(port, kind, 500)
        rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
        cpu: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        for i in range(rounds):
            order = KINDS if i % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                before = cpu_seconds(server.pid)
                rates[kind].append(rate(port, kind, requests))
                after = cpu_seconds(server.pid)
                if before is not None and after is not None:
                    cpu[kind] += after - before
    finally:
        server.terminate()
        server.wait(30)
    ratios = {
        kind: [rates[kind][i] / rates[plain][i] for i in range(rounds)]
        for kind, plain in TWIN.items()
    }
    lines = [
        (
            f"One uvicorn {version('uvicorn')} worker ({http} {version(http)}, asyncio) serving"
            f" Starlette {version('starlette')} and FastAPI {version('fastapi')},"
            f" {CONNECTIONS} keep-alive connections from a raw-socket"
            f" client, {requests:,} requests of a trivial endpoint per round and app;"
            f" medians of {rounds} interleaved rounds ({platform.machine()}, Python"
            f" {platform.python_version()})."
        ),
        "",
        (
            "| app | requests per second | min | max | vs its plain twin (same round)"
            " | server CPU per request (µs) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    # CPU time is counted in clock ticks (10 ms): summed over all rounds, not per round.
    cpu_per_request = {kind: cpu[kind] / (rounds * requests) * 1e6 for kind in KINDS}
    for kind, values in rates.items():
        share = f"{statistics.median(ratios[kind]):.1%}" if kind in ratios else ""
        used = f"{cpu_per_request[kind]:.1f}" if cpu[kind] else ""
        lines.append(
            f"| {kind} | {statistics.median(values):,.0f} | {min(values):,.0f}"
            f" | {max(values):,.0f} | {share} | {used} |"
        )
    results = {
        "http": http,
        "requests": requests,
        "rounds": rounds,
        "connections": CONNECTIONS,
        "requests_per_second": rates,
        "server_cpu_us_per_request": cpu_per_request,
        "header_vs_plain": statistics.median(ratios["plain + header"]),
        "install_vs_plain": statistics.median(ratios["install()"]),
        "deadline_vs_plain": statistics.median(ratios["install() + deadline"]),
        "fastapi_install_vs_plain": statistics.median(ratios["fastapi, install()"]),
    }
    write_section(
        args, "fastapi", "ASGI middleware (Starlette, FastAPI)", results, "\n".join(lines)
    )


if __name__ == "__main__":
    main()
