"""What `RedisState` and `AsyncRedisState` share, without I/O.

The commands they send, what the replies mean, the local cache, and the local state
that stands in while Redis is unavailable. The two colours differ only in how they
send a command (``client.execute_command(...)`` or ``await`` it); everything they
decide is decided here.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...breaker.machine import REJECTED, State
from ...breaker.storage import MemoryState
from . import _script
from ._script import CLOSED_GENERATION, MAX_DIGITS, SHA, Reply, config_arg, float_arg

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...breaker.machine import BreakerConfig, Transition
    from ...breaker.storage import Counts
    from ._options import Options

PLAIN_SUCCESS_REFRESH = 60.0
"""Seconds a process records a closed breaker's successes with a plain ``HINCRBY``
after the last one it sent through the script, which also refreshes the state hash's
TTL (a plain one does not)."""

LOCAL_GENERATIONS = 1 << 48
"""Where the generations of the local fallback state start, so that a token it issued
never matches a shared generation, nor the reverse."""

logger = logging.getLogger("stalwart.redis")

UNREADABLE: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
)
"""What reading a reply raises when it is not one of the script's."""
FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, *UNREADABLE)
"""What makes a breaker carry on locally: Redis unavailable (refused connections,
timeouts, including asyncio's, which are OSErrors), an error reply (a key of the wrong
type, a read-only replica, a value the script refuses), or a reply that cannot be
read. None of them reaches the protected call."""

_OPERATIONS = frozenset({"reset", "force_open", "disable"})

Command = tuple[str | bytes, ...]
Answer = int | Reply | MemoryState
"""What a request comes to: a closed breaker's bare generation (from a fast path), the
script's full reply, or the local state to use instead (Redis failed)."""


def _trouble(exc: BaseException, name: str) -> str:
    """What went wrong for breaker `name`, for the warning's first words."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return f"Redis is unavailable for breaker {name!r}"
    if isinstance(exc, ResponseError):  # WRONGTYPE, READONLY, the script refusing a value
        return f"Redis answered breaker {name!r} with an error"
    if isinstance(exc, RedisError):
        return f"Redis failed for breaker {name!r}"
    return f"Redis sent breaker {name!r} a reply that cannot be read"


def _local_state(config: BreakerConfig, clock: Callable[[], float]) -> MemoryState:
    """A fresh local state whose generations never meet the shared ones."""
    local = MemoryState(config, clock)
    machine = local.machine
    machine.generation = machine.fast_generation = LOCAL_GENERATIONS
    if machine.simple_generation >= 0:
        machine.simple_generation = LOCAL_GENERATIONS
    local.fast_generation = LOCAL_GENERATIONS
    return local


def degraded(counts: Counts) -> Counts:
    """`counts`, marked as the local state's."""
    return counts._replace(degraded=True)


def _full(reply: int | Reply) -> Reply:
    """`reply`, which only a fast path answers with a bare generation."""
    assert not isinstance(reply, int)  # noqa: S101 - _read lets ints through only if fast
    return reply


