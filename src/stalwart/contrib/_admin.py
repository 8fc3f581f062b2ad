"""Health, stats and operator actions, framework-free: what the web adapters share.

Each function returns a `stalwart.contrib._reply.Reply` (status code, JSON body,
content type, headers) that an adapter turns into its framework's response; every
reply here tells caches not to store it (`stalwart.contrib._reply.never_cache`). The
decisions (who may do what, which status code, which body) live here once; the sync
and async variants differ only in how they read the breakers (``registry.health()``
or ``await registry.health_async()``, ``breaker.reset()`` or
``await breaker.reset_async()``).

Breaker names taken from a URL are looked up among the registry's breakers and never
create one: a request for an unknown name costs a lookup and gets 404.

Shapes:

- health: ``{"status", "timestamp", "total", "totals", "open"}``
  (`stalwart.RegistryHealth.as_dict` plus an ISO 8601 UTC timestamp); 200 when
  healthy or degraded, the critical status (503 by default) when critical. The summary
  for callers who may not read the rest: ``{"status", "timestamp"}``. While named
  bulkheads, retry budgets or hedgers exist (`KINDS`), a section for each kind follows:
  ``"bulkheads": {"total", "saturated"}``, ``"retry_budgets": {"total"}``,
  ``"hedgers": {"total"}``. A saturated bulkhead (one that refused a call in the last
  ``SATURATED_FOR`` seconds, a constant of the module ``stalwart.bulkhead``) makes a
  healthy status "degraded", never "critical": it sheds load as it should, and the
  dependency behind it still answers.
- all breakers: ``{"timestamp", "breakers": {name: stats}}``, then, while any exist,
  ``"bulkheads"``, ``"retry_budgets"`` and ``"hedgers"``, each ``{name: stats}``
  (their ``stats_dict()``); one breaker: its stats
  (`stalwart.breaker.BreakerStats.as_dict`); 404 for an unknown name.
- operator action: ``{"name", "action", "state"}``, the state after the action.
- errors: RFC 9457 problem details (``application/problem+json``): ``about:blank``
  for 401, 403 and 405; `UNKNOWN_BREAKER_TYPE` (with the ``name`` asked for) and
  `UNKNOWN_ACTION_TYPE` (with the ``action``) for the 404s.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from . import _reply
from ._reply import JSON, PROBLEM_JSON, Reply, never_cache

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..breaker.circuit import BreakerStats, CircuitBreaker
    from ..breaker.registry import BreakerRegistry, RegistryHealth

__all__ = [
    "ACCESS_LEVELS",
    "ACTIONS",
    "JSON",
    "KINDS",
    "PROBLEM_JSON",
    "UNKNOWN_ACTION_TYPE",
    "UNKNOWN_BREAKER_TYPE",
    "Action",
    "Caller",
    "Reply",
    "access_error",
    "allowed",
    "breaker_reply",
    "breaker_reply_async",
    "breakers_reply",
    "breakers_reply_async",
    "check_access",
    "decide",
    "find_breaker",
    "health_body",
    "health_reply",
    "health_reply_async",
    "method_not_allowed",
    "named_stats",
    "operator_action",
    "operator_action_async",
    "plan_action",
    "problem",
    "reply",
    "timestamp",
]

logger = logging.getLogger("stalwart.admin")

ACCESS_LEVELS: Final = ("public", "authenticated", "staff", "superuser")
"""Who may call an endpoint; a permission ``"app_label.codename"`` is accepted too."""

ACTIONS: Final = {"reset": "reset", "force-open": "force_open", "disable": "disable"}
"""Operator actions by their URL spelling, to the breaker method each calls."""

MAX_NAME_LENGTH: Final = 200
"""A breaker name from a URL longer than this is not looked up (404)."""

UNKNOWN_BREAKER_TYPE: Final = "urn:stalwart:problem:unknown-breaker"
"""The problem ``type`` of a 404 for a breaker name the registry does not hold."""
UNKNOWN_ACTION_TYPE: Final = "urn:stalwart:problem:unknown-action"
"""The problem ``type`` of a 404 for an operator action that does not exist."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request, as the permission rules need to know them.

    Attributes:
        authenticated: Whether the caller is logged in (an active user).
        staff: Whether the caller is staff.
        superuser: Whether the caller is a superuser.
        has_perm: Whether the caller holds a permission ``"app_label.codename"``.
        name: How logs name the caller (a user name); ``None`` for anonymous.

    .. versionadded:: 0.1.0
    """

    authenticated: bool = False
    staff: bool = False
    superuser: bool = False
    has_perm: Callable[[str], bool] = field(default=lambda _: False, repr=False)
    name: str | None = None


ANONYMOUS: Final = Caller()


def check_access(setting: str, value: object, *, public: bool = True) -> str:
    """Return `value` if it is a valid access rule, else raise naming `setting`.

    Raises:
        TypeError: `value` is not a string.
        ValueError: `value` is neither an access level nor ``"app_label.codename"``,
            or is ``"public"`` where `public` is False.
    """
    if not isinstance(value, str):
        raise TypeError(f"{setting} must be a string, got {value!r}")
    levels = ACCESS_LEVELS if public else ACCESS_LEVELS[1:]
    if value in levels:
        return value
    label, dot, codename = value.partition(".")
    if dot and label and codename and "." not in codename and value.isascii():
        return value
    raise ValueError(
        f"{setting} must be one of {', '.join(map(repr, levels))} or a permission"
        f" 'app_label.codename', got {value!r}"
    )


def allowed(access: str, caller: Caller) -> bool:
    """Return whether `caller` passes the access rule `access`."""
    if access == "public":
        return True
    if not caller.authenticated:
        return False
    if access == "authenticated":
        return True
    if access == "staff":
        return caller.staff or caller.superuser
    if access == "superuser":
        return caller.superuser
    return caller.superuser or caller.has_perm(access)


def decide(access: str, caller: Caller) -> Literal[200, 401, 403]:
    """Return 200 when `caller` may pass, 401 when they must log in, else 403."""
    if allowed(access, caller):
        return 200
    return 403 if caller.authenticated else 401


def reply(status: int, body: dict[str, Any]) -> Reply:
    """Return an endpoint's JSON reply (never cached)."""
    return never_cache(Reply(status, body))


