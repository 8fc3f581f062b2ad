"""Dead letters: where messages that can never succeed go, and how they come back.

.. code-block:: python

    from stalwart.contrib.celery import configure_dead_letters, dead_letters, replay

    configure_dead_letters(app, "default", "reports")   # at configuration time

    for letter in dead_letters(app):                     # look, without consuming
        print(letter.task_id, letter.task, letter.reason, letter.exception_type)
    replay(app, ids=["8d1c..."])                         # after the fix: run it again

**One mechanism on every broker.** A task that gives up (`send_to_dead_letter`, called
by `ResilientTask`) publishes its own message to the dead-letter queue, with headers
saying why, then acknowledges the original (it raises `celery.exceptions.Ignore`). The
same happens, in the worker's consumer, to a message that never reaches a task (a body
that cannot be decoded, a message that is not a task, content the worker refuses).
RabbitMQ's dead-letter exchange cannot add headers when it moves a message (it adds
only ``x-death``), and Celery records a rejected task as failed with the `Reject`
itself, so the reason would have to live somewhere else; publishing the message
ourselves keeps the reason, the task, the exception type and the correlation id on
the message, on RabbitMQ and Redis alike. The dead-letter exchange that
`configure_dead_letters` declares on RabbitMQ is the safety net for what stalwart
does not handle: a task that raises ``Reject(requeue=False)`` itself, a task name the
worker does not know, a message that expires in the queue. Those arrive with RabbitMQ's
``x-death`` header and no stalwart headers; `dead_letters` reads their reason from it.

The message is published before the original is acknowledged, so a worker that dies
in between leaves a copy in both queues (the original is delivered again): a dead
letter may be duplicated, never lost.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import TYPE_CHECKING, Any, Final, NoReturn

from celery import bootsteps
from celery.exceptions import Ignore, Reject
from kombu import Exchange, Queue

from ..._correlation import current_correlation_id
from ..._record import Record
from ...events import emit, forward
from ._wire import (
    CORRELATION_HEADER,
    DEAD_LETTER_EXCEPTION_HEADER,
    DEAD_LETTER_QUEUE_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_TASK_HEADER,
    MAX_REDELIVERIES,
    MAX_RETRIES_EXCEEDED,
    POISON_PILL,
    DeadLettered,
)
from .events import DeadLetterEvent, exception_type_of, log_dead_letter, logger

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    from celery import Celery, Task
    from celery.app.task import Context
    from kombu import Connection
    from kombu.message import Message

_DEFAULT_HOOKS = (log_dead_letter, forward("on_dead_letter"))
"""Who hears of a dead letter whose message names no resilient task: the log and the
process-wide subscribers."""

__all__ = [
    "DEAD_LETTERED_AT_HEADER",
    "DEAD_LETTER_QUEUE_SETTING",
    "DEAD_LETTER_SUFFIX",
    "EXCEPTION_MESSAGE_HEADER",
    "REPLAYS_HEADER",
    "DeadLetter",
    "configure_dead_letters",
    "dead_letter_queue_name",
    "dead_letters",
    "replay",
    "send_to_dead_letter",
]

DEAD_LETTER_SUFFIX: Final = ".dead_letter"
"""The default dead-letter queue of an app is its default queue's name and this."""
DEAD_LETTER_QUEUE_SETTING: Final = "stalwart_dead_letter_queue"
"""The app setting naming its dead-letter queue (`configure_dead_letters` sets it)."""
REPLAYS_HEADER: Final = "x-stalwart-replays"
"""Header of a replayed message: how many times it was replayed from the DLQ."""
DEAD_LETTERED_AT_HEADER: Final = "x-stalwart-dead-lettered-at"
"""Header of a dead letter: when it was dead-lettered (Unix time, seconds)."""
EXCEPTION_MESSAGE_HEADER: Final = "x-stalwart-exception-message"
"""Header of a dead letter: the exception's message, only when the caller opts in."""

