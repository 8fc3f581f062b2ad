"""Three resilient HTTP clients against one flaky server on loopback.

Run it with ``python examples/http_clients.py``. A small server on 127.0.0.1 answers
``/orders`` with 503 twice (the second time with ``Retry-After: 0``) and then 200, and
counts what it receives. The same request goes through an httpx client, an async
httpx client and a requests session, each made resilient in one line; a POST shows
what is not retried, and a POST with an ``Idempotency-Key`` what is.
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx

import stalwart
from stalwart.contrib.httpx import AsyncResilientTransport, ResilientTransport
from stalwart.contrib.requests import resilient_session

RETRY = stalwart.retry(attempts=3, backoff=stalwart.constant(0.05), log=False)
# Every client guards the host with the same registry breaker, "http:127.0.0.1:<port>";
# the 503s below are failures for it, so give it room for all of them.
OPTIONS = {"retry": RETRY, "breaker_options": {"failure_threshold": 20}}


class Flaky(BaseHTTPRequestHandler):
    """Answers 503, 503 (Retry-After: 0), then 200, and starts again; counts requests."""

    protocol_version = "HTTP/1.1"
    script: ClassVar[list[int]] = []
    received: ClassVar[list[str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        cid = self.headers.get("X-Correlation-ID", "-")
        Flaky.received.append(f"{self.command} {self.path} (correlation id {cid})")
        status = Flaky.script.pop(0) if Flaky.script else 200
        body = b"shipped" if status == 200 else b"busy"
        self.send_response(status)
        if len(Flaky.script) == 1:  # the second 503 asks for a pause
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep the output to what the example prints."""


def flaky_again() -> None:
    Flaky.script = [503, 503, 200]
    Flaky.received.clear()


def report(title: str, status: int) -> None:
    print(f"{title}: status {status} after {len(Flaky.received)} requests")
    for line in Flaky.received:
        print(f"    server got {line}")


async def with_async_httpx(url: str) -> int:
    transport = AsyncResilientTransport(**OPTIONS)
    async with httpx.AsyncClient(transport=transport) as client:
        return (await client.get(url)).status_code


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/orders"
    try:
        flaky_again()
        with httpx.Client(transport=ResilientTransport(**OPTIONS)) as client:
            with stalwart.correlation_id("order-42"):
                report("httpx GET", client.get(url).status_code)

            flaky_again()
            response = client.post(url, content=b"{}")
            report("httpx POST, no idempotency key (not retried)", response.status_code)

            flaky_again()
            keyed = client.post(url, content=b"{}", headers={"Idempotency-Key": "ship-42"})
            report("httpx POST with an Idempotency-Key", keyed.status_code)

        flaky_again()
        report("async httpx GET", asyncio.run(with_async_httpx(url)))

        flaky_again()
        with resilient_session(**OPTIONS) as session:
            report("requests GET", session.get(url).status_code)

        breaker = stalwart.registry.get(f"http:127.0.0.1:{server.server_port}")
        stats = breaker.stats()
        print(
            f"\nAll three clients shared the breaker {breaker.name!r}; it is {stats.state},"
            f" with {stats.failures} failures (the 503s) and {stats.successes} successes."
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    main()
