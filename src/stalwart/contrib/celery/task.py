"""`ResilientTask`: a Celery task base class that retries, limits and dead-letters well.

The task adapts stalwart's decisions to Celery's verbs: a failure is judged by the
task's `stalwart.RetryPolicy` (the same decision engine as `stalwart.retry`), a
transient one becomes ``Task.retry(countdown=...)`` with the policy's backoff, a
poison pill or a transient failure past the policy's attempts goes to the dead-letter
queue, anything else fails at once.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn, ParamSpec, TypeVar

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded

from ... import _validate
from ..._correlation import CorrelationId, current_correlation_id
from ..._deadline import Deadline
from ...breaker.circuit import CircuitBreaker
from ...classify import Verdict
from ...errors import CircuitOpenError, TimeoutExceeded
from ...events import emit, forward, hooks, listener_tuple
from ...presets import DEFAULT
from ...retry import RetryPolicy
from ._wire import (
    CORRELATION_HEADER,
    MAX_REDELIVERIES,
    MAX_RETRIES_EXCEEDED,
    POISON_PILL,
    RedeliveryLimitExceeded,
)
from .events import DeadLetterEvent, exception_type_of, log_dead_letter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from celery.app.task import Context

__all__ = [
    "DEFAULT_SOFT_TIME_LIMIT",
    "DEFAULT_TIME_LIMIT",
    "POISON_PILLS",
    "ResilientTask",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

DEFAULT_SOFT_TIME_LIMIT: Final = 270
"""Seconds before a task gets `SoftTimeLimitExceeded` (what the platform uses)."""
DEFAULT_TIME_LIMIT: Final = 300
"""Seconds before the worker kills a task's process (what the platform uses)."""

POISON_PILLS: Final[tuple[type[BaseException], ...]] = (
    UnicodeDecodeError,
    KeyError,
    ValueError,  # json.JSONDecodeError among them
    TypeError,  # a call with missing or ill-typed arguments among them
    AttributeError,
)
"""Failures that mark a message as one that can never succeed, when judged permanent.

The default classifier's poison classes: a message that raised one of them is sent to
the dead-letter queue at once, unless the task's classifier calls it transient.
"""

_OPTIONS: Final = frozenset(
    {
        "breaker",
        "classifier",
        "dead_letter",
        "listeners",
        "poison_pills",
        "redeliveries",
        "retry_with",
    }
)
"""The options `ResilientTask` adds to Celery's."""

_CELERY_RETRY_OPTIONS: Final = frozenset(
    {
        "autoretry_for",
        "default_retry_delay",
        "dont_autoretry_for",
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "retry_kwargs",
    }
)
"""Celery's own retry options: `retry_with` replaces them, so they are refused."""

_FROM_DECORATOR: Final = frozenset(
    {
        "_decorated",
        "_decorated_fun",
        "_dump_pydantic_arguments",
        "app",
        "name",
        "run",
    }
)
"""What Celery's ``@app.task`` sets on the class besides the options."""

_HOOKS: Final = ("on_retry", "on_give_up", "on_dead_letter")
_TO_SUBSCRIBERS: Final = forward("on_dead_letter")


def _unknown_options(cls: type) -> None:
    """Refuse options given to ``@app.task(base=ResilientTask, ...)`` that nothing reads."""
    for key, value in vars(cls).items():
        if key.startswith("__") and key.endswith("__"):
            continue
        if key in _CELERY_RETRY_OPTIONS:
            raise TypeError(
                f"ResilientTask does not take Celery's retry option {key}={value!r}:"
                " its retries follow retry_with (a stalwart RetryPolicy), as in"
                " retry_with=stalwart.presets.DEFAULT.replace(attempts=5)"
            )
        if key in _OPTIONS or key in _FROM_DECORATOR or hasattr(Task, key):
            continue
        raise TypeError(
            f"unknown option {key}={value!r} for ResilientTask task"
            f" {vars(cls).get('name')!r}; its own options are {sorted(_OPTIONS)},"
            " beside Celery's task options"
        )


def _check_limit(name: str, value: object) -> float | None:
    if value is None:
        return None
    return _validate.seconds(name, value, positive=True)  # type: ignore[arg-type]