_REASONS: Final = frozenset({POISON_PILL, MAX_RETRIES_EXCEEDED, MAX_REDELIVERIES})
_MESSAGE_LIMIT: Final = 1000  # characters of an opted-in exception message
# Headers a dead letter gains; a replay removes them (and RabbitMQ's own).
_DEAD_LETTER_HEADERS: Final = frozenset(
    {
        DEAD_LETTER_REASON_HEADER,
        DEAD_LETTER_TASK_HEADER,
        DEAD_LETTER_EXCEPTION_HEADER,
        DEAD_LETTER_QUEUE_HEADER,
        DEAD_LETTERED_AT_HEADER,
        EXCEPTION_MESSAGE_HEADER,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "redelivered",  # set by kombu's Redis transport on a message put back
    }
)


def dead_letter_queue_name(app: Celery) -> str:
    """Return the name of `app`'s dead-letter queue.

    The name `configure_dead_letters` was given, else the app's default queue name
    followed by ``.dead_letter`` (``celery.dead_letter`` for Celery's defaults).

    .. versionadded:: 0.1.0
    """
    configured = app.conf.get(DEAD_LETTER_QUEUE_SETTING)
    if configured:
        return str(configured)
    return f"{app.conf.task_default_queue}{DEAD_LETTER_SUFFIX}"


def _dead_letter_queue(name: str) -> Queue:
    """The dead-letter queue `name`: durable, reached through the default exchange."""
    return Queue(name, Exchange(""), routing_key=name, durable=True)


def configure_dead_letters(
    app: Celery, *queues: str | Queue, dead_letter_queue: str | None = None
) -> list[Queue]:
    """Give `app` a dead-letter queue, on RabbitMQ and Redis alike.

    Call it where the app is configured, before a worker starts or a task is sent:

    .. code-block:: python

        app = Celery("connectors", broker="amqp://...")
        configure_dead_letters(app, "default", "reports")

    It does three things:

    - sets ``app.conf.task_queues`` to the work queues `queues` (names or kombu
      `Queue` objects; the app's default queue when none is given), each declared
      with ``x-dead-letter-exchange`` (the default exchange) and
      ``x-dead-letter-routing-key`` (the dead-letter queue), so that whatever
      RabbitMQ dead-letters from them lands in the dead-letter queue. Redis ignores
      these arguments. The list is returned, to add to or inspect;
    - records the dead-letter queue's name in the app's settings
      (``stalwart_dead_letter_queue``), where `send_to_dead_letter`, `dead_letters`
      and `replay` find it;
    - adds a step to the app's workers that declares the dead-letter queue when a
      worker starts and sends there, with reason ``poison_pill``, every message that
      never reaches a task: a body that cannot be decoded, a message that is not a
      task, content the worker does not accept. Celery would otherwise acknowledge
      and drop the first and reject the others (dropped too, on Redis).

    RabbitMQ refuses to declare an existing queue with other arguments
    (``PRECONDITION_FAILED``): a queue that already exists without them must be
    deleted first, or given its dead-letter exchange by a RabbitMQ policy instead.

    Args:
        app: The Celery app.
        *queues: The work queues, by name or as kombu `Queue` objects (their other
            arguments are kept).
        dead_letter_queue: The dead-letter queue's name; by default the app's default
            queue's name followed by ``.dead_letter``.

    Returns:
        The work queues, as set in ``app.conf.task_queues``. The dead-letter queue is
        not among them: a worker must never consume it.

    Raises:
        TypeError: A queue is neither a string nor a `Queue`, or `dead_letter_queue`
            is not a string.
        ValueError: A name is empty, or a work queue is the dead-letter queue.

    .. versionadded:: 0.1.0
    """
    if dead_letter_queue is None:
        dead_letter_queue = f"{app.conf.task_default_queue}{DEAD_LETTER_SUFFIX}"
    if not isinstance(dead_letter_queue, str):
        raise TypeError(f"dead_letter_queue must be a string, got {dead_letter_queue!r}")
    if not dead_letter_queue:
        raise ValueError(f"dead_letter_queue must be a non-empty name, got {dead_letter_queue!r}")
    arguments = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue,
    }
    if app.conf.task_default_queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    work = [
        _work_queue(app, queue, arguments) for queue in queues or (app.conf.task_default_queue,)
    ]
    for queue in work:
        if queue.name == dead_letter_queue:
            raise ValueError(
                f"queues must not hold the dead-letter queue (a worker would run its"
                f" messages again), got {queue.name!r}"
            )
    app.conf.task_queues = work
    app.conf[DEAD_LETTER_QUEUE_SETTING] = dead_letter_queue
    if _DeadLetterStep not in app.steps["consumer"]:
        app.steps["consumer"].add(_DeadLetterStep)
    return work


