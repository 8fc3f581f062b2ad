"""The framework-free admin core: access decisions, health/stats shapes, operator actions."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart import BreakerRegistry, BulkheadFull
from stalwart._named import Named
from stalwart.bulkhead import Bulkhead, bulkheads
from stalwart.bulkhead import bulkhead as stalwart_bulkhead
from stalwart.contrib import _admin
from stalwart.contrib._admin import ANONYMOUS, Caller, Reply
from stalwart.contrib._reply import NEVER_CACHE

if TYPE_CHECKING:
    from collections.abc import Iterator

USER = Caller(authenticated=True, name="alice")
STAFF = Caller(authenticated=True, staff=True, name="sam")
ROOT = Caller(authenticated=True, superuser=True, name="root")
HOLDER = Caller(authenticated=True, has_perm=lambda perm: perm == "ops.reset_breaker", name="pat")

HEALTH_KEYS = {"status", "timestamp", "total", "totals", "open"}
STATE_KEYS = {"closed", "open", "half_open", "forced_open", "disabled"}


def _registry(closed: int = 0, opened: int = 0) -> BreakerRegistry:
    breakers = BreakerRegistry(log=False)
    for i in range(closed):
        breakers.get(f"ok{i}")
    for i in range(opened):
        breakers.get(f"down{i}").force_open()
    return breakers


@pytest.mark.parametrize(
    ("access", "caller", "expected"),
    [
        ("public", ANONYMOUS, 200),
        ("authenticated", ANONYMOUS, 401),
        ("authenticated", USER, 200),
        ("staff", ANONYMOUS, 401),
        ("staff", USER, 403),
        ("staff", STAFF, 200),
        ("staff", ROOT, 200),
        ("superuser", STAFF, 403),
        ("superuser", ROOT, 200),
        ("ops.reset_breaker", USER, 403),
        ("ops.reset_breaker", HOLDER, 200),
        ("ops.reset_breaker", ROOT, 200),
        ("ops.reset_breaker", ANONYMOUS, 401),
        ("not-a-level", STAFF, 403),
    ],
)
def test_decide(access: str, caller: Caller, expected: int) -> None:
    """Anonymous callers get 401, authenticated ones without the right 403, others 200."""
    assert _admin.decide(access, caller) == expected


@pytest.mark.parametrize("value", ["public", "authenticated", "staff", "superuser", "a.b"])
def test_check_access_accepts_levels_and_permissions(value: str) -> None:
    """Every access level and an 'app_label.codename' permission are valid."""
    assert _admin.check_access("X", value) == value


@pytest.mark.parametrize(
    ("value", "error"),
    [("staf", ValueError), ("a.b.c", ValueError), (".b", ValueError), (3, TypeError)],
)
def test_check_access_refuses_bad_values_naming_them(value: object, error: type) -> None:
    """A bad access value raises naming the setting and the value."""
    with pytest.raises(error, match="HEALTH_ACCESS"):
        _admin.check_access("HEALTH_ACCESS", value)


def test_check_access_refuses_public_where_it_may_not_be() -> None:
    """'public' is refused for operator actions."""
    with pytest.raises(ValueError, match="'public'"):
        _admin.check_access("ADMIN_ACCESS", "public", public=False)


@pytest.mark.parametrize(
    ("closed", "opened", "status", "code"),
    [
        (0, 0, "healthy", 200),
        (3, 0, "healthy", 200),
        (3, 1, "degraded", 200),
        (2, 2, "degraded", 200),
        (1, 2, "critical", 503),
    ],
)
def test_health_reply_status_and_shape(closed: int, opened: int, status: str, code: int) -> None:
    """Health is 200 when healthy or degraded, 503 when critical, with the pinned keys."""
    reply = _admin.health_reply(_registry(closed, opened), STAFF)
    assert reply.status == code
    assert reply.content_type == "application/json"
    assert set(reply.body) == HEALTH_KEYS
    assert reply.body["status"] == status
    assert reply.body["total"] == closed + opened
    assert set(reply.body["totals"]) == STATE_KEYS
    assert reply.body["totals"]["forced_open"] == opened
    assert reply.body["open"] == [f"down{i}" for i in range(opened)]
    stamp = dt.datetime.fromisoformat(reply.body["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert abs(stamp - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)


def test_health_reply_critical_status_is_configurable() -> None:
    """The status code of a critical health is the one asked for."""
    assert _admin.health_reply(_registry(0, 1), STAFF, critical_status=500).status == 500


def test_health_summary_for_callers_who_may_not_read_the_rest() -> None:
    """With public_summary, an anonymous caller gets status and timestamp only."""
    reply = _admin.health_reply(_registry(1, 2), ANONYMOUS, public_summary=True)
    assert reply.status == 503
    assert set(reply.body) == {"status", "timestamp"}
    assert reply.body["status"] == "critical"


def test_health_refused_without_summary() -> None:
    """Without public_summary, anonymous gets 401 (with WWW-Authenticate) and a user 403."""
    anonymous = _admin.health_reply(_registry(), ANONYMOUS)
    assert anonymous.status == 401
    assert anonymous.content_type == "application/problem+json"
    assert anonymous.header("WWW-Authenticate") == 'Session realm="stalwart"'
    assert anonymous.body == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "Authentication is required.",
    }
    user = _admin.health_reply(_registry(), USER)
    assert user.status == 403
    assert user.header("WWW-Authenticate") is None
    assert user.body == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "You do not have permission to do this.",
    }


def test_breakers_reply_shape() -> None:
    """All breakers: a timestamp and each breaker's stats by name, never a message."""
    breakers = _registry(1, 1)
    reply = _admin.breakers_reply(breakers, STAFF)
    assert reply.status == 200
    assert set(reply.body) == {"timestamp", "breakers"}
    assert list(reply.body["breakers"]) == ["down0", "ok0"]
    down = reply.body["breakers"]["down0"]
    assert set(down) == set(breakers.get("down0").stats().as_dict())
    assert down["state"] == "forced_open"
    assert _admin.breakers_reply(breakers, USER).status == 403


