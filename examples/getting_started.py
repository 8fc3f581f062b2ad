"""Getting started: the code of the tutorial (docs/tutorial.md), from start to end.

Run it with ``python examples/getting_started.py`` (it needs ``stalwart[httpx]``). A
small shop on 127.0.0.1 serves ``/orders/<id>``, and fails the way real services do:
a couple of 503s now and then, and later an outage. The script calls it the way the
tutorial's steps do:

1. a function retried with ``@stalwart.retry``;
2. a whole httpx client made resilient in one line, with a circuit breaker per host;
3. an outage: the breaker opens, calls fail at once and the shop gets no traffic,
   ``stalwart.registry.health()`` says so; the shop recovers, and one probe closes
   the breaker again.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx

import stalwart
from stalwart.contrib.httpx import ResilientTransport

# -- The shop: a stand-in for a real dependency, on loopback -------------------------


class Shop(BaseHTTPRequestHandler):
    """Answers ``GET /orders/<id>`` with JSON, after the statuses queued in `failures`."""

    protocol_version = "HTTP/1.1"
    failures: ClassVar[list[int]] = []  # statuses to answer first, one per request
    down: ClassVar[bool] = False  # an outage: 503 to everything
    requests: ClassVar[int] = 0  # requests received

    def do_GET(self) -> None:
        Shop.requests += 1
        status = 503 if Shop.down else (Shop.failures.pop(0) if Shop.failures else 200)
        order_id = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"id": order_id, "status": "shipped"} if status == 200 else {})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep the output to what the example prints."""


# -- Step 1: retry a function ---------------------------------------------------------


@stalwart.retry(attempts=3, backoff=stalwart.exponential(initial=0.05, max=1))
def fetch_order(base_url: str, order_id: int) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/orders/{order_id}", timeout=2)
    response.raise_for_status()  # a 503 raises httpx.HTTPStatusError: transient
    return response.json()


# -- Step 2: a resilient client -------------------------------------------------------


def resilient_client(base_url: str, upstream: httpx.BaseTransport | None = None) -> httpx.Client:
    transport = ResilientTransport(
        upstream,  # None: httpx's own transport; tests pass a mock
        retry=stalwart.retry(attempts=3, backoff=stalwart.exponential(initial=0.05, max=1)),
        timeout=2,  # seconds, for each attempt
        breaker_options={
            "failure_threshold": 3,  # 3 failures within 30 s open it (no failure rate)
            "window": 30,
            "failure_rate": None,
            "recovery_timeout": 0.5,  # then a probe after 0.5 s
        },
    )
    return httpx.Client(base_url=base_url, transport=transport)


def get_order(client: httpx.Client, order_id: int) -> dict[str, Any]:
    response = client.get(f"/orders/{order_id}")
    response.raise_for_status()
    return response.json()


# -- Step 3: an outage, seen by the breaker and the health check ----------------------


def outage(client: httpx.Client) -> None:
    Shop.down = True
    before = Shop.requests
    try:
        get_order(client, 3)
    except httpx.HTTPStatusError as exc:
        # Its first 503 is the breaker's third failure within 30 s (order 2 had two):
        # the breaker opens, and an open breaker ends the retries at once.
        got = Shop.requests - before
        print(f"order 3: {exc.response.status_code}; the shop got {got} request")

    before = Shop.requests
    try:
        get_order(client, 4)
    except stalwart.CircuitOpenError as exc:  # at once, without a request
        print(f"order 4: {type(exc).__name__}: {exc}")
    print(f"requests the shop got for order 4: {Shop.requests - before}")
    print("health:", stalwart.registry.health().as_dict())

    Shop.down = False  # the shop recovers ...
    time.sleep(0.6)  # ... and the breaker's recovery_timeout (0.5 s) passes
    print("order 5:", get_order(client, 5))  # a probe call: it succeeds, the breaker closes
    print("health:", stalwart.registry.health().status)


def main() -> None:
    # stalwart logs retries (INFO), give-ups and breaker changes (WARNING); show them
    # among the prints.
    logging.basicConfig(format="    log: %(message)s", stream=sys.stdout)
    logging.getLogger("stalwart").setLevel(logging.INFO)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_port}"
    try:
        print("Step 1: a retried function")
        Shop.failures[:] = [503, 503]
        print("order 1:", fetch_order(base_url, 1))

        print("\nStep 2: a resilient client")
        with resilient_client(base_url) as client:
            Shop.failures[:] = [503, 503]
            print("order 2:", get_order(client, 2))

            print("\nStep 3: an outage")
            outage(client)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    main()