def problem(status: int, detail: str, **options: Any) -> Reply:
    """Return `stalwart.contrib._reply.problem` (same arguments), never cached."""
    return never_cache(_reply.problem(status, detail, **options))


def access_error(status: Literal[401, 403]) -> Reply:
    """The reply for a caller refused by `decide` (401 with ``WWW-Authenticate``)."""
    if status == 401:
        challenge = (("WWW-Authenticate", 'Session realm="stalwart"'),)
        return problem(401, "Authentication is required.", headers=challenge)
    return problem(403, "You do not have permission to do this.")


def method_not_allowed(*methods: str) -> Reply:
    """The 405 for a request whose method is not among `methods`, with ``Allow``."""
    allow = ", ".join(methods)
    return problem(405, f"This endpoint takes {allow}.", headers=(("Allow", allow),))


def timestamp(now: dt.datetime | None = None) -> str:
    """Return `now` (the current time by default) in ISO 8601, UTC."""
    moment = dt.datetime.now(dt.timezone.utc) if now is None else now
    return moment.astimezone(dt.timezone.utc).isoformat()


KINDS: Final = (
    ("bulkheads", "stalwart.bulkhead", "bulkheads"),
    ("retry_budgets", "stalwart.budget", "budgets"),
    ("hedgers", "stalwart.hedge", "hedgers"),
)
"""The strategies shared by name besides breakers: the JSON key of each kind, the
module holding its `stalwart._named.Named`, and that attribute's name."""


# -- health ----------------------------------------------------------------------------