def test_breaker_reply_and_unknown_names_never_create_a_breaker() -> None:
    """One breaker: its stats; an unknown or over-long name is 404 and adds no breaker."""
    breakers = _registry(1)
    assert _admin.breaker_reply(breakers, "ok0", STAFF).body["name"] == "ok0"
    for name in ("nope", "x" * 10_000, ""):
        reply = _admin.breaker_reply(breakers, name, STAFF)
        assert reply.status == 404
        assert len(reply.body["name"]) <= _admin.MAX_NAME_LENGTH
    assert breakers.names() == ["ok0"]


def test_unknown_names_and_actions_have_problem_types_of_their_own() -> None:
    """The 404s carry the name or action asked for, under a type of stalwart's."""
    breakers = _registry(1)
    unknown = _admin.breaker_reply(breakers, "nope", STAFF)
    assert unknown.content_type == "application/problem+json"
    assert unknown.body == {
        "type": "urn:stalwart:problem:unknown-breaker",
        "title": "Unknown breaker",
        "status": 404,
        "detail": "No breaker has this name.",
        "name": "nope",
    }
    action = _admin.operator_action(_admin.plan_action(breakers, "ok0", "explode", STAFF))
    assert action.body == {
        "type": "urn:stalwart:problem:unknown-action",
        "title": "Unknown action",
        "status": 404,
        "detail": "No such operator action.",
        "action": "explode",
    }


def test_method_not_allowed_names_the_methods() -> None:
    """405: about:blank problem details and an Allow header listing the methods."""
    reply = _admin.method_not_allowed("GET", "HEAD")
    assert (reply.status, reply.content_type) == (405, "application/problem+json")
    assert reply.header("Allow") == "GET, HEAD"
    assert reply.body == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "This endpoint takes GET, HEAD.",
    }


def test_every_reply_is_never_cached() -> None:
    """Stats, actions and refusals all tell caches not to store them, expiring now."""
    breakers = _registry(1, 1)
    replies = [
        _admin.health_reply(breakers, STAFF),
        _admin.health_reply(breakers, ANONYMOUS),
        _admin.health_reply(breakers, ANONYMOUS, public_summary=True),
        _admin.breakers_reply(breakers, USER),
        _admin.breaker_reply(breakers, "nope", STAFF),
        _admin.operator_action(_admin.plan_action(breakers, "down0", "reset", STAFF)),
        _admin.method_not_allowed("POST"),
        _admin.problem(501, "Not here."),
        _admin.reply(200, {"tasks": []}),
    ]
    for reply in replies:
        assert reply.header("Cache-Control") == NEVER_CACHE
        expires = reply.header("Expires")
        assert expires is not None
        assert abs(parsedate_to_datetime(expires) - dt.datetime.now(dt.timezone.utc)) < (
            dt.timedelta(minutes=1)
        )
        assert json.loads(reply.content) == reply.body


def test_refusal_comes_before_the_name_lookup() -> None:
    """An anonymous caller gets 401 for an unknown name too: names are not disclosed."""
    assert _admin.breaker_reply(_registry(), "nope", ANONYMOUS).status == 401
    refused = _admin.plan_action(_registry(), "nope", "reset", USER)
    assert isinstance(refused, Reply)
    assert refused.status == 403


