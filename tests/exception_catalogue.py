"""Every exception stalwart defines, and instances of each: the tables of the
serialisation tests (pickle and copy in test_errors, Celery's result serializers in
test_contrib_celery_status)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import stalwart
import stalwart.errors

# Arguments to build each exception with; a subclass takes its nearest ancestor's.
EXAMPLES: dict[type[BaseException], list[tuple[tuple[object, ...], dict[str, object]]]] = {
    stalwart.TransientError: [
        (("upstream busy",), {"status_code": 503, "retry_after": 2.5}),
        (("reset by peer",), {}),
        (("slow down",), {"retry_after": 1.0}),
    ],
    stalwart.PermanentError: [(("gone",), {"status_code": 404}), (("bad input",), {})],
    stalwart.StalwartError: [(("something failed",), {})],
    stalwart.CircuitOpenError: [(("payments", 1.5), {}), (("payments",), {})],
    stalwart.TimeoutExceeded: [((0.25,), {}), ((1.0, "deadline passed"), {})],
    stalwart.BulkheadFull: [(("db", "queue full"), {}), (("db", "timed out"), {})],
}
with contextlib.suppress(ImportError):  # the Celery integration, where Celery is installed
    from stalwart.contrib.celery import DeadLettered, RedeliveryLimitExceeded

    EXAMPLES[DeadLettered] = [
        (("poison_pill", "tickets.create", "builtins.KeyError", "req-42"), {}),
        (("max_redeliveries", "tickets.create"), {}),
    ]
    EXAMPLES[RedeliveryLimitExceeded] = [
        (("tickets.create", 4, 3, "req-42"), {}),
        (("tickets.create",), {}),
    ]

ATTRIBUTES = (
    "message",
    "status_code",
    "retry_after",
    "name",
    "seconds",
    "reason",
    "task",
    "exception_type",
    "correlation_id",
    "count",
    "max_redeliveries",
)
"""The public attributes an exception may carry, which must survive serialisation."""


def stalwart_exceptions() -> list[type[BaseException]]:
    """Every exception class stalwart defines: errors.__all__ and their subclasses.

    Every module of the package is imported first (contrib too, where its framework
    is installed), so that subclasses defined anywhere are found.
    """
    for module in pkgutil.walk_packages(stalwart.__path__, "stalwart."):
        with contextlib.suppress(ImportError):
            importlib.import_module(module.name)
    found: dict[type[BaseException], None] = {}
    todo = [getattr(stalwart.errors, name) for name in stalwart.errors.__all__]
    while todo:
        cls = todo.pop()
        if cls.__module__.partition(".")[0] == "stalwart" and cls not in found:
            found[cls] = None
            todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def instances() -> list[BaseException]:
    """Instances of every exception stalwart defines, built as their users build them."""
    made: list[BaseException] = []
    for cls in stalwart_exceptions():
        base = next(base for base in cls.__mro__ if base in EXAMPLES)
        made.extend(cls(*args, **kwargs) for args, kwargs in EXAMPLES[base])
        if issubclass(cls, stalwart.CircuitOpenError) and (
            cls.__init__ is stalwart.CircuitOpenError.__init__
        ):  # as rejections make them: without __init__
            made.append(cls.__new__(cls, "payments", 0.5))
            made.append(cls.__new__(cls, "payments", None))
    return made