def named_stats() -> dict[str, dict[str, dict[str, Any]]]:
    """Every named bulkhead, retry budget and hedger's stats, by kind (`KINDS`), then name.

    Kinds without instances are left out. A module nobody imported holds none, so
    none is imported here; a kind whose stats cannot be read is logged and left out,
    so that health keeps answering.
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for key, module_name, attribute in KINDS:
        named = getattr(sys.modules.get(module_name), attribute, None)
        if named is None or not len(named):
            continue
        try:
            found[key] = named.stats()
        except Exception:
            logger.exception("stats of the %s could not be read", key)
    return found


def _named_health(named: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The health section of each kind: how many, and the saturated bulkheads."""
    sections: dict[str, Any] = {}
    for key, instances in named.items():
        section: dict[str, Any] = {"total": len(instances)}
        if key == "bulkheads":
            section["saturated"] = [
                name for name, stats in instances.items() if stats.get("saturated")
            ]
        sections[key] = section
    return sections


def health_body(health: RegistryHealth, *, summary: bool = False) -> dict[str, Any]:
    """Return the health JSON: the summary (status, timestamp) or everything.

    The status is the breakers' (`RegistryHealth.status`), raised from "healthy" to
    "degraded" while a named bulkhead is saturated.
    """
    sections = _named_health(named_stats())
    status = health.status
    if status == "healthy" and sections.get("bulkheads", {}).get("saturated"):
        status = "degraded"
    if summary:
        return {"status": status, "timestamp": timestamp()}
    body = {"status": status, "timestamp": timestamp(), **health.as_dict(), **sections}
    body["status"] = status
    return body


def _health_view(
    caller: Caller, access: str, public_summary: bool
) -> Literal["full", "summary"] | Reply:
    status = decide(access, caller)
    if status == 200:
        return "full"
    if public_summary:
        return "summary"
    return access_error(status)


def _health_reply(health: RegistryHealth, view: str, critical_status: int) -> Reply:
    # Only breakers make health critical: the other kinds degrade it at most.
    code = critical_status if health.status == "critical" else 200
    return reply(code, health_body(health, summary=view == "summary"))


def health_reply(
    registry: BreakerRegistry,
    caller: Caller,
    *,
    access: str = "staff",
    public_summary: bool = False,
    critical_status: int = 503,
) -> Reply:
    """Answer a request for the overall health.

    A caller who passes `access` gets the whole health; otherwise, with
    `public_summary`, anyone gets the status alone; otherwise 401 or 403. The status
    code is `critical_status` when the health is critical, else 200 (degraded
    included), for load balancers.
    """
    view = _health_view(caller, access, public_summary)
    if isinstance(view, Reply):
        return view
    return _health_reply(registry.health(), view, critical_status)


async def health_reply_async(
    registry: BreakerRegistry,
    caller: Caller,
    *,
    access: str = "staff",
    public_summary: bool = False,
    critical_status: int = 503,
) -> Reply:
    """`health_reply` for async code (reads an async storage without blocking)."""
    view = _health_view(caller, access, public_summary)
    if isinstance(view, Reply):
        return view
    return _health_reply(await registry.health_async(), view, critical_status)


# -- stats -----------------------------------------------------------------------------


def find_breaker(registry: BreakerRegistry, name: str) -> CircuitBreaker | None:
    """Return the registry's breaker called `name`, or None; never creates one."""
    if not name or len(name) > MAX_NAME_LENGTH or name not in registry:
        return None
    return next((breaker for breaker in registry if breaker.name == name), None)


def _unknown(name: str) -> Reply:
    return problem(
        404,
        "No breaker has this name.",
        problem_type=UNKNOWN_BREAKER_TYPE,
        title="Unknown breaker",
        name=name[:MAX_NAME_LENGTH],
    )


def _breakers_body(snapshot: Mapping[str, BreakerStats]) -> dict[str, Any]:
    return {
        "timestamp": timestamp(),
        "breakers": {name: stats.as_dict() for name, stats in snapshot.items()},
        **named_stats(),
    }