@pytest.mark.parametrize(
    ("action", "state"),
    [("reset", "closed"), ("force-open", "forced_open"), ("disable", "disabled")],
)
def test_operator_actions_reply_the_new_state_and_log_the_actor(
    action: str, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each action changes the breaker, replies its new state and logs who did it."""
    breakers = _registry(0, 1)
    with caplog.at_level(logging.WARNING, logger="stalwart.admin"):
        reply = _admin.operator_action(_admin.plan_action(breakers, "down0", action, STAFF))
    assert (reply.status, reply.body) == (200, {"name": "down0", "action": action, "state": state})
    assert reply.content_type == "application/json"
    assert breakers.get("down0").state.value == state
    (record,) = [r for r in caplog.records if r.name == "stalwart.admin"]
    assert record.levelno == logging.WARNING
    assert record.actor == "sam"  # type: ignore[attr-defined]
    assert record.action == action  # type: ignore[attr-defined]
    assert "sam" in record.getMessage()


def test_operator_action_refusals() -> None:
    """Unknown actions and names are 404; a 'public' admin access still needs staff."""
    breakers = _registry(1)
    assert (
        _admin.operator_action(_admin.plan_action(breakers, "ok0", "explode", STAFF)).status == 404
    )
    assert (
        _admin.operator_action(_admin.plan_action(breakers, "nope", "reset", STAFF)).status == 404
    )
    plan = _admin.plan_action(breakers, "ok0", "reset", ANONYMOUS, access="public")
    assert isinstance(plan, Reply)
    assert plan.status == 401
    assert isinstance(
        _admin.plan_action(breakers, "ok0", "reset", HOLDER, access="ops.reset_breaker"),
        _admin.Action,
    )


@pytest.mark.anyio
async def test_async_variants_give_the_sync_replies() -> None:
    """Each async reply equals its sync twin (timestamps aside)."""

    def same(a: Reply, b: Reply) -> None:
        strip = {"timestamp"}
        assert a.status == b.status
        assert {k: v for k, v in a.body.items() if k not in strip} == {
            k: v for k, v in b.body.items() if k not in strip
        }

    breakers = _registry(1, 2)
    same(_admin.health_reply(breakers, STAFF), await _admin.health_reply_async(breakers, STAFF))
    same(_admin.health_reply(breakers, USER), await _admin.health_reply_async(breakers, USER))
    same(
        _admin.breakers_reply(breakers, STAFF), await _admin.breakers_reply_async(breakers, STAFF)
    )
    same(
        _admin.breaker_reply(breakers, "nope", STAFF),
        await _admin.breaker_reply_async(breakers, "nope", STAFF),
    )
    same(
        _admin.breaker_reply(breakers, "ok0", ANONYMOUS),
        await _admin.breaker_reply_async(breakers, "ok0", ANONYMOUS),
    )
    reply = await _admin.operator_action_async(
        _admin.plan_action(breakers, "down0", "reset", STAFF)
    )
    assert reply.body == {"name": "down0", "action": "reset", "state": "closed"}
    assert (await _admin.breaker_reply_async(breakers, "down0", STAFF)).body["state"] == "closed"
    refused = await _admin.operator_action_async(
        _admin.plan_action(breakers, "down0", "reset", USER)
    )
    assert refused.status == 403


@given(st.integers(min_value=0, max_value=6), st.integers(min_value=0, max_value=6))
def test_health_code_is_critical_exactly_when_more_than_half_are_open(
    closed: int, opened: int
) -> None:
    """The critical status is answered if and only if more than half of the breakers are open."""
    reply = _admin.health_reply(_registry(closed, opened), STAFF, critical_status=599)
    assert (reply.status == 599) == (2 * opened > closed + opened)
    assert reply.status in {200, 599}


# -- bulkheads, retry budgets and hedgers ------------------------------------------------


@pytest.fixture
def named_bulkheads() -> Iterator[Named[Bulkhead]]:
    """The named bulkheads, empty before and after the test."""
    bulkheads.clear()
    yield bulkheads
    bulkheads.clear()


def _saturated(name: str) -> Bulkhead:
    """A named bulkhead that has just refused a call."""
    limit = stalwart_bulkhead(name, max_concurrent=1)
    limit.acquire()
    with pytest.raises(BulkheadFull):
        limit.acquire()
    return limit


def test_health_lists_bulkheads_and_a_saturated_one_degrades_it(
    named_bulkheads: Named[Bulkhead],
) -> None:
    """A healthy status becomes degraded (still 200) while a bulkhead is saturated."""
    stalwart_bulkhead("calm")
    reply = _admin.health_reply(_registry(2), STAFF)
    assert reply.body["status"] == "healthy"
    assert reply.body["bulkheads"] == {"total": 1, "saturated": []}
    assert set(reply.body) == {*HEALTH_KEYS, "bulkheads"}
    _saturated("db")
    reply = _admin.health_reply(_registry(2), STAFF)
    assert (reply.status, reply.body["status"]) == (200, "degraded")
    assert reply.body["bulkheads"] == {"total": 2, "saturated": ["db"]}
    assert reply.body["total"] == 2  # the breakers' keys keep their meaning
    summary = _admin.health_reply(_registry(2), ANONYMOUS, public_summary=True)
    assert summary.body["status"] == "degraded"
    assert set(summary.body) == {"status", "timestamp"}


@pytest.mark.parametrize(("closed", "opened", "status"), [(3, 1, "degraded"), (1, 2, "critical")])
def test_saturated_bulkheads_never_make_health_critical(
    named_bulkheads: Named[Bulkhead], closed: int, opened: int, status: str
) -> None:
    """Only breakers decide degraded-or-critical beyond healthy; the status code follows."""
    _saturated("db")
    _saturated("cache")
    reply = _admin.health_reply(_registry(closed, opened), STAFF)
    assert reply.body["status"] == status
    assert reply.status == (503 if status == "critical" else 200)
    assert reply.body["bulkheads"]["saturated"] == ["cache", "db"]


def test_breakers_reply_adds_the_bulkheads_stats(named_bulkheads: Named[Bulkhead]) -> None:
    """All stats: each named bulkhead's stats_dict under "bulkheads", by name."""
    limit = _saturated("db")
    reply = _admin.breakers_reply(_registry(1), STAFF)
    assert set(reply.body) == {"timestamp", "breakers", "bulkheads"}
    assert reply.body["bulkheads"] == {"db": limit.stats_dict()}
    assert reply.body["bulkheads"]["db"]["rejected"] == 1
    json.dumps(reply.body)  # JSON-ready


class _Reporter:
    """A named instance of another kind (a retry budget, a hedger)."""

    def __init__(self, name: str, *, broken: bool = False) -> None:
        self.name = name
        self.broken = broken

    def stats_dict(self) -> dict[str, object]:
        if self.broken:
            raise RuntimeError("cannot count")
        return {"name": self.name, "calls": 3}


@pytest.mark.parametrize(
    ("key", "module", "attribute"),
    [("retry_budgets", "stalwart.budget", "budgets"), ("hedgers", "stalwart.hedge", "hedgers")],
)
def test_other_named_kinds_appear_in_health_and_stats(
    monkeypatch: pytest.MonkeyPatch, key: str, module: str, attribute: str
) -> None:
    """Retry budgets and hedgers are counted in health and listed in stats."""
    named: Named[_Reporter] = Named(attribute)
    named.get("payments", {}, lambda: _Reporter("payments"))
    monkeypatch.setitem(sys.modules, module, SimpleNamespace(**{attribute: named}))
    health = _admin.health_reply(_registry(1), STAFF)
    assert health.body[key] == {"total": 1}
    assert health.body["status"] == "healthy"
    stats = _admin.breakers_reply(_registry(1), STAFF)
    assert stats.body[key] == {"payments": {"name": "payments", "calls": 3}}


def test_kinds_not_imported_or_empty_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """No module, or no instance: no key, and the pinned shapes stay as they were."""
    monkeypatch.delitem(sys.modules, "stalwart.budget", raising=False)
    monkeypatch.setitem(sys.modules, "stalwart.hedge", SimpleNamespace(hedgers=Named("hedger")))
    bulkheads.clear()
    assert _admin.named_stats() == {}
    assert set(_admin.health_reply(_registry(1), STAFF).body) == HEALTH_KEYS


def test_a_kind_whose_stats_fail_is_logged_and_left_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Health keeps answering when a kind's stats cannot be read."""
    named: Named[_Reporter] = Named("hedger")
    named.get("slow", {}, lambda: _Reporter("slow", broken=True))
    monkeypatch.setitem(sys.modules, "stalwart.hedge", SimpleNamespace(hedgers=named))
    with caplog.at_level(logging.ERROR, logger="stalwart.admin"):
        reply = _admin.health_reply(_registry(1), STAFF)
    assert reply.status == 200
    assert "hedgers" not in reply.body
    assert "stats of the hedgers could not be read" in caplog.text