def _work_queue(app: Celery, queue: str | Queue, arguments: dict[str, str]) -> Queue:
    """Work queue `queue` (a name, or a `Queue`, its own arguments kept) with `arguments`."""
    if isinstance(queue, Queue):
        made = copy.copy(queue)
        made.queue_arguments = {**(queue.queue_arguments or {}), **arguments}
        return made
    if not isinstance(queue, str):
        raise TypeError(f"queues must hold names or kombu Queues, got {queue!r}")
    if not queue:
        raise ValueError(f"queues must hold non-empty names, got {queue!r}")
    return Queue(
        queue,
        Exchange(queue, type=app.conf.task_default_exchange_type),
        routing_key=queue,
        queue_arguments=dict(arguments),
    )


def _original_queue(app: Celery, delivery_info: Mapping[str, Any] | None) -> str | None:
    """The queue a message came from, from the exchange and routing key it was sent to.

    Brokers do not tell a consumer which of its queues a message came from; it is the
    app's queue bound to that exchange with that routing key, or else the routing key
    (the queue's name when sent through the default exchange, as Celery does).
    """
    info = delivery_info or {}
    exchange, routing_key = info.get("exchange"), info.get("routing_key")
    if exchange:
        for queue in app.amqp.queues.values():
            if queue.exchange is not None and (queue.exchange.name, queue.routing_key) == (
                exchange,
                routing_key,
            ):
                return str(queue.name)
    return None if routing_key is None else str(routing_key)


def _dead_letter_headers(
    reason: str,
    task: str | None,
    exc: BaseException | None,
    correlation: str | None,
    original_queue: str | None,
    *,
    include_exception_message: bool,
) -> dict[str, Any]:
    headers: dict[str, Any] = {
        DEAD_LETTER_REASON_HEADER: reason,
        DEAD_LETTERED_AT_HEADER: time.time(),
    }
    optional = {
        DEAD_LETTER_TASK_HEADER: task,
        DEAD_LETTER_EXCEPTION_HEADER: exception_type_of(exc),
        DEAD_LETTER_QUEUE_HEADER: original_queue,
        CORRELATION_HEADER: correlation,
    }
    headers.update({key: value for key, value in optional.items() if value is not None})
    if include_exception_message and exc is not None:
        headers[EXCEPTION_MESSAGE_HEADER] = str(exc)[:_MESSAGE_LIMIT]
    return headers


