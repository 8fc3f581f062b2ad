"""What the HTTP client wrappers share: every decision, none of the I/O.

`HttpRules` is built once per transport or adapter. For each request it answers
which retry policy applies (idempotent requests retry transient errors and the
retried statuses; others retry only failures that happened before the request was
sent; one-shot bodies are never replayed), which breaker guards the host, what a
response counts as for that breaker, and how long the next attempt may take. The
client modules (`stalwart.contrib.httpx`, `stalwart.contrib.requests`) only send
requests and read or close responses, blocking or awaited.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, MutableMapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from .. import _clock, _validate
from .._correlation import current_correlation_id
from .._deadline import Deadline, remaining
from .._run import is_async_callable, wrap
from ..breaker import BreakerRegistry, CircuitBreaker, State
from ..breaker import registry as default_registry
from ..classify import retry_after_of
from ..errors import CircuitOpenError, TimeoutExceeded
from ..events import report_timeout
from ..hedge import Hedger
from ..retry import RetryPolicy

if TYPE_CHECKING:
    from datetime import timedelta

    from .._run import Call
    from ..budget import RetryBudget

__all__ = [
    "DEFAULT_BREAKER_OPTIONS",
    "DEFAULT_CORRELATION_HEADER",
    "DEFAULT_IDEMPOTENCY_HEADER",
    "DEFAULT_IDEMPOTENT_METHODS",
    "DEFAULT_MAX_HOSTS",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRY",
    "DEFAULT_RETRY_STATUSES",
    "MAX_WAIT",
    "HttpOptions",
    "HttpRules",
    "Route",
    "begin_named",
    "shorter",
]

_F = TypeVar("_F", bound=Callable[..., Any])

logger = logging.getLogger("stalwart.http")

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
"""Statuses retried by default: too many requests, and the server errors that pass."""
DEFAULT_IDEMPOTENT_METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
)
"""Methods that RFC 9110 calls idempotent: sending them twice does no harm."""
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
"""A request carrying this header may be retried whatever its method."""
DEFAULT_CORRELATION_HEADER = "X-Correlation-ID"
"""The header that carries `stalwart.correlation_id` to the server."""
DEFAULT_MAX_RETRY_AFTER = 60.0
"""The longest wait, in seconds, that a ``Retry-After`` header may impose."""
DEFAULT_RETRY = RetryPolicy()
"""3 attempts with exponential backoff and full jitter (`stalwart.retry()`)."""
MAX_WAIT = _clock.MAX_WAIT
"""The longest wait or socket timeout, in seconds, that stalwart makes (about 31.7
years; 49.7 days on Windows), as for retries and timeouts. A ``Retry-After`` asking
for longer is not waited: the response (or error) that asked is handed back. Longer
timeouts are cut to it."""
DEFAULT_MAX_HOSTS = 1000
"""Per-host breakers one wrapper keeps at most (see `HttpRules`)."""
DEFAULT_BREAKER_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "failure_threshold": 10,
        "window": None,
        "failure_rate": 0.5,
        "minimum_calls": 20,
        "window_calls": 100,
        "recovery_timeout": 30.0,
    }
)
"""How a per-host breaker trips, unless `breaker_options` say otherwise: 10 failed
attempts in a row, or half of the last 100 attempts failing once 20 were made; it
probes again after 30 s. The HTTP clients page of the docs explains the choice.
With ``failure_rate=None`` in `breaker_options`, the two options that size the rate
go too."""


class HttpOptions(TypedDict, total=False):
    """The options every stalwart HTTP wrapper takes, as `HttpRules` documents them.

    .. versionadded:: 0.1.0
    """

    retry: RetryPolicy | None
    breaker: CircuitBreaker | None
    per_host: bool
    registry: BreakerRegistry | None
    breaker_options: Mapping[str, Any] | None
    timeout: float | timedelta | None
    retry_statuses: Collection[int]
    idempotent_methods: Collection[str]
    idempotency_header: str | None
    max_retry_after: float | timedelta | None
    correlation_header: str | None
    max_hosts: int
    budget: RetryBudget | None


def _statuses(name: str, codes: object) -> frozenset[int]:
    if isinstance(codes, str | bytes) or not isinstance(codes, Collection):
        raise TypeError(f"{name} must be a collection of HTTP status codes, got {codes!r}")
    bad = [
        c for c in codes if isinstance(c, bool) or not isinstance(c, int) or not 100 <= c <= 599
    ]
    if bad:
        raise ValueError(f"{name} must hold HTTP status codes (100-599), got {bad[0]!r}")
    return frozenset(codes)


def _methods(methods: object) -> frozenset[str]:
    if isinstance(methods, str | bytes) or not isinstance(methods, Collection):
        raise TypeError(f"idempotent_methods must be a collection of methods, got {methods!r}")
    bad = [m for m in methods if not isinstance(m, str) or not m.isalpha()]
    if bad:
        raise ValueError(f"idempotent_methods must hold HTTP method names, got {bad[0]!r}")
    return frozenset(m.upper() for m in methods)


def _host_options(given: dict[str, Any]) -> dict[str, Any]:
    """Per-host breaker options: `given` over the defaults, validated."""
    options = {**DEFAULT_BREAKER_OPTIONS, **given}
    if options["failure_rate"] is None and options.get("slow_call_rate") is None:
        for name in ("minimum_calls", "window_calls"):  # they size the default rate
            if name not in given:
                del options[name]
    BreakerRegistry(**options)  # a misspelt or conflicting option fails now, not later
    return options


def _header_name(name: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
        raise ValueError(f"{name} must be a header name, got {value!r}")
    if any(c in value for c in " :\t"):
        raise ValueError(f"{name} must be a header name, got {value!r}")
    return value


class Route:
    """How one request is sent: its retry policy, its breaker and its time limits.

    Made by `HttpRules.route` for each request, and handed to every attempt.
    """

    __slots__ = ("breaker", "check", "extra", "hedge", "last", "rules", "send")

    def __init__(
        self,
        rules: HttpRules,
        breaker: CircuitBreaker | None,
        *,
        send: Callable[..., Any],
        check: Callable[[Any], bool] | None,
        extra: Any,
        hedge: Hedger | None = None,
    ) -> None:
        self.rules = rules
        self.breaker = breaker
        self.send = send  # ``send(request, route)``: once, or with retries
        self.check = check  # which responses are retried (None: none are)
        self.extra = extra  # what the client needs again at each attempt
        self.hedge = hedge  # hedges each attempt (None: one request per attempt)
        self.last: Any = None  # the last response retried past, if any

    def failure(self, status: int) -> bool:
        """Whether a response with `status` counts as a failure for the breaker."""
        return status >= 500

    def good(self, response: object) -> bool:
        """Whether a hedged attempt's `response` may win.

        It may unless its status is one of `retry_statuses` (or the policy's
        `retry_if_result` retries it), even when retries are off.
        """
        check = self.rules.safe.retry_if_result
        return check is None or not check(response)

    def retried(self, response: object) -> bool:
        """Whether `response` will be retried (when attempts and time remain).

        A retried response is kept as `last`: if the breaker opens before the next
        attempt, the caller gets this response rather than `CircuitOpenError`.
        """
        check = self.check
        if check is not None and check(response):
            self.last = response
            return True
        return False


class HttpRules:
    """The validated options of an HTTP wrapper and the decisions made from them.

    Args:
        retry: The retry policy (``stalwart.retry()`` by default: 3 attempts,
            exponential backoff with full jitter). ``None`` or a policy of one attempt
            turns retries off. Its `on` (or classifier) and `retry_if_result` still
            apply: an exception is retried when the policy retries it and HTTP allows
            it; a response when its status is in `retry_statuses` or the policy's
            `retry_if_result` asks for it.
        breaker: One breaker for every request. ``None``: see `per_host`.
        per_host: Without `breaker`, guard each host with the breaker named
            ``http:<host>`` (``http:<host>:<port>`` for a port given in the URL) from
            `registry`. ``False``: no breaker.
        registry: Where per-host breakers live (`stalwart.registry` by default).
        breaker_options: Configuration for per-host breakers, as
            `BreakerRegistry.get` takes it, over `DEFAULT_BREAKER_OPTIONS` (the
            registry's defaults fill in the rest).
        timeout: The most one attempt may wait on the network, in seconds; a
            `stalwart.deadline` in force shortens it to what is left. At most
            `MAX_WAIT`.
        retry_statuses: Response statuses retried for idempotent requests.
        idempotent_methods: Methods retried whatever the failure.
        idempotency_header: A header that makes any request retryable, such as a
            POST carrying an idempotency key.
        max_retry_after: The longest wait a ``Retry-After`` header may impose; a
            longer one is cut to it. ``None``: no limit but `MAX_WAIT`, past which
            the request is not retried and its response or error is handed back.
        correlation_header: The header that carries `stalwart.correlation_id`
            (``None``: not sent).
        budget: A `stalwart.RetryBudget` for the retries: every request that may
            be retried counts as a first attempt, and each retry asks the budget
            first (a refused retry hands back the response or error that asked
            for it, as when attempts run out). It becomes the retry policy's
            `budget`; a policy with a budget of its own needs no other.
            Hedges are not retries and draw nothing from it.
        max_hosts: How many per-host breakers these rules make and keep. At the
            limit, a new host takes the place of the least recently used host
            whose breaker is closed (or keeps its state in a shared storage): that
            breaker leaves the registry, and the host starts afresh if it comes
            back. When every breaker kept is open, half-open or held by an
            operator, a new host is sent to without a breaker (logged once) until
            one closes. Breakers the rules did not make (configured in the
            registry beforehand, say) are used and never removed.
        not_sent: Tells failures that happened before the request left (a refused
            connection), which are safe to retry for every method; given by the
            client module.
        attempt: The client's one attempt, ``attempt(request, route)``, sync or
            async; the rules wrap it in the retry shells of `stalwart._run`.
        hedge: Hedges each attempt of an idempotent request with a replayable
            body (a method of `idempotent_methods`; an idempotency key alone does
            not make a request safe to send twice at once). Async clients only: a
            blocking request cannot be cancelled when another answers first.
        describe: Names a request in logs.

    Raises:
        ValueError: An option is out of range (named, with its value), or
            `breaker_options` are given without per-host breakers.
        TypeError: An option has the wrong kind of value.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_hosts",
        "_once",
        "_safe_send",
        "_unsafe_send",
        "breaker",
        "breaker_options",
        "correlation_header",
        "hedge",
        "idempotency_header",
        "idempotent_methods",
        "max_retry_after",
        "not_sent",
        "per_host",
        "registry",
        "retry",
        "retry_statuses",
        "safe",
        "timeout",
        "unsafe",
    )

    def __init__(
        self,
        *,
        not_sent: Callable[[BaseException], bool],
        attempt: Callable[..., Any],
        describe: Callable[[Any], str],
        retry: RetryPolicy | None = DEFAULT_RETRY,
        breaker: CircuitBreaker | None = None,
        per_host: bool = True,
        registry: BreakerRegistry | None = None,
        breaker_options: Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = None,
        retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
        idempotent_methods: Collection[str] = DEFAULT_IDEMPOTENT_METHODS,
        idempotency_header: str | None = DEFAULT_IDEMPOTENCY_HEADER,
        max_retry_after: float | timedelta | None = DEFAULT_MAX_RETRY_AFTER,
        correlation_header: str | None = DEFAULT_CORRELATION_HEADER,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        budget: RetryBudget | None = None,
        hedge: Hedger | None = None,
    ) -> None:
        self.hedge = _hedger(hedge, attempt)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a stalwart.retry(...) policy or None, got {retry!r}")
        if budget is not None:
            retry = _with_budget(retry, budget)
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker or None, got {breaker!r}")
        if registry is not None and not isinstance(registry, BreakerRegistry):
            raise TypeError(f"registry must be a BreakerRegistry or None, got {registry!r}")
        if breaker_options is not None and not isinstance(breaker_options, Mapping):
            raise TypeError(f"breaker_options must be a mapping or None, got {breaker_options!r}")
        self.retry = retry
        self.breaker = breaker
        self.per_host = bool(per_host)
        self.registry = default_registry if registry is None else registry
        given = dict(breaker_options or {})
        if given and (breaker is not None or not self.per_host):
            raise ValueError(
                "breaker_options configure per-host breakers: they need per_host=True"
                f" and no breaker, got {given!r}"
            )
        self.breaker_options = _host_options(given)
        self._hosts = _HostBreakers(self.registry, self.breaker_options, max_hosts)
        self.timeout = (
            None
            if timeout is None
            else min(_validate.seconds("timeout", timeout, positive=True), MAX_WAIT)
        )
        self.retry_statuses = _statuses("retry_statuses", retry_statuses)
        self.idempotent_methods = _methods(idempotent_methods)
        self.idempotency_header = _header_name(
            "idempotency_header", idempotency_header, optional=True
        )
        self.correlation_header = _header_name(
            "correlation_header", correlation_header, optional=True
        )
        self.max_retry_after = (
            None
            if max_retry_after is None
            else _validate.seconds("max_retry_after", max_retry_after)
        )
        if not callable(not_sent):
            raise TypeError(f"not_sent must be callable, got {not_sent!r}")
        self.not_sent = not_sent
        self.safe, self.unsafe = self._policies(retry)
        # The three ways to send, made once: without retries, and with each policy.
        # A budget counts each call that may be retried once, as `stalwart.retry` does.
        deposit = None if self.safe.budget is None else self.safe.budget.deposit
        self._once = self.bounded(attempt)
        self._safe_send = self.bounded(
            wrap(attempt, begin_named(self.safe, describe), self.safe.retry_if_result, deposit)
        )
        self._unsafe_send = self.bounded(
            wrap(attempt, begin_named(self.unsafe, describe), None, deposit)
        )

    def _policies(self, retry: RetryPolicy | None) -> tuple[RetryPolicy, RetryPolicy]:
        """The policies for idempotent requests and for the others."""
        base = RetryPolicy(attempts=1) if retry is None else retry
        should_retry, not_sent = base.should_retry, self.not_sent
        statuses, user_check = self.retry_statuses, base.retry_if_result
        cap = self.max_retry_after
        if base.max_retry_after is not None:
            cap = base.max_retry_after if cap is None else min(cap, base.max_retry_after)
        limit = MAX_WAIT if cap is None or cap > MAX_WAIT else None

        def too_long(outcome: object) -> bool:
            """Whether `outcome` asks for a wait longer than can be made."""
            if limit is None:  # the cap cuts every wait short enough
                return False
            hint = retry_after_of(outcome)
            if hint is None:
                return False
            return (hint if cap is None else min(hint, cap)) > limit

        def safe_exception(exc: BaseException) -> bool:
            return (
                not isinstance(exc, CircuitOpenError) and should_retry(exc) and not too_long(exc)
            )

        def unsafe_exception(exc: BaseException) -> bool:
            return safe_exception(exc) and not_sent(exc)

        def safe_result(response: Any) -> bool:
            if response.status_code in statuses or (
                user_check is not None and bool(user_check(response))
            ):
                return not too_long(response)
            return False

        safe = base.replace(on=safe_exception, retry_if_result=safe_result, max_retry_after=cap)
        unsafe = base.replace(on=unsafe_exception, retry_if_result=None, max_retry_after=cap)
        return safe, unsafe

    @property
    def retries(self) -> bool:
        """Whether any request may be sent more than once."""
        return self.safe.attempts > 1

    def route(
        self,
        method: str,
        host: str,
        headers: MutableMapping[str, Any],
        *,
        replayable: bool,
        extra: Any = None,
    ) -> Route:
        """Decide how to send one request, and add the correlation header to it.

        Args:
            method: The request's method.
            host: ``host`` or ``host:port``, naming its per-host breaker.
            headers: The request's headers, case-insensitive and mutable.
            replayable: Whether its body can be sent again.
            extra: Whatever the client needs again at each attempt.
        """
        header = self.correlation_header
        if header is not None and header not in headers:
            value = current_correlation_id()
            if value is not None:
                headers[header] = value
        safe = replayable and (
            method.upper() in self.idempotent_methods
            or (self.idempotency_header is not None and self.idempotency_header in headers)
        )
        if not replayable or not self.retries:
            send, check = self._once, None
        elif safe:
            send, check = self._safe_send, self.safe.retry_if_result
        else:
            send, check = self._unsafe_send, None
        breaker = self.breaker
        if breaker is None and self.per_host:
            breaker = self._hosts.get(f"http:{host}")
        hedge = self.hedge
        if hedge is not None and not (replayable and method.upper() in self.idempotent_methods):
            hedge = None
        return Route(self, breaker, send=send, check=check, extra=extra, hedge=hedge)

    def bounded(self, send: _F) -> _F:
        """`send` under the retry policy's own `deadline`, when it has one.

        The retry engine stops waiting at its deadline; opening a `stalwart.deadline`
        around the whole request also cuts each attempt's network timeouts to it.
        """
        seconds = self.safe.deadline
        return send if seconds is None else Deadline(seconds)(send)

    def attempt_timeout(self) -> float | None:
        """Seconds the next attempt may wait on the network, or None for no limit.

        Raises:
            TimeoutExceeded: A `stalwart.deadline` in force has no time left.
        """
        limit = self.timeout
        left = remaining()
        if left is None:
            return limit
        if left <= 0:
            report_timeout(0.0, "deadline")
            raise TimeoutExceeded(0.0, "the deadline passed before the request was sent")
        if limit is None or left < limit:
            return min(left, MAX_WAIT)
        return limit