def breakers_reply(registry: BreakerRegistry, caller: Caller, *, access: str = "staff") -> Reply:
    """Answer a request for every breaker's stats (401/403 per `access`).

    The named bulkheads, retry budgets and hedgers follow, by kind (`named_stats`).
    """
    status = decide(access, caller)
    if status != 200:
        return access_error(status)
    return reply(200, _breakers_body(registry.snapshot()))


async def breakers_reply_async(
    registry: BreakerRegistry, caller: Caller, *, access: str = "staff"
) -> Reply:
    """`breakers_reply` for async code."""
    status = decide(access, caller)
    if status != 200:
        return access_error(status)
    return reply(200, _breakers_body(await registry.snapshot_async()))


def _breaker_for(
    registry: BreakerRegistry, name: str, caller: Caller, access: str
) -> CircuitBreaker | Reply:
    """The breaker a caller may read, or the reply refusing them (401/403, 404)."""
    status = decide(access, caller)
    if status != 200:
        return access_error(status)
    breaker = find_breaker(registry, name)
    return _unknown(name) if breaker is None else breaker


def breaker_reply(
    registry: BreakerRegistry, name: str, caller: Caller, *, access: str = "staff"
) -> Reply:
    """Answer a request for one breaker's stats (401/403 per `access`, 404 unknown)."""
    found = _breaker_for(registry, name, caller, access)
    return found if isinstance(found, Reply) else reply(200, found.stats().as_dict())


async def breaker_reply_async(
    registry: BreakerRegistry, name: str, caller: Caller, *, access: str = "staff"
) -> Reply:
    """`breaker_reply` for async code."""
    found = _breaker_for(registry, name, caller, access)
    if isinstance(found, Reply):
        return found
    return reply(200, (await found.stats_async()).as_dict())


# -- operator actions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """An operator action allowed and ready to run: on which breaker, by whom.

    .. versionadded:: 0.1.0
    """

    breaker: CircuitBreaker
    action: str
    """The URL spelling: ``"reset"``, ``"force-open"`` or ``"disable"``."""
    actor: str


def unknown_action(action: str) -> Reply:
    """The 404 for an operator action that does not exist (or that is not served)."""
    return problem(
        404,
        "No such operator action.",
        problem_type=UNKNOWN_ACTION_TYPE,
        title="Unknown action",
        action=action[:50],
    )


def plan_action(
    registry: BreakerRegistry,
    name: str,
    action: str,
    caller: Caller,
    *,
    access: str = "staff",
) -> Action | Reply:
    """Decide whether `caller` may run `action` on breaker `name`.

    Returns the `Action` to run, or the refusal: 401/403 per `access` (checked
    first, so a refused caller learns nothing of the names), 404 for an unknown
    action or breaker. Operator actions are never public: an `access` of
    ``"public"`` is read as ``"staff"``.
    """
    status = decide("staff" if access == "public" else access, caller)
    if status != 200:
        return access_error(status)
    if action not in ACTIONS:
        return unknown_action(action)
    breaker = find_breaker(registry, name)
    if breaker is None:
        return _unknown(name)
    return Action(breaker, action, caller.name or "unknown")


def _done(plan: Action, state: str) -> Reply:
    name = plan.breaker.name
    logger.warning(
        "breaker %r: %s by %s, now %s",
        name,
        plan.action,
        plan.actor,
        state,
        extra={"breaker": name, "action": plan.action, "actor": plan.actor, "state": state},
    )
    return reply(200, {"name": name, "action": plan.action, "state": state})


def operator_action(plan: Action | Reply) -> Reply:
    """Run a planned action (or pass a refusal through); log it; reply the new state."""
    if isinstance(plan, Reply):
        return plan
    getattr(plan.breaker, ACTIONS[plan.action])()
    return _done(plan, plan.breaker.stats().state)


async def operator_action_async(plan: Action | Reply) -> Reply:
    """`operator_action` for async code."""
    if isinstance(plan, Reply):
        return plan
    await getattr(plan.breaker, ACTIONS[plan.action] + "_async")()
    return _done(plan, (await plan.breaker.stats_async()).state)