def send_to_dead_letter(
    task: Task[Any, Any],
    reason: str,
    exc: BaseException | None = None,
    *,
    queue: str | None = None,
    include_exception_message: bool = False,
) -> NoReturn:
    """Send the message `task` is running to the dead-letter queue, and end the task.

    Call it from inside a running task (`ResilientTask` does, when it gives up). It

    1. publishes the task's message (the same id, arguments, options and headers) to
       the dead-letter queue, with headers for the `reason`, the task's name, the
       queue it came from (where `replay` sends it back), the exception's qualified
       type name and the correlation id, never the exception's message unless
       `include_exception_message`;
    2. stores `DeadLettered` as the task's ``FAILURE`` in the result backend, in
       place of a stale ``STARTED`` or ``RETRY`` (unless the task ignores its
       results); a backend that fails here is logged, the message is safe already;
    3. raises `celery.exceptions.Ignore`, so the worker acknowledges the original
       message and records nothing over the failure.

    If the dead-letter queue cannot be published to, it raises
    ``Reject(requeue=False)`` instead: RabbitMQ's dead-letter exchange (see
    `configure_dead_letters`) still moves the message there, without the headers.

    A task run eagerly or called directly has no message: `DeadLettered` itself is
    raised, chained to `exc`.

    Args:
        task: The running task (``self`` of a bound task).
        reason: ``"poison_pill"``, ``"max_retries_exceeded"`` or ``"max_redeliveries"``.
        exc: The exception that sent it there, if any.
        queue: The dead-letter queue; by default the app's (`dead_letter_queue_name`).
        include_exception_message: Also send ``str(exc)`` (its first 1,000
            characters) as a header. Off by default: messages may hold secrets.

    Raises:
        celery.exceptions.Ignore: Always, once the message is in the dead-letter queue.
        celery.exceptions.Reject: The dead-letter queue could not be published to.
        DeadLettered: The task runs eagerly or was called directly.
        ValueError: `reason` is not one of the three reasons.

    .. versionadded:: 0.1.0
    """
    if reason not in _REASONS:
        raise ValueError(f"reason must be one of {sorted(_REASONS)}, got {reason!r}")
    request = task.request
    custom = dict(request.headers or {})
    correlation = (
        custom.get(CORRELATION_HEADER)
        or getattr(request, CORRELATION_HEADER, None)
        or current_correlation_id()
    )
    dead = DeadLettered(reason, task.name, exception_type_of(exc), correlation)
    if request.is_eager or request.called_directly:
        raise dead from exc
    app = task.app
    name = queue or dead_letter_queue_name(app)
    original = _original_queue(app, request.delivery_info)
    custom.update(
        _dead_letter_headers(
            reason,
            task.name,
            exc,
            correlation,
            original,
            include_exception_message=include_exception_message,
        )
    )
    try:
        _republish(task, request, _dead_letter_queue(name), custom)
    except Exception as publish_error:
        logger.exception(
            "could not publish task %s[%s] to the dead-letter queue %r; rejecting it",
            task.name,
            request.id,
            name,
            extra={"task_id": request.id, "reason": reason, "correlation_id": correlation},
        )
        raise Reject(dead, requeue=False) from publish_error
    if not task.ignore_result or task.store_errors_even_if_ignored:
        try:
            task.backend.mark_as_failure(str(request.id), dead, request=request)
        except Exception:
            logger.exception(
                "task %s[%s] is in the dead-letter queue, but its result could not be stored",
                task.name,
                request.id,
                extra={"task_id": request.id, "reason": reason, "correlation_id": correlation},
            )
    logger.info(
        "task %s[%s] sent to the dead-letter queue %r: %s",
        task.name,
        request.id,
        name,
        reason,
        extra={
            "task_id": request.id,
            "reason": reason,
            "exception_type": dead.exception_type,
            "correlation_id": correlation,
        },
    )
    raise Ignore


def _republish(
    task: Task[Any, Any], request: Context, queue: Queue, headers: dict[str, Any]
) -> None:
    """Publish the message of `request` again, to `queue`, with `headers` as its own.

    The same task id, arguments, links, chord, group, limits, expiry and stamps, and
    what the caller showed of the arguments (perhaps masked: never a fresh repr); no
    countdown. Built as ``Task.retry`` builds its message, but published without a
    result to wait on and without making the task its own parent.
    """
    app = task.app
    hard, soft = request.timelimit or (None, None)
    stamps: dict[str, Any] = {}
    if request.stamps and request.stamped_headers:
        stamps = {k: v for k, v in request.stamps.items() if k in request.stamped_headers}
    message = app.amqp.create_task_message(
        request.id,
        task.name,
        request.args,
        request.kwargs,
        group_id=request.group,
        group_index=request.group_index,
        expires=request.expires,
        retries=request.retries,
        chord=request.chord,
        callbacks=request.callbacks,
        errbacks=request.errbacks,
        reply_to=request.reply_to,
        time_limit=hard,
        soft_time_limit=soft,
        root_id=request.root_id,
        parent_id=request.parent_id,
        shadow=request.shadow,
        chain=request.chain,
        origin=request.origin,
        ignore_result=bool(request.ignore_result),
        argsrepr=getattr(request, "argsrepr", None),
        kwargsrepr=getattr(request, "kwargsrepr", None),
        replaced_task_nesting=request.replaced_task_nesting,
        stamped_headers=request.stamped_headers if stamps else None,
        **stamps,
    )
    priority = (request.delivery_info or {}).get("priority")
    with app.producer_or_acquire() as producer:
        app.amqp.send_task_message(
            producer,
            task.name,
            message,
            queue=queue,
            headers=headers,
            retry=True,
            **({} if priority is None else {"priority": priority}),
        )


# --- Messages that never reach a task -------------------------------------------------


