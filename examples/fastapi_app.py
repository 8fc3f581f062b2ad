"""A FastAPI service calling a flaky upstream, with stalwart installed and its admin router.

Runs on loopback for a few seconds, with nothing else needed: an upstream that turns
flaky, then goes down, then slow; the service calls it through
`AsyncResilientTransport` (retries, a circuit breaker, deadline-aware timeouts), and
`stalwart.contrib.fastapi.install(app)` turns an open breaker into 503 + Retry-After
and gives every request a correlation id and, when the caller asks, a deadline.

    python examples/fastapi_app.py
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException

import stalwart
from stalwart.contrib.fastapi import admin_router, install
from stalwart.contrib.httpx import AsyncResilientTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

API_KEY = "demo-operator-key"  # an operator's key, for the admin routes


# -- the upstream: healthy, flaky, down or slow, as the demo says ------------------------


class Upstream(BaseHTTPRequestHandler):
    """A quote service on loopback whose behaviour the demo switches."""

    mode: ClassVar[str] = "healthy"
    requests: ClassVar[int] = 0

    def do_GET(self) -> None:
        cls = type(self)
        cls.requests += 1
        if cls.mode == "down" or (cls.mode == "flaky" and cls.requests % 2):
            self.answer(503, {"error": "overloaded"})
            return
        if cls.mode == "slow":
            time.sleep(2)  # the upstream being slow is what this demonstrates
        self.answer(200, {"symbol": "ACME", "price": 42.0})

    def answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the caller may have given up already
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        """Quiet: the demo prints what matters."""


# -- the service --------------------------------------------------------------------------


def build_app(upstream_url: str) -> FastAPI:
    """The service: one route calling the upstream, stalwart installed, the admin router."""
    # Three failures in a row open it: a flaky upstream alone never does.
    breaker = stalwart.CircuitBreaker(
        "quotes", failure_threshold=3, window=None, recovery_timeout=30
    )
    client: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        transport = AsyncResilientTransport(breaker=breaker, timeout=5.0)
        async with httpx.AsyncClient(transport=transport, base_url=upstream_url) as http:
            client["http"] = http
            yield

    app = FastAPI(lifespan=lifespan)
    app.state.breaker = breaker  # the app holds its breaker (the registry holds it weakly)
    install(app, request_deadline=10.0, deadline_header="X-Request-Timeout")

    def operator(x_api_key: str | None = Header(default=None)) -> str:
        if x_api_key is None:
            raise HTTPException(401, "an API key is needed")
        if x_api_key != API_KEY:
            raise HTTPException(403, "not an operator")
        return "operator"

    app.include_router(
        admin_router(
            read_dependencies=[Depends(operator)],
            admin_dependencies=[Depends(operator)],
            actor=Depends(operator),
        ),
        prefix="/resilience",
    )

    @app.get("/quote")
    async def quote() -> dict[str, Any]:
        try:
            response = await client["http"].get("/quote")
        except httpx.TimeoutException:
            raise HTTPException(504, "the quote service did not answer in time") from None
        if response.status_code != 200:
            raise HTTPException(502, f"the quote service answered {response.status_code}")
        return dict(response.json())

    return app


# -- running it ---------------------------------------------------------------------------


def free_socket() -> socket.socket:
    """A listening socket on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on loopback in a thread; its URL while the block runs."""
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.01)  # waiting for uvicorn's startup, bounded above
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def show(label: str, response: httpx.Response) -> dict[str, Any]:
    """Print a response in one line: status, the fields that tell the story, headers."""
    body = response.json() if "json" in response.headers.get("content-type", "") else {}
    keep = ("price", "detail", "title", "status", "open", "state")
    fields = {k: body[k] for k in keep if isinstance(body, dict) and k in body}
    extra = ""
    if "retry-after" in response.headers:
        extra = f"  Retry-After: {response.headers['retry-after']}"
    print(f"  {label:<46} HTTP {response.status_code}  {json.dumps(fields)}{extra}")
    return body if isinstance(body, dict) else {}


def expect(response: httpx.Response, status: int) -> None:
    """Stop the demo if a response is not what the story needs."""
    if response.status_code != status:
        raise SystemExit(f"expected HTTP {status}, got {response.status_code}: {response.text}")


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    logging.basicConfig(level=logging.WARNING, format="     log: %(message)s", stream=sys.stdout)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    key = {"X-API-Key": API_KEY}
    try:
        with serving(build_app(url)) as service, httpx.Client(base_url=service) as caller:
            print("1. The upstream is healthy:")
            expect(caller.get("/quote"), 200)
            show("GET /quote", caller.get("/quote"))

            print("\n2. It turns flaky (every other call 503): retries hide it")
            Upstream.mode, before = "flaky", Upstream.requests
            for _ in range(3):
                response = caller.get("/quote")
                expect(response, 200)
            show("GET /quote (x3)", response)
            print(f"     the upstream saw {Upstream.requests - before} requests for 3 calls")

            print("\n3. It goes down: the breaker opens, callers get 503 at once")
            Upstream.mode = "down"
            show("GET /quote (3 attempts, all 503)", caller.get("/quote"))
            response = caller.get("/quote", headers={"X-Correlation-ID": "demo-42"})
            expect(response, 503)
            show("GET /quote", response)
            print(f"     X-Correlation-ID: {response.headers['x-correlation-id']}")
            health = caller.get("/resilience/health", headers=key)
            show("GET /resilience/health", health)

            print("\n4. Operators reset it (an API key is needed):")
            show("POST .../quotes/reset, no key", caller.post("/resilience/breakers/quotes/reset"))
            Upstream.mode = "slow"
            reset = caller.post("/resilience/breakers/quotes/reset", headers=key)
            expect(reset, 200)
            show("POST .../quotes/reset, operator", reset)

            print("\n5. Now slow (2 s): the caller's own budget cuts the call")
            started = time.monotonic()
            cut = caller.get("/quote", headers={"X-Request-Timeout": "0.5"})
            show(f"GET /quote, X-Request-Timeout: 0.5 ({time.monotonic() - started:.1f} s)", cut)
            expect(cut, 504)
            show(
                "GET /quote, X-Request-Timeout: soon",
                caller.get("/quote", headers={"X-Request-Timeout": "soon"}),
            )
    finally:
        upstream.shutdown()
        upstream.server_close()
    print("\nThe service shut down: stalwart's clients closed with it.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
