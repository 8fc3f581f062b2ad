"""The framework-free admin core: access decisions, health/stats shapes, operator actions."""

from __future__ import annotations

import datetime as dt
import json
import logging
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart import BreakerRegistry
from stalwart.contrib import _admin
from stalwart.contrib._admin import ANONYMOUS, Caller, Reply
from stalwart.contrib._reply import NEVER_CACHE

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