def _dead_letter_message(
    app: Celery, message: Message, exc: BaseException | None, *, dead_letter_queue: str
) -> None:
    """Publish a message the worker cannot run to the DLQ, then acknowledge it.

    Its body goes unchanged (it may not even decode). When its headers name a task
    and an id, the task's result becomes `DeadLettered`, so a caller polling it sees a
    final state. If publishing fails, the message is rejected without requeue: on
    RabbitMQ the dead-letter exchange still takes it there.
    """
    headers = message.headers if isinstance(message.headers, dict) else {}
    task, task_id = headers.get("task"), headers.get("id")
    correlation = headers.get(CORRELATION_HEADER)
    delivery_info = message.delivery_info
    original = _original_queue(app, delivery_info)
    new_headers = {
        **headers,
        **_dead_letter_headers(
            POISON_PILL,
            task if isinstance(task, str) else None,
            exc,
            correlation if isinstance(correlation, str) else None,
            original,
            include_exception_message=False,
        ),
    }
    properties: dict[str, Any] = {
        key: message.properties[key]
        for key in ("correlation_id", "reply_to", "priority")
        if message.properties.get(key) is not None
    }
    # The listeners of the task the message names, if it is a resilient task's (the
    # log line otherwise): the same event as a task that dead-letters its message.
    named = app.tasks.get(task) if isinstance(task, str) else None
    handlers = getattr(named, "_stalwart_dead_letter_hooks", _DEFAULT_HOOKS)
    emit(
        handlers,
        DeadLetterEvent(
            POISON_PILL,
            task if isinstance(task, str) else None,
            task_id if isinstance(task_id, str) else None,
            exception_type_of(exc),
            new_headers.get(CORRELATION_HEADER),
        ),
    )
    queue = _dead_letter_queue(dead_letter_queue)
    try:
        with app.producer_or_acquire() as producer:
            producer.publish(
                message.body,
                exchange="",
                routing_key=dead_letter_queue,
                headers=new_headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                declare=[queue],
                delivery_mode=2,
                retry=True,
                **properties,
            )
    except Exception:
        logger.exception(
            "could not publish an undeliverable message to the dead-letter queue %r; rejecting it",
            dead_letter_queue,
        )
        try:
            message.reject(requeue=False)
        except Exception:
            logger.exception("could not reject the message either")
        return
    message.ack()
    if isinstance(task, str) and isinstance(task_id, str):
        dead = DeadLettered(
            POISON_PILL, task, exception_type_of(exc), new_headers.get(CORRELATION_HEADER)
        )
        with contextlib.suppress(Exception):
            app.backend.mark_as_failure(task_id, dead)


