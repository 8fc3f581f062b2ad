"""What the Redis tests share: the shared server's URL, throwaway key prefixes, and a
private `redis-server` that a test may pause, stop, kill and start again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from collections.abc import Iterator

URL = "redis://127.0.0.1:6379/0"


def new_prefix() -> str:
    """A key prefix no other test uses."""
    return f"stalwart-test-{uuid.uuid4().hex[:12]}"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under `prefix`."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def free_port() -> int:
    """A loopback port nothing listens on (as of now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, on a free loopback port, to kill and restart.

    Or to pause: stopped (SIGSTOP), it still accepts connections (the kernel completes
    them) but answers nothing, as a Redis that hangs.
    """

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait (bounded) until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.executable,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.1, socket_timeout=0.1)
        try:
            for _ in range(250):  # up to about 5 s
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if probe.ping():
                        return
                time.sleep(0.02)
        finally:
            probe.close()
        self.stop()
        raise RuntimeError(f"the private redis-server did not answer on port {self.port}")

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections and requests wait, unanswered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused process go on (SIGCONT); harmless if it was not paused."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill it at once (SIGKILL): no goodbye to its clients."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop it politely (SIGTERM, after a SIGCONT in case it is paused), if it runs."""
        self.resume()  # a stopped process would not act on SIGTERM
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
            process.kill()
            process.wait()


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A sync client on the shared Redis."""
    c = redis.Redis.from_url(URL)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A fresh prefix whose keys are deleted after the test."""
    p = new_prefix()
    yield p
    delete_prefix(client, p)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A private redis-server, always resumed and stopped after the test."""
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(executable, os.X_OK):  # pragma: no cover - CI has it
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(executable)
    server.start()
    try:
        yield server
    finally:
        server.stop()