class SharedState:
    """One breaker's state in Redis, without the I/O: see `RedisState`.

    A subclass sends the commands built here (``_command``, ``_admit``, ...) and hands
    each answer (`Answer`) to the methods that say what it means (``_admission``,
    ``_recorded``, ...).
    """

    __slots__ = (
        "_admit_command",
        "_cached",
        "_clock",
        "_closed",
        "_config_arg",
        "_head",
        "_hook",
        "_keys",
        "_last",
        "_local",
        "_lock",
        "_max_staleness",
        "_next_try",
        "_outages",
        "_peek_command",
        "_plain_until",
        "_retry_interval",
        "_simple_success",
        "config",
        "fast_generation",
        "name",
        "prefix",
    )

    def __init__(
        self,
        options: Options,
        encode: Callable[[str], bytes],
        name: str,
        config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.prefix = options.prefix
        self.config = config
        self.fast_generation = REJECTED
        """Always `REJECTED`: every admission asks `admit` (which may answer from the
        local cache)."""
        base = f"{options.prefix}:{{{name}}}:"
        self._keys = (f"{base}state", f"{base}buckets", f"{base}calls")
        # Every command starts alike; its constant parts are encoded once, here, so
        # that redis-py has little left to do per call.
        self._head: Command = ("EVALSHA", SHA.encode(), b"3", *map(encode, self._keys))
        self._config_arg = encode(config_arg(config))
        self._admit_command = (*self._head, b"admit||" + self._config_arg)
        self._peek_command: Command = ("HGET", self._head[3], CLOSED_GENERATION)
        self._closed = False
        """Whether the last answer said closed: the next admission then reads the
        generation with `_peek_command` first (see `_peeked`)."""
        self._simple_success = not (config.uses_rates or config.slow_call_duration is not None)
        """Whether a success only needs counting (as `_plain_success`, or by the
        script's "success"), or must be recorded with the time, as the memory storage
        does ("record")."""
        self._plain_until = 0.0
        """Until when (monotonic) `_plain_success` may skip the script; see
        `PLAIN_SUCCESS_REFRESH`."""
        self._hook = options.clock
        self._clock = clock
        self._max_staleness = options.max_staleness
        self._retry_interval = options.retry_interval
        self._lock = threading.Lock()
        self._local: MemoryState | None = None
        self._next_try = 0.0
        self._outages = 0
        """Outages seen so far: a reply resynchronises only if its request was sent
        during the current outage, not before it began (a reply still in flight)."""
        self._cached: tuple[int, float] = (REJECTED, 0.0)
        """``(generation, monotonic time)`` of the last answer while calls flowed."""
        self._last: tuple[State, int] = (State.CLOSED, 0)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} prefix={self.prefix!r}>"

    @property
    def keys(self) -> tuple[str, str, str]:
        """The breaker's keys: its state hash, time-window buckets and count window."""
        return self._keys

    @property
    def degraded(self) -> bool:
        """Whether Redis is unavailable and a local state stands in for it."""
        return self._local is not None

    # -- commands ------------------------------------------------------------------

    def _command(self, op: bytes, arg: str = "", *extra: str) -> Command:
        packed = b"%b|%b|%b" % (op, arg.encode(), self._config_arg)
        if self._hook is not None:
            packed += repr(float(self._hook())).encode()
        return (*self._head, packed, *extra)

    def _admit(self) -> Command:
        return self._admit_command if self._hook is None else self._command(b"admit")

    def _plain_success(self, generation: int) -> Command | None:
        """The command that counts a success without the script, or None: use it.

        ``HINCRBY <state> ok:<generation> 1``, when only counting is needed and the
        last answer from Redis said `generation` is closed (a generation never changes
        state: a transition starts a new one). The script gathers these fields before
        anything else it does, so the counts, and the run of failures that a success
        in the current generation ends, are exactly the memory storage's; a success of
        a generation since left is counted only, as there. Not while Redis is
        unavailable, nor once `PLAIN_SUCCESS_REFRESH` has passed since the last success
        sent through the script, which refreshes the TTL.
        """
        if (
            self._simple_success
            and self._last[1] == generation
            and self._last[0] is State.CLOSED
            and self._local is None
            and time.monotonic() < self._plain_until
        ):
            return ("HINCRBY", self._head[3], b"ok:%d" % generation, b"1")
        return None

    def _success(self, generation: int) -> Command:
        if self._simple_success:
            self._plain_until = time.monotonic() + PLAIN_SUCCESS_REFRESH
            return self._command(b"success", str(generation))
        return self._command(b"record", str(generation), "0")

    def _record(
        self, generation: int, failed: bool, duration: float | None, failure_type: str | None
    ) -> Command:
        return self._command(
            b"record",
            str(generation),
            "1" if failed else "0",
            float_arg(duration),
            "" if failure_type is None else f"={failure_type}",
        )

    def _release(self, generation: int) -> Command:
        return self._command(b"release", str(generation))

    def _change(self, operation: str) -> Command:
        if operation not in _OPERATIONS:
            raise ValueError(f"operation must be reset, force_open or disable, got {operation!r}")
        return self._command(b"change", operation)

    def _counts(self) -> Command:
        return self._command(b"counts")

    def _check(self) -> Command:
        """While a breaker carries on locally: read, check and write back its state."""
        return self._command(b"check")

    # -- replies -------------------------------------------------------------------

    def _read(self, raw: Any, *, fast: bool = False, counts: bool = False) -> int | Reply:
        """The reply in Python's terms; raises one of `UNREADABLE` if it has none.

        A bare generation means closed: a fast path answered (as admit, release and
        success may, if `fast`). Anything else must be a full reply.
        """
        if fast and type(raw) is int:
            return raw
        return _script.parse(raw, self.config, counts=counts)

    def _peeked(self, value: Any, outages: int) -> int | None:
        """The generation, if `value` (the reply to `_peek_command`) is one; else None.

        A closed breaker admits every call in its generation and writes nothing (as
        the script's fast path does), so one HGET of ``closed_generation``, cheaper
        than the script, decides. Its absence (the breaker is not closed, or its key
        is gone) or anything the script would not have written: None, the script
        decides.
        """
        if value is not None and value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS:
            generation = int(value)
            self._answered(generation, outages)
            return generation
        return None

    def _cached_generation(self) -> int:
        """The generation to admit a call in without asking Redis, or `REJECTED`."""
        if self._max_staleness is None:
            return REJECTED
        generation, at = self._cached
        if generation >= 0 and time.monotonic() - at < self._max_staleness:
            return generation
        return REJECTED

    def _standing_in(self) -> MemoryState | None:
        """The local state to use instead of Redis now, or None to ask Redis."""
        local = self._local
        if local is None:
            return None
        with self._lock:
            now = time.monotonic()
            if now < self._next_try:
                return local
            self._next_try = now + self._retry_interval  # this caller tries Redis
            return None

    def _failed(self, exc: BaseException) -> MemoryState:
        """Redis failed, or its reply made no sense: carry on locally.

        And say so, once per outage.
        """
        with self._lock:
            self._next_try = time.monotonic() + self._retry_interval
            self._cached = (REJECTED, 0.0)
            self._closed = False
            local = self._local
            if local is None:
                local = self._local = _local_state(self.config, self._clock)
                self._outages += 1
                logger.warning(
                    "%s (%s: %s); carrying on with local state until Redis answers again",
                    _trouble(exc, self.name),
                    type(exc).__name__,
                    exc,
                    extra={"breaker": self.name, "prefix": self.prefix},
                )
            return local

    def _answered(self, reply: int | Reply, outages: int) -> None:
        """Refresh the cache from a readable reply; leave local mode if in it.

        `outages` is what `_outages` was when the request was sent: a reply to a
        request sent before the current outage began says nothing about recovery.
        """
        if isinstance(reply, int):
            state, generation = State.CLOSED, reply
        else:
            state, generation = reply.state, reply.generation
        if self._local is not None:
            with self._lock:
                if self._local is not None:
                    if outages != self._outages:
                        return  # sent before the outage: no news of recovery
                    self._local = None
                    logger.info(
                        "Redis answers again for breaker %r; using the shared state",
                        self.name,
                        extra={"breaker": self.name, "prefix": self.prefix},
                    )
        if self._max_staleness is not None:
            flowing = state is State.CLOSED or state is State.DISABLED
            self._cached = (generation if flowing else REJECTED, time.monotonic())
        self._closed = state is State.CLOSED
        self._last = (state, generation)

    # -- what each answer means (`Answer`: bare generation, full reply, local state) --

    @staticmethod
    def _admission(answer: Answer) -> tuple[int, float | None, Transition | None]:
        if isinstance(answer, int):
            return answer, None, None
        if isinstance(answer, MemoryState):
            return answer.admit()
        return answer.token, answer.retry_after, answer.transition

    @staticmethod
    def _recorded(
        answer: Answer,
        generation: int,
        failed: bool,
        duration: float | None,
        failure_type: str | None,
    ) -> Transition | None:
        if isinstance(answer, MemoryState):
            return answer.record(generation, failed, duration, failure_type)
        return _full(answer).transition

    @staticmethod
    def _succeeded(answer: Answer, generation: int) -> Transition | None:
        if isinstance(answer, int):
            return None
        if isinstance(answer, MemoryState):
            return answer.record_success(generation)
        return answer.transition

    @staticmethod
    def _released(answer: Answer, generation: int) -> None:
        if isinstance(answer, MemoryState):
            answer.release(generation)

    @staticmethod
    def _changed(answer: Answer, operation: str) -> Transition:
        if isinstance(answer, MemoryState):
            return answer.change(operation)
        transition = _full(answer).transition
        assert transition is not None  # noqa: S101 - every change is a transition
        return transition

    @staticmethod
    def _counted(answer: Answer) -> Counts:
        if isinstance(answer, MemoryState):
            return degraded(answer.counts())
        counts = _full(answer).counts
        assert counts is not None  # noqa: S101 - read with counts=True
        return counts