_EVICTION_SCAN = 8
"""Kept breakers looked at, least recently used first, to make room for a new host."""


class _HostBreakers:
    """The per-host breakers of one `HttpRules`, least recently used first, bounded.

    `get` is the per-request path: two dictionary lookups and a move to the end,
    without a lock. Making a breaker, and making room for it, take the lock.
    """

    __slots__ = ("_kept", "_lock", "_warned", "max_hosts", "options", "registry")

    def __init__(
        self, registry: BreakerRegistry, options: dict[str, Any], max_hosts: object
    ) -> None:
        if not isinstance(max_hosts, int) or isinstance(max_hosts, bool):
            raise TypeError(f"max_hosts must be an integer, got {max_hosts!r}")
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be at least 1, got {max_hosts!r}")
        self.registry = registry
        self.options = options
        self.max_hosts = max_hosts
        # name -> (breaker, whether these rules made it), least recently used first
        self._kept: OrderedDict[str, tuple[CircuitBreaker, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = False

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker guarding `name`, or None past the bound."""
        kept = self._kept
        entry = kept.get(name)
        if entry is not None and name in self.registry:  # still the registry's
            try:  # noqa: SIM105 - per request: cheaper than contextlib.suppress
                kept.move_to_end(name)
            except KeyError:  # made room for another host meanwhile: still usable
                pass
            return entry[0]
        return self._make(name)

    def _make(self, name: str) -> CircuitBreaker | None:
        registry, kept = self.registry, self._kept
        with self._lock:
            entry = kept.get(name)
            if entry is not None:
                if name in registry:  # made by another thread meanwhile
                    return entry[0]
                del kept[name]  # removed from the registry by someone else
            made = name not in registry
            if len(kept) >= self.max_hosts and not self._make_room():
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "all %d per-host breakers kept (max_hosts) are open or held by an"
                        " operator: requests to new hosts, such as %s, go without a breaker"
                        " until one closes",
                        len(kept),
                        name.removeprefix("http:"),
                    )
                return None
            if made:
                try:
                    breaker = registry.get(name, **self.options)
                except ValueError:  # made meanwhile elsewhere, with other options
                    breaker, made = registry.get(name), False
            else:
                breaker = registry.get(name)
            kept[name] = (breaker, made)
            return breaker

    def _make_room(self) -> bool:
        """Forget one kept breaker that can go; False if none of the oldest can."""
        kept, registry = self._kept, self.registry
        for _ in range(min(_EVICTION_SCAN, len(kept))):
            name, (breaker, made) = next(iter(kept.items()))
            if not made or name not in registry or registry.get(name) is not breaker:
                del kept[name]  # not ours to remove, or no longer the registry's
                return True
            # A shared storage keeps the state for the next breaker of the name; in
            # memory, only a closed breaker has nothing worth keeping.
            if breaker.fast_state.io or breaker.state is State.CLOSED:
                del kept[name]
                with contextlib.suppress(KeyError):  # removed meanwhile
                    registry.remove(name)
                return True
            kept.move_to_end(name)  # open or held: look at the next one
        return False


def _hedger(hedge: object, attempt: Callable[..., Any]) -> Hedger | None:
    """`hedge`, checked: a `Hedger` for an async client's attempt, or None."""
    if hedge is None:
        return None
    if not isinstance(hedge, Hedger):
        raise TypeError(f"hedge must be a stalwart.Hedger or None, got {hedge!r}")
    if not is_async_callable(attempt):
        raise TypeError(
            "hedge is offered by async clients only (AsyncResilientTransport): a"
            " blocking request cannot be cancelled when another answers first"
        )
    return hedge


def _with_budget(retry: RetryPolicy | None, budget: RetryBudget) -> RetryPolicy:
    """`retry` drawing its retries from `budget` (`budget=` of the HTTP wrappers)."""
    if retry is None or retry.attempts == 1:
        raise ValueError(f"budget limits retries, but retry={retry!r} makes none")
    if retry.budget is not None and retry.budget is not budget:
        raise ValueError(
            f"budget={budget!r} given for a retry policy with a budget of its own"
            f" ({retry.budget!r}): give one of them"
        )
    return retry.replace(budget=budget)


def shorter(current: float | None, limit: float | None) -> float | None:
    """The smaller of a client's own timeout and stalwart's limit (None: no limit)."""
    if limit is None:
        return current
    if current is None or math.isnan(current) or current > limit:
        return limit
    return current


def begin_named(policy: RetryPolicy, describe: Callable[[Any], str]) -> Callable[..., Call]:
    """A `begin` for `stalwart._run.wrap` that names each retried call after its request."""
    start_call = policy._begin  # noqa: SLF001 - the policy's own call state

    def begin(_name: str, start: float, fn: Any, args: Any, kwargs: Any) -> Call:
        return start_call(describe(args[0]), start, fn, args, kwargs)

    return begin