def _retried_by(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    """What the task retries: what `policy` retries, and an open breaker inside it."""
    should_retry = policy.should_retry

    def judge(exc: BaseException) -> bool:
        # An open breaker is retried once it may admit a call again: its retry_after
        # is the countdown's floor, so attempts are never spent faster than that.
        return isinstance(exc, CircuitOpenError) or should_retry(exc)

    return judge


class ResilientTask(Task[_P, _R]):
    """A Celery task that retries, limits time and dead-letters as stalwart decides.

    .. code-block:: python

        from stalwart.contrib.celery import ResilientTask

        @app.task(base=ResilientTask, bind=True, retry_with=stalwart.presets.SLOW_SERVICE)
        def sync_incidents(self, tenant: str) -> int: ...

    Options are class attributes: give them to ``@app.task(...)``, or set them on a
    subclass used as ``base``. They are checked when Celery creates the task class
    (at once on a finalized app or with ``lazy=False``, else when the app finalizes:
    at worker start or first use); an unknown option is a `TypeError` naming it.

    ==========================  ===================================  =====================
    option                      meaning                              default
    ==========================  ===================================  =====================
    ``retry_with``              the `stalwart.RetryPolicy`: what     ``presets.DEFAULT``
                                to retry, how many attempts in       (3 attempts,
                                all, the backoff; must allow a       1-10 s)
                                retry (``attempts >= 2``)
    ``classifier``              judges transient or permanent        the policy's
                                (replaces the policy's)
    ``breaker``                 a breaker name in                    ``None``
                                ``stalwart.registry``, or a
                                `CircuitBreaker`: the body runs
                                inside it
    ``listeners``               objects with ``on_retry``,           ``()``
                                ``on_give_up``, ``on_dead_letter``
    ``dead_letter``             ``True``: poison pills and           ``True``
                                exhausted retries go to the
                                dead-letter queue; a queue name:
                                that queue; ``False``: they fail
    ``poison_pills``            exception types that, judged         `POISON_PILLS`
                                permanent, mark a poison pill
    ``redeliveries``            a ``RedeliveryTracker``: a           ``None``
                                message redelivered more than
                                its limit is dead-lettered (with
                                ``dead_letter=False``, it fails
                                with `RedeliveryLimitExceeded`)
    ``soft_time_limit``         seconds; the body runs inside        ``270.0``
                                ``stalwart.deadline`` of it
    ``time_limit``              seconds before the worker kills      ``300.0``
                                the process
    ``acks_late``               ack after the task ran               ``True``
    ``reject_on_worker_lost``   redeliver when the worker dies       ``True``
    ==========================  ===================================  =====================

    What happens to a failure:

    - Judged transient by the policy (or a `stalwart.CircuitOpenError` from a breaker
      inside the task): retried with ``Task.retry(countdown=...)``, the countdown from
      the policy's backoff for that attempt, raised to a ``Retry-After`` hint or the
      breaker's ``retry_after`` (capped by the policy's ``max_retry_after``). The
      policy's ``attempts`` count every run, the first included (Celery's
      ``max_retries`` is ``attempts - 1``). Past them: given up, and dead-lettered
      with reason ``max_retries_exceeded``.
    - A poison pill (judged permanent and one of `poison_pills`: a call with missing
      or ill-typed arguments is a `TypeError`): dead-lettered at once, reason
      ``poison_pill``, never retried.
    - Anything else permanent: the task fails at once (``FAILURE``), no retry.
    - `celery.exceptions.SoftTimeLimitExceeded` is judged as a
      `stalwart.TimeoutExceeded` (transient by default), and raised as one when it is
      not retried.

    The caller's `stalwart.correlation_id` travels in the message headers from
    ``delay()``/``apply_async()`` to the worker and is current while the task runs; a
    task sent without one runs with a new one (its retries keep it).

    In eager mode (``task_always_eager`` or ``apply()``) the task is retried in the
    calling process by the policy itself, sleeping its backoff (none inside
    `stalwart.testing.instant_retries`); failures are raised, nothing is
    dead-lettered. Called as a plain function, ``task(...)``, it runs the body alone.

    Time limits are enforced by the worker's prefork pool (not by the solo and
    threads pools); the ``stalwart.deadline`` around the body is there in any pool.
    These class defaults win over the app's ``task_time_limit`` settings; set an
    option to ``None`` to use the app's.

    .. versionadded:: 0.1.0
    """

    __module__ = "stalwart.contrib.celery"

    retry_with: ClassVar[RetryPolicy] = DEFAULT
    """The retry policy: what to retry, how many attempts in all, the backoff."""
    classifier: ClassVar[Callable[[BaseException], Verdict] | None] = None
    """Judges transient or permanent, instead of the policy's classifier."""
    breaker: ClassVar[str | CircuitBreaker | None] = None
    """A breaker (or its name in ``stalwart.registry``) the body runs inside."""
    listeners: ClassVar[Iterable[object]] = ()
    """Objects with ``on_retry``, ``on_give_up`` and/or ``on_dead_letter``."""
    dead_letter: ClassVar[bool | str] = True
    """Whether poison pills and exhausted retries go to the dead-letter queue (or which)."""
    poison_pills: ClassVar[tuple[type[BaseException], ...]] = POISON_PILLS
    """Exception types that, judged permanent, mark a message as a poison pill."""
    redeliveries: ClassVar[Any] = None
    """A ``RedeliveryTracker`` limiting broker redeliveries, or ``None``."""

    soft_time_limit = DEFAULT_SOFT_TIME_LIMIT
    time_limit = DEFAULT_TIME_LIMIT
    acks_late = True
    reject_on_worker_lost = True
    max_retries = DEFAULT.attempts - 1

    _stalwart_policy: ClassVar[RetryPolicy]
    _stalwart_judges: ClassVar[
        tuple[Callable[[BaseException], bool], Callable[[BaseException], Verdict]]
    ]
    _stalwart_dead_letter_hooks: ClassVar[tuple[Callable[[Any], object], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if vars(cls).get("_decorated"):
            _unknown_options(cls)
        cls._stalwart_configure()

    @classmethod
    def _stalwart_configure(cls) -> None:
        """Check the options and derive what each run uses from them."""
        policy = cls.retry_with
        if not isinstance(policy, RetryPolicy):
            raise TypeError(
                f"retry_with must be a stalwart RetryPolicy (stalwart.retry(...) or a"
                f" preset), got {policy!r}"
            )
        if policy.attempts < 2:
            raise ValueError(
                f"retry_with must allow a retry (attempts >= 2), got {policy!r}; a task"
                " that must never retry fails on its own, without ResilientTask"
            )
        classifier = cls.classifier
        if classifier is not None:
            if not callable(classifier):
                raise TypeError(f"classifier must be a Classifier or callable, got {classifier!r}")
            policy = policy.replace(classifier=classifier)
        listeners = listener_tuple(cls.listeners)
        found = hooks(listeners, _HOOKS, parameter="listeners")
        # The policy takes those that listen to retries; a listener of dead letters
        # only is the task's alone.
        retry_listeners = tuple(
            listener
            for listener in listeners
            if any(callable(getattr(listener, name, None)) for name in _HOOKS[:2])
        )
        policy = policy.replace(listeners=(*policy.listeners, *retry_listeners))
        cls._stalwart_policy = policy.replace(on=_retried_by(policy))
        # In a tuple: a function set on the class itself would be called as a method.
        cls._stalwart_judges = (cls._stalwart_policy.should_retry, policy.classifier)
        # Last, the subscribers of the moment (`stalwart.events.subscribe`): read when a
        # message is dead-lettered, so that those who subscribe later hear it too.
        dead_letter_hooks = (*found["on_dead_letter"], _TO_SUBSCRIBERS)
        cls._stalwart_dead_letter_hooks = (
            (log_dead_letter, *dead_letter_hooks) if policy.log else dead_letter_hooks
        )
        _check_options(cls)
        cls.max_retries = policy.attempts - 1

    # Publishing: the correlation id goes into the headers.

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Send the task, with the current correlation id in its headers."""
        _add_correlation(options)
        return super().apply_async(args, kwargs, *rest, **options)

    def apply(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Run the task here (eagerly), with the current correlation id in its headers."""
        if len(rest) < 8:  # headers were not given by position
            _add_correlation(options)
        return super().apply(args, kwargs, *rest, **options)

    # Running.

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run the task: resiliently from a message or eagerly, plainly when called."""
        request: Context | None = self.request_stack.top
        if request is None or request.called_directly:
            return super().__call__(*args, **kwargs)  # a plain function call
        with CorrelationId(_correlation_of(request)) as correlation:
            if request.is_eager:
                return self._run_eagerly(request, args, kwargs)
            if self.redeliveries is not None:
                self._check_redeliveries(request, correlation)
            return self._run(request, correlation, args, kwargs)

    def _run(self, request: Context, correlation: str, args: Any, kwargs: dict[str, Any]) -> _R:
        from ... import _clock  # noqa: PLC0415 - cheap; kept beside its only use

        start = _clock.now()
        budget = self._stalwart_policy.budget
        if budget is not None and not request.retries:
            budget.deposit()  # a task's first run is its first attempt; reruns withdraw
        soft = _soft_limit(self, request)
        try:
            with Deadline(soft) if soft is not None else contextlib.nullcontext():
                return self._body(*args, **kwargs)
        except (Retry, Ignore, Reject):  # the body's own verdicts, for Celery
            raise
        except SoftTimeLimitExceeded as exc:
            timeout = TimeoutExceeded(soft or 0.0, f"task exceeded its soft time limit ({soft}s)")
            self._failed(request, correlation, timeout, start, args, kwargs, cause=exc)
        except Exception as exc:  # judged below, never swallowed
            self._failed(request, correlation, exc, start, args, kwargs)

    def _body(self, *args: Any, **kwargs: Any) -> _R:
        breaker = self.breaker
        if breaker is None:
            return self.run(*args, **kwargs)
        if isinstance(breaker, str):
            from ...breaker.registry import registry  # noqa: PLC0415 - the default one

            breaker = registry.get(breaker)
        return breaker.call(self.run, *args, **kwargs)

    def _failed(  # noqa: PLR0917 - the run's state, handed on
        self,
        request: Context,
        correlation: str,
        exc: Exception,
        start: float,
        args: Any,
        kwargs: dict[str, Any],
        *,
        cause: BaseException | None = None,
    ) -> NoReturn:
        """Retry, dead-letter or fail the task that raised `exc`."""
        if cause is not None:
            exc.__cause__ = cause
        attempt = request.retries + 1
        if not self._stalwart_judges[0](exc) and self._is_poison(exc):
            self._dead_letter(POISON_PILL, request, correlation, exc, attempt, failure=exc)
        policy = self._stalwart_policy
        call = policy._resume(self.name, start, self.run, args, kwargs, attempt)  # noqa: SLF001
        try:
            delay = call.failed(exc).next()
        except BaseException as raised:
            if raised is exc and call.stopped_by and self.dead_letter:
                self._dead_letter(
                    MAX_RETRIES_EXCEEDED, request, correlation, exc, attempt, failure=exc
                )
            raise
        if not isinstance(delay, float):  # pragma: no cover - a failure never ends "done"
            raise exc
        raise self.retry(exc=exc, countdown=delay, max_retries=policy.attempts - 1)

    def _is_poison(self, exc: BaseException) -> bool:
        return isinstance(exc, self.poison_pills) and (
            self._stalwart_judges[1](exc) is Verdict.PERMANENT
        )

    def _dead_letter(
        self,
        reason: str,
        request: Context,
        correlation: str | None,
        exc: BaseException | None,
        attempt: int | None,
        *,
        failure: BaseException,
    ) -> NoReturn:
        """Tell the listeners, then send the message to the dead-letter queue.

        With dead-lettering off, raise `failure` instead: the task ends ``FAILURE``.
        """
        if not self.dead_letter:
            raise failure
        event = DeadLetterEvent(
            reason, self.name, request.id, exception_type_of(exc), correlation, attempt
        )
        emit(self._stalwart_dead_letter_hooks, event)
        from .dead_letter import send_to_dead_letter  # noqa: PLC0415 - its own module

        queue = self.dead_letter if isinstance(self.dead_letter, str) else None
        send_to_dead_letter(self, reason, exc, queue=queue)

    def _check_redeliveries(self, request: Context, correlation: str) -> None:
        """Dead-letter a message the broker redelivered more often than allowed."""
        from .redelivery import delivery_of  # noqa: PLC0415 - imports redis

        delivery = delivery_of(request)
        check = self.redeliveries.check(
            delivery.id, redelivered=delivery.redelivered, delivery_count=delivery.delivery_count
        )
        if check.exceeded:
            failure = RedeliveryLimitExceeded(
                self.name,
                check.count,
                getattr(self.redeliveries, "max_redeliveries", None),
                correlation,
            )
            self._dead_letter(
                MAX_REDELIVERIES, request, correlation, None, request.retries + 1, failure=failure
            )

    def _run_eagerly(self, request: Context, args: Any, kwargs: dict[str, Any]) -> _R:
        """Run in the calling process, retried by the policy itself."""
        soft = _soft_limit(self, request)
        body: Callable[..., _R] = self._stalwart_policy(self._body)
        with Deadline(soft) if soft is not None else contextlib.nullcontext():
            return body(*args, **kwargs)


def _check_options(task: type[ResilientTask[Any, Any]]) -> None:
    """Check the options that are used as they are given."""
    dead_letter = task.dead_letter
    if not isinstance(dead_letter, bool | str):
        raise TypeError(f"dead_letter must be a bool or a queue name, got {dead_letter!r}")
    if isinstance(dead_letter, str) and not dead_letter.strip():
        raise ValueError(f"dead_letter must be a non-empty queue name, got {dead_letter!r}")
    breaker = task.breaker
    if breaker is not None and not isinstance(breaker, str | CircuitBreaker):
        raise TypeError(
            f"breaker must be a breaker name, a CircuitBreaker or None, got {breaker!r}"
        )
    if isinstance(breaker, str) and not breaker:
        raise ValueError(f"breaker must be a non-empty name, got {breaker!r}")
    poison = task.poison_pills
    if not isinstance(poison, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in poison
    ):
        raise TypeError(f"poison_pills must be a tuple of exception types, got {poison!r}")
    tracker = task.redeliveries
    if tracker is not None and not callable(getattr(tracker, "check", None)):
        raise TypeError(f"redeliveries must be a RedeliveryTracker or None, got {tracker!r}")
    soft = _check_limit("soft_time_limit", task.soft_time_limit)
    hard = _check_limit("time_limit", task.time_limit)
    if soft is not None and hard is not None and soft > hard:
        raise ValueError(
            f"soft_time_limit must be <= time_limit ({task.time_limit!r}),"
            f" got {task.soft_time_limit!r}"
        )
    for flag in ("acks_late", "reject_on_worker_lost"):
        value = getattr(task, flag)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {value!r}")


ResilientTask._stalwart_configure()  # noqa: SLF001 - the defaults are checked too


def _add_correlation(options: dict[str, Any]) -> None:
    """Put the correlation id in the message: the current one, or a new one.

    It goes in the headers, and is stamped (Celery's stamped headers), which a result
    backend with ``result_extended`` keeps beside the result, for `task_status`, and
    which `Task.retry` carries on.
    """
    headers = options.get("headers") or {}
    if CORRELATION_HEADER in headers or CORRELATION_HEADER in options:
        return
    correlation = current_correlation_id() or uuid.uuid4().hex
    options["headers"] = {**headers, CORRELATION_HEADER: correlation}
    options[CORRELATION_HEADER] = correlation
    stamped = options.get("stamped_headers") or []
    options["stamped_headers"] = [*stamped, CORRELATION_HEADER]


def _correlation_of(request: Context) -> str | None:
    """The correlation id a message carries, or ``None`` (a new one is made)."""
    headers = request.headers or {}
    value = headers.get(CORRELATION_HEADER) or getattr(request, CORRELATION_HEADER, None)
    if isinstance(value, str) and value and value.isprintable():
        return value
    return None


def _soft_limit(task: ResilientTask[Any, Any], request: Context) -> float | None:
    """The soft time limit of this message: its own (given when sent), else the task's."""
    limits = request.timelimit
    if limits and len(limits) > 1 and limits[1]:
        return float(limits[1])
    soft = task.soft_time_limit
    return float(soft) if soft else None