class _DeadLetterStep(bootsteps.StartStopStep):
    """A worker consumer step: the DLQ exists, and undeliverable messages go there.

    It takes over the consumer's handlers of messages that never reach a task (Celery
    acknowledges an undecodable one and drops it, and rejects the others).
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        app: Celery = parent.app
        name = dead_letter_queue_name(app)
        self.queue_name = name

        def on_decode_error(message: Message, exc: BaseException) -> None:
            _dead_letter_message(app, message, exc, dead_letter_queue=name)

        def on_unknown_message(body: object, message: Message) -> None:
            del body
            _dead_letter_message(app, message, None, dead_letter_queue=name)

        def on_invalid_task(body: object, message: Message, exc: BaseException) -> None:
            del body
            _dead_letter_message(app, message, exc, dead_letter_queue=name)

        # Read by the consumer when it builds its task handler, after every step's
        # __init__ and before any step starts.
        parent.on_decode_error = on_decode_error
        parent.on_unknown_message = on_unknown_message
        parent.on_invalid_task = on_invalid_task

    def start(self, parent: Any) -> None:
        """Declare the dead-letter queue, so the broker can dead-letter into it."""
        with parent.app.connection_for_write() as connection:
            _dead_letter_queue(self.queue_name)(connection.default_channel).declare()


# --- Listing and replaying ----------------------------------------------------------------


class DeadLetter(Record):
    """A message in a dead-letter queue, as `dead_letters` lists it.

    Never its arguments; the exception's message only if the sender opted in.

    Attributes:
        task_id: The task's id (``None`` for a message that is not a task's).
        task: The task's name, if known.
        reason: ``"poison_pill"``, ``"max_retries_exceeded"`` or ``"max_redeliveries"``;
            for a message RabbitMQ dead-lettered by itself, its reason from
            ``x-death`` (``"rejected"``, ``"expired"``, ``"maxlen"``,
            ``"delivery_limit"``); ``None`` if neither says.
        exception_type: The qualified type name of the exception, if any.
        correlation_id: The correlation id of the task, if any.
        original_queue: The queue it was taken from (where `replay` sends it).
        dead_lettered_at: When, in Unix time, if stalwart dead-lettered it.
        replays: How many times it was replayed before.
        exception_message: The exception's message, only if the sender opted in.

    .. versionadded:: 0.1.0
    """

    __slots__ = (  # noqa: RUF023 - fields in order
        "task_id",
        "task",
        "reason",
        "exception_type",
        "correlation_id",
        "original_queue",
        "dead_lettered_at",
        "replays",
        "exception_message",
    )
    __module__ = "stalwart.contrib.celery"
    task_id: str | None
    task: str | None
    reason: str | None
    exception_type: str | None
    correlation_id: str | None
    original_queue: str | None
    dead_lettered_at: float | None
    replays: int
    exception_message: str | None

    def __init__(  # noqa: PLR0917 - positional, as the fields of a dataclass are
        self,
        task_id: str | None,
        task: str | None,
        reason: str | None,
        exception_type: str | None = None,
        correlation_id: str | None = None,
        original_queue: str | None = None,
        dead_lettered_at: float | None = None,
        replays: int = 0,
        exception_message: str | None = None,
    ) -> None:
        self._set(
            task_id,
            task,
            reason,
            exception_type,
            correlation_id,
            original_queue,
            dead_lettered_at,
            replays,
            exception_message,
        )

    @classmethod
    def from_headers(cls, headers: dict[str, Any] | None) -> DeadLetter:
        """Read a dead letter's record from its message headers."""
        headers = headers if isinstance(headers, dict) else {}
        death = _first_death(headers)

        def text(key: str, fallback: object = None) -> str | None:
            value = headers.get(key, fallback)
            return None if value is None else str(value)

        at = headers.get(DEAD_LETTERED_AT_HEADER)
        replays = headers.get(REPLAYS_HEADER, 0)
        return cls(
            task_id=text("id"),
            task=text(DEAD_LETTER_TASK_HEADER, headers.get("task")),
            reason=text(
                DEAD_LETTER_REASON_HEADER,
                headers.get("x-first-death-reason", death.get("reason")),
            ),
            exception_type=text(DEAD_LETTER_EXCEPTION_HEADER),
            correlation_id=text(CORRELATION_HEADER),
            original_queue=text(
                DEAD_LETTER_QUEUE_HEADER, headers.get("x-first-death-queue", death.get("queue"))
            ),
            dead_lettered_at=float(at) if isinstance(at, (int, float)) else None,
            replays=replays if isinstance(replays, int) else 0,
            exception_message=text(EXCEPTION_MESSAGE_HEADER),
        )

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return dict(zip(self.__slots__, self._values(), strict=True))


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    """RabbitMQ's record of how it dead-lettered a message, the first time."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
        # RabbitMQ prepends each new death: the last entry is the first.
        return {str(key): value for key, value in deaths[-1].items()}
    return {}


@contextlib.contextmanager
def _taken(connection: Connection, name: str, limit: int | None) -> Iterator[list[Message]]:
    """Take the messages in queue `name` (at most `limit`), unacknowledged.

    Those still unacknowledged at the end are put back: on RabbitMQ where they were,
    on Redis at the back of the queue (in the same order, when all were taken).
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a count >= 0 or None, got {limit!r}")
    channel: Any = connection.channel()
    try:
        queue = _dead_letter_queue(name)(channel)
        declared: Any = queue.queue_declare()  # (name, message count, consumer count)
        count = int(declared[1])
        if limit is not None:
            count = min(count, limit)
        taken: list[Message] = []
        # Nothing is put back before all are taken: RabbitMQ would hand a message put
        # back to the next get at once.
        for _ in range(count):
            message = queue.get(no_ack=False)
            if message is None:
                break
            taken.append(message)
        try:
            yield taken
        finally:
            for message in taken:
                if not message.acknowledged:
                    message.requeue()
    finally:
        channel.close()


