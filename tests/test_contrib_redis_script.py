"""`stalwart.contrib.redis`'s Lua script: shipped as package data, what is sent, and
how its replies and its ``closed_generation`` field read.

Against the real Redis (a private ``redis-server`` where no other client may load the
script in between).
"""

from __future__ import annotations

import hashlib
import time
from importlib.resources import files
from typing import Any

import pytest
import redis

import stalwart
from redis_support import URL, PrivateRedis, new_prefix
from stalwart.breaker.machine import BreakerConfig
from stalwart.contrib.redis import RedisStorage

pytestmark = pytest.mark.redis


def shipped_script() -> str:
    """The script as the installed package holds it, read as package data."""
    resource = files("stalwart.contrib.redis").joinpath("script.lua")
    assert resource.is_file()
    return resource.read_text(encoding="utf-8")


class Recording(redis.Redis):
    """A client that keeps every command it sends, arguments included."""

    sent: list[tuple[Any, ...]]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(args)
        return super().execute_command(*args, **options)


def test_script_is_package_data() -> None:
    """script.lua is a file of the package, and a Lua script of stalwart's."""
    text = shipped_script()
    assert text.startswith("-- stalwart's circuit breaker, in Redis")
    assert "local state_key = KEYS[1]" in text
    assert "closed_generation" in text


def test_storage_sends_the_shipped_script(private_redis: PrivateRedis) -> None:
    """SCRIPT LOAD sends script.lua as shipped, and EVALSHA calls it by its SHA."""
    text = shipped_script()
    sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - how Redis names scripts
    client = Recording.from_url(private_redis.url)
    client.sent = []
    try:
        b = stalwart.CircuitBreaker(
            "db", storage=RedisStorage(client, prefix=new_prefix()), log=False
        )
        assert b.call(lambda: 1) == 1
        loads = [args for args in client.sent if args[0] == "SCRIPT LOAD"]
        assert loads == [("SCRIPT LOAD", text)]
        calls = [args for args in client.sent if args[0] == "EVALSHA"]
        assert calls
        assert {args[1] for args in calls} == {sha.encode()}
        assert client.script_exists(sha) == [True]
    finally:
        client.close()


def test_failure_type_with_a_bar_survives_the_reply(client: redis.Redis, prefix: str) -> None:
    """The script's replies are "|"-separated; a failure's type holding "|" reads back
    whole, and an empty type stays empty (not None)."""
    state = RedisStorage(client, prefix=prefix).bind(
        "db", BreakerConfig(failure_threshold=5), time.monotonic
    )
    state.record(state.admit()[0], True, None, "odd|type|")
    assert state.counts().last_failure_type == "odd|type|"
    state.record(state.admit()[0], True, None, "")
    assert state.counts().last_failure_type == ""


def test_closed_hash_without_closed_generation_gets_it_from_the_script(
    client: redis.Redis, prefix: str
) -> None:
    """A closed state hash lacking closed_generation (deleted by hand, or written before
    the field existed): the admission asks the script, which writes the field; the next
    admission is a plain HGET."""
    recording = Recording.from_url(URL)
    recording.sent = []
    try:
        b = stalwart.CircuitBreaker(
            "db", storage=RedisStorage(recording, prefix=prefix), failure_threshold=3, log=False
        )
        assert b.call(lambda: 1) == 1
        key = f"{prefix}:{{db}}:state"
        assert client.hget(key, "closed_generation") == b"0"
        client.hdel(key, "closed_generation")
        recording.sent.clear()
        assert b.call(lambda: 2) == 2
        assert [args[0] for args in recording.sent] == ["HGET", "EVALSHA", "HINCRBY"]
        assert client.hget(key, "closed_generation") == b"0"
        recording.sent.clear()
        assert b.call(lambda: 3) == 3
        assert [args[0] for args in recording.sent] == ["HGET", "HINCRBY"]
        assert b.stats().successes == 3
    finally:
        recording.close()