def dead_letters(
    app: Celery, queue: str | None = None, *, limit: int | None = None
) -> list[DeadLetter]:
    """List the messages in `app`'s dead-letter queue, without consuming them.

    Each message is taken and put back. On RabbitMQ it keeps its place; on Redis it
    goes to the back of the queue, so when there are more than `limit` the next
    listing starts with others. Listing never runs a task and never reads arguments.

    Args:
        app: The Celery app (its broker, and the name of its dead-letter queue).
        queue: The dead-letter queue; by default the app's (`dead_letter_queue_name`).
        limit: At most this many, oldest first; all by default.

    Returns:
        The dead letters, oldest first.

    Raises:
        ValueError: `limit` is negative or not an integer.

    .. versionadded:: 0.1.0
    """
    name = queue or dead_letter_queue_name(app)
    with app.connection_for_write() as connection, _taken(connection, name, limit) as taken:
        return [DeadLetter.from_headers(message.headers) for message in taken]


def _replay_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers of a replayed message: no dead-letter headers, one more replay."""
    cleaned = {key: value for key, value in headers.items() if key not in _DEAD_LETTER_HEADERS}
    previous = headers.get(REPLAYS_HEADER, 0)
    cleaned[REPLAYS_HEADER] = (previous if isinstance(previous, int) else 0) + 1
    if "retries" in cleaned:
        cleaned["retries"] = 0  # after a fix the task gets its whole retry policy again
    return cleaned


def replay(
    app: Celery,
    queue: str | None = None,
    *,
    ids: Collection[str] | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Send dead letters back to the queues they came from, to run again.

    Use it once what sent them there is fixed. Each replayed message keeps its body,
    its task id and its headers, loses the dead-letter headers (and RabbitMQ's
    ``x-death``), starts its retries from zero and gains ``x-stalwart-replays`` (one
    more than before). It is published before it leaves the dead-letter queue, so a
    failure in between leaves it in both, never in neither. A dead letter whose
    original queue is unknown stays where it is. A second copy of a task's dead letter
    (a worker that died between sending one and acknowledging its message leaves two)
    is dropped rather than replayed: the task runs once more, not twice.

    Args:
        app: The Celery app.
        queue: The dead-letter queue; by default the app's.
        ids: Replay only the messages of these task ids; all by default.
        limit: Look at most at this many messages, oldest first; all by default.

    Returns:
        The dead letters replayed, as they were in the dead-letter queue.

    Raises:
        ValueError: `limit` is negative or not an integer.
        TypeError: `ids` is a string (one id is ``ids=[task_id]``).

    .. versionadded:: 0.1.0
    """
    if isinstance(ids, str):
        raise TypeError(f"ids must be a collection of task ids, got the string {ids!r}")
    wanted = None if ids is None else set(ids)
    name = queue or dead_letter_queue_name(app)
    replayed: list[DeadLetter] = []
    sent: set[str] = set()
    with app.connection_for_write() as connection, _taken(connection, name, limit) as taken:
        producer = connection.Producer()
        for message in taken:
            letter = DeadLetter.from_headers(message.headers)
            if wanted is not None and letter.task_id not in wanted:
                continue
            if letter.task_id is not None and letter.task_id in sent:
                logger.info(
                    "dropped a second dead letter of task %s: replayed once", letter.task_id
                )
                message.ack()
                continue
            target = letter.original_queue
            if not target:
                logger.warning(
                    "dead letter %s has no original queue; left in %r", letter.task_id, name
                )
                continue
            known = app.amqp.queues.get(target)
            properties: dict[str, Any] = {
                key: message.properties[key]
                for key in ("correlation_id", "reply_to", "priority")
                if message.properties.get(key) is not None
            }
            producer.publish(
                message.body,
                exchange="",
                routing_key=target,
                headers=_replay_headers(message.headers or {}),
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                declare=[known] if known is not None else [],
                delivery_mode=2,
                retry=True,
                **properties,
            )
            message.ack()
            replayed.append(letter)
            if letter.task_id is not None:
                sent.add(letter.task_id)
    return replayed
