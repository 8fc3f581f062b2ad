"""The FastAPI admin router: auth matrix, replies identical to `_admin`'s, options, Redis."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
    UnauthenticatedUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware

from stalwart import BreakerRegistry
from stalwart.contrib import _admin
from stalwart.contrib.fastapi.router import MAX_ACTOR_LENGTH, admin_router, user_name

if TYPE_CHECKING:
    from fastapi.routing import APIRouter
    from starlette.requests import HTTPConnection

    from redis_support import PrivateRedis

STAFF = _admin.Caller(authenticated=True, staff=True, name="sam")
USERS = {"Bearer uma": "uma", "Bearer sam": "sam", "Bearer ada": "ada"}
READERS = {"sam", "ada"}
ADMINS = {"ada"}
READS = ["/ops/health", "/ops/breakers", "/ops/breakers/ok"]
ACTIONS = ["reset", "force-open", "disable"]
VOLATILE = {"timestamp", "opened_at", "last_failure_at"}  # clock readings, not shapes


async def current_user(authorization: str | None = Header(None)) -> str:
    """Who sends the request: 401 without a known bearer token."""
    user = USERS.get(authorization or "")
    if user is None:
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return user


async def require_reader(user: str = Depends(current_user)) -> str:
    """Staff and admins may read; others get 403."""
    if user not in READERS:
        raise HTTPException(403, "Forbidden")
    return user


async def require_admin(user: str = Depends(current_user)) -> str:
    """Admins alone may act; others get 403."""
    if user not in ADMINS:
        raise HTTPException(403, "Forbidden")
    return user


def _registry(*, opened: int = 0) -> BreakerRegistry:
    breakers = BreakerRegistry(log=False)
    breakers.get("ok")
    for i in range(opened):
        breakers.get(f"down{i}").force_open()
    return breakers


def _app(router: APIRouter, prefix: str = "/ops") -> FastAPI:
    app = FastAPI()
    app.include_router(router, prefix=prefix)
    return app


def _guarded(registry: BreakerRegistry, **options: Any) -> FastAPI:
    return _app(
        admin_router(
            registry,
            read_dependencies=[Depends(require_reader)],
            admin_dependencies=[Depends(require_admin)],
            **options,
        )
    )


async def _call(
    app: Any, method: str, path: str, who: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {} if who is None else {"Authorization": f"Bearer {who}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, headers=headers, **kwargs)


def _stable(value: Any) -> Any:
    """`value` without the members that read a clock."""
    if isinstance(value, dict):
        return {key: _stable(item) for key, item in value.items() if key not in VOLATILE}
    return value


def assert_same(response: httpx.Response, reply: _admin.Reply) -> None:
    """`response` is `reply` on the wire: status, type, headers, body (clocks aside)."""
    assert response.status_code == reply.status
    assert response.headers["content-type"] == reply.content_type
    for name, value in reply.headers:
        if name.lower() == "expires":
            assert response.headers[name]  # a date: now
        else:
            assert response.headers[name] == value
    body = response.json()
    assert set(body) == set(reply.body)
    assert _stable(body) == _stable(reply.body)


# -- auth matrix -------------------------------------------------------------------------

WHO = [None, "uma", "sam", "ada"]


@pytest.mark.anyio
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("path", READS)
async def test_read_routes_auth_matrix(who: str | None, path: str) -> None:
    """Reads: 401 without credentials, 403 for a user without the right, else 200."""
    response = await _call(_guarded(_registry()), "GET", path, who)
    expected = {None: 401, "uma": 403, "sam": 200, "ada": 200}[who]
    assert response.status_code == expected
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("path", READS)
async def test_read_routes_refuse_post(who: str | None, path: str) -> None:
    """POST on a read route gets the 405 problem with Allow, whoever asks."""
    response = await _call(_guarded(_registry()), "POST", path, who)
    assert_same(response, _admin.method_not_allowed("GET", "HEAD"))


@pytest.mark.anyio
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("action", ACTIONS)
async def test_action_routes_auth_matrix(who: str | None, action: str) -> None:
    """Actions: 401 without credentials, 403 for reader and user, 200 for the admin only."""
    breakers = _registry()
    response = await _call(_guarded(breakers), "POST", f"/ops/breakers/ok/{action}", who)
    expected = {None: 401, "uma": 403, "sam": 403, "ada": 200}[who]
    assert response.status_code == expected
    state = breakers.get("ok").state.value
    assert (state != "closed") == (expected == 200 and action != "reset")


@pytest.mark.anyio
@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("action", ACTIONS)
async def test_action_routes_refuse_get(who: str | None, action: str) -> None:
    """GET on an action gets the 405 problem with ``Allow: POST`` and changes nothing."""
    breakers = _registry()
    response = await _call(_guarded(breakers), "GET", f"/ops/breakers/ok/{action}", who)
    assert_same(response, _admin.method_not_allowed("POST"))
    assert breakers.get("ok").state.value == "closed"


# -- replies identical to _admin's (the Django views' replies) ---------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("opened", [0, 1, 2])
async def test_health_is_the_admin_reply(opened: int) -> None:
    """GET health is `_admin.health_reply`: healthy 200, degraded 200, critical 503."""
    breakers = _registry(opened=opened)
    response = await _call(_guarded(breakers), "GET", "/ops/health", "sam")
    reply = _admin.health_reply(breakers, STAFF)
    assert_same(response, reply)
    expected = {0: ("healthy", 200), 1: ("degraded", 200), 2: ("critical", 503)}[opened]
    assert (response.json()["status"], response.status_code) == expected


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 200, 599])
async def test_critical_status_is_configurable(status: int) -> None:
    """critical_status replaces 503 for a critical health, as `_admin` would reply."""
    breakers = _registry(opened=2)
    app = _guarded(breakers, critical_status=status)
    response = await _call(app, "GET", "/ops/health", "ada")
    assert_same(response, _admin.health_reply(breakers, STAFF, critical_status=status))
    assert response.status_code == status


@pytest.mark.anyio
async def test_breakers_and_one_breaker_are_the_admin_replies() -> None:
    """GET breakers and breakers/{name} are `_admin`'s replies, stats included."""
    breakers = _registry(opened=1)
    with pytest.raises(RuntimeError):
        breakers.get("ok").call(_fail)
    app = _guarded(breakers)
    assert_same(
        await _call(app, "GET", "/ops/breakers", "sam"), _admin.breakers_reply(breakers, STAFF)
    )
    for name in ("ok", "down0"):
        assert_same(
            await _call(app, "GET", f"/ops/breakers/{name}", "sam"),
            _admin.breaker_reply(breakers, name, STAFF),
        )


def _fail() -> None:
    raise RuntimeError("secret")


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["nope", "x" * 300, "sp ace"])
async def test_unknown_breaker_is_404(name: str) -> None:
    """An unknown name gets `_admin`'s 404 problem on read and action, creating nothing."""
    breakers = _registry()
    app = _guarded(breakers)
    read = await _call(app, "GET", f"/ops/breakers/{name}", "sam")
    assert_same(read, _admin.breaker_reply(breakers, name, STAFF))
    assert read.status_code == 404
    act = await _call(app, "POST", f"/ops/breakers/{name}/reset", "ada")
    assert_same(act, _admin.plan_action(breakers, name, "reset", STAFF))  # type: ignore[arg-type]
    assert breakers.names() == ["ok"]


@pytest.mark.anyio
@pytest.mark.parametrize("action", ACTIONS)
async def test_action_replies_are_the_admin_replies(action: str) -> None:
    """An action's reply is what `_admin.operator_action` replies on a twin registry."""
    breakers, twin = _registry(), _registry()
    response = await _call(_guarded(breakers), "POST", f"/ops/breakers/ok/{action}", "ada")
    assert_same(response, _admin.operator_action(_admin.plan_action(twin, "ok", action, STAFF)))
    assert breakers.get("ok").state == twin.get("ok").state


@pytest.mark.anyio
async def test_unknown_and_unserved_actions_are_404() -> None:
    """An action that does not exist, or is not served, gets `_admin`'s unknown-action 404."""
    breakers = _registry()
    app = _guarded(breakers, actions=["reset"])
    unknown = await _call(app, "POST", "/ops/breakers/ok/explode", "ada")
    assert_same(unknown, _admin.plan_action(breakers, "ok", "explode", STAFF))  # type: ignore[arg-type]
    unserved = await _call(app, "POST", "/ops/breakers/ok/force-open", "ada")
    expected = _admin.plan_action(breakers, "ok", "force-opem", STAFF)
    assert isinstance(expected, _admin.Reply)
    assert unserved.status_code == 404
    assert unserved.json() == {**expected.body, "action": "force-open"}
    assert breakers.get("ok").state.value == "closed"
    assert (await _call(app, "POST", "/ops/breakers/ok/reset", "ada")).status_code == 200


@pytest.mark.anyio
async def test_head_reads_answer_without_body() -> None:
    """HEAD on a read route answers the GET's status and headers, no body."""
    breakers = _registry(opened=2)
    response = await _call(_guarded(breakers), "HEAD", "/ops/health", "sam")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.content == b""


# -- public summary ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("opened", [0, 2])
@pytest.mark.parametrize("who", [None, "uma"])
async def test_public_summary_for_refused_callers(opened: int, who: str | None) -> None:
    """With public_summary, a refused caller gets `_admin`'s summary (503 when critical)."""
    breakers = _registry(opened=opened)
    app = _guarded(breakers, public_summary=True)
    response = await _call(app, "GET", "/ops/health", who)
    assert_same(response, _admin.health_reply(breakers, _admin.ANONYMOUS, public_summary=True))
    assert set(response.json()) == {"status", "timestamp"}
    assert response.status_code == (503 if opened else 200)
    # the other read routes stay refused
    assert (await _call(app, "GET", "/ops/breakers", who)).status_code in {401, 403}


@pytest.mark.anyio
async def test_public_summary_gives_readers_everything() -> None:
    """With public_summary, a caller the dependencies accept gets the whole health."""
    breakers = _registry(opened=1)
    response = await _call(_guarded(breakers, public_summary=True), "GET", "/ops/health", "sam")
    assert_same(response, _admin.health_reply(breakers, STAFF))


@pytest.mark.anyio
async def test_public_summary_leaves_other_errors_alone() -> None:
    """A read dependency failing otherwise than 401/403 is not turned into the summary."""

    async def teapot() -> None:
        raise HTTPException(418, "I'm a teapot")

    app = _app(
        admin_router(
            _registry(), read_dependencies=[Depends(teapot)], public_summary=True, actions=()
        )
    )
    response = await _call(app, "GET", "/ops/health")
    assert response.status_code == 418
    assert response.json() == {"detail": "I'm a teapot"}


# -- construction ------------------------------------------------------------------------


def test_actions_without_admin_dependencies_refused() -> None:
    """Serving actions with no admin dependency raises a ValueError naming the parameter."""
    missing: object
    for missing in (None, [], ()):
        with pytest.raises(ValueError, match="admin_dependencies") as info:
            admin_router(admin_dependencies=missing)
        assert "allow_unauthenticated_admin=True" in str(info.value)


@pytest.mark.anyio
async def test_no_actions_need_no_admin_dependencies() -> None:
    """actions=() serves reads alone: no admin dependency needed, action paths 404."""
    app = _app(admin_router(actions=()))
    response = await _call(app, "POST", "/ops/breakers/ok/reset")
    assert response.status_code == 404
    assert (await _call(app, "GET", "/ops/health")).status_code == 200


@pytest.mark.anyio
async def test_unauthenticated_admin_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    """allow_unauthenticated_admin=True serves actions to anyone, warning once at build."""
    breakers = _registry()
    with caplog.at_level(logging.WARNING, logger="stalwart.contrib.fastapi"):
        app = _app(admin_router(breakers, allow_unauthenticated_admin=True))
        for _ in range(3):
            response = await _call(app, "POST", "/ops/breakers/ok/force-open")
            assert response.status_code == 200
    warnings = [r for r in caplog.records if r.name == "stalwart.contrib.fastapi"]
    assert len(warnings) == 1
    assert "without authentication" in warnings[0].getMessage()
    assert breakers.get("ok").state.value == "forced_open"


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"registry": "default"}, TypeError, "registry must be a stalwart BreakerRegistry"),
        ({"read_dependencies": [require_reader]}, TypeError, "read_dependencies must hold"),
        ({"read_dependencies": "require_reader"}, TypeError, "read_dependencies must be"),
        ({"admin_dependencies": [require_admin]}, TypeError, "admin_dependencies must hold"),
        ({"admin_dependencies": 3}, TypeError, "admin_dependencies must be"),
        ({"actor": current_user}, TypeError, "actor must be Depends"),
        ({"allow_unauthenticated_admin": 1}, TypeError, "allow_unauthenticated_admin must be"),
        ({"critical_status": 600}, ValueError, "critical_status must be .* 200 to 599, got 600"),
        ({"critical_status": 199}, ValueError, "critical_status .* got 199"),
        ({"critical_status": True}, TypeError, "critical_status must be"),
        ({"critical_status": "503"}, TypeError, "critical_status .* got '503'"),
        ({"public_summary": "yes"}, TypeError, "public_summary must be True or False"),
        ({"actions": ["explode"]}, ValueError, "actions must hold only .* got 'explode'"),
        ({"actions": "reset"}, TypeError, "actions must be a collection"),
        ({"close_on_shutdown": None}, TypeError, "close_on_shutdown must be"),
    ],
)
def test_options_validated(options: dict[str, Any], error: type[Exception], words: str) -> None:
    """A bad option raises at construction, naming the parameter and the value."""
    options.setdefault("admin_dependencies", [Depends(require_admin)])
    with pytest.raises(error, match=words):
        admin_router(**options)


def test_openapi_documents_each_route_once() -> None:
    """The OpenAPI schema lists the four routes with one operation each (no duplicates)."""
    app = _guarded(_registry())
    paths = app.openapi()["paths"]
    assert {path: sorted(ops) for path, ops in paths.items()} == {
        "/ops/health": ["get"],
        "/ops/breakers": ["get"],
        "/ops/breakers/{name}": ["get"],
        "/ops/breakers/{name}/{action}": ["post"],
    }


# -- the actor ---------------------------------------------------------------------------


def _actors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.actor for r in caplog.records if r.name == "stalwart.admin"]  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_actor_from_a_dependency(caplog: pytest.LogCaptureFixture) -> None:
    """The actor dependency names who acted in the operator log."""
    router = admin_router(
        _registry(), admin_dependencies=[Depends(require_admin)], actor=Depends(current_user)
    )
    with caplog.at_level(logging.WARNING, logger="stalwart.admin"):
        response = await _call(_app(router), "POST", "/ops/breakers/ok/disable", "ada")
    assert response.status_code == 200
    assert _actors(caplog) == ["ada"]


@pytest.mark.anyio
async def test_actor_from_request_state(caplog: pytest.LogCaptureFixture) -> None:
    """Without an actor dependency, ``request.state.user`` names the actor."""

    async def login(request: Request, user: str = Depends(require_admin)) -> None:
        request.state.user = SimpleUser(user)

    router = admin_router(_registry(), admin_dependencies=[Depends(login)])
    with caplog.at_level(logging.WARNING, logger="stalwart.admin"):
        await _call(_app(router), "POST", "/ops/breakers/ok/reset", "ada")
    assert _actors(caplog) == ["ada"]


class _Bearer(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = USERS.get(conn.headers.get("authorization", ""))
        return None if user is None else (AuthCredentials(["authenticated"]), SimpleUser(user))


@pytest.mark.anyio
@pytest.mark.parametrize(("who", "actor"), [("ada", "ada"), (None, "unknown")])
async def test_actor_from_authentication_middleware(
    caplog: pytest.LogCaptureFixture, who: str | None, actor: str
) -> None:
    """Starlette's AuthenticationMiddleware user names the actor; an anonymous one does not."""
    app = _app(admin_router(_registry(), allow_unauthenticated_admin=True))
    app.add_middleware(AuthenticationMiddleware, backend=_Bearer())
    with caplog.at_level(logging.WARNING, logger="stalwart.admin"):
        response = await _call(app, "POST", "/ops/breakers/ok/reset", who)
    assert response.status_code == 200
    assert _actors(caplog) == [actor]


class _Account:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


@pytest.mark.parametrize(
    ("user", "name"),
    [
        (None, None),
        ("", None),
        ("ada", "ada"),
        (SimpleUser("sam"), "sam"),
        (UnauthenticatedUser(), None),
        (BaseUser(), None),  # its properties raise NotImplementedError
        (_Account(email="uma@example.org"), "uma@example.org"),
        (_Account(username="u", email="e"), "u"),
        (_Account(name=3), None),
        ("evil\nINFO forged line\x1b[0m", "evil?INFO forged line?[0m"),
        ("x" * 500, "x" * MAX_ACTOR_LENGTH),
    ],
)
def test_user_name(user: object, name: str | None) -> None:
    """user_name reads common user objects and never lets a name forge a log line."""
    assert user_name(user) == name


# -- mounting ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_router_under_nested_prefixes_and_mounted_app() -> None:
    """The router serves under include_router prefixes and in an app mounted at a path."""
    breakers = _registry(opened=1)
    inner = FastAPI()
    inner.include_router(admin_router(breakers, actions=()), prefix="/resilience")

    @inner.get("/where")
    async def where(request: Request) -> str:
        return str(request.url_for("stalwart_breaker", name="ok"))

    outer = FastAPI()
    outer.mount("/internal", inner)
    response = await _call(outer, "GET", "/internal/resilience/breakers/down0")
    assert_same(response, _admin.breaker_reply(breakers, "down0", STAFF))
    where_url = (await _call(outer, "GET", "/internal/where")).json()
    assert where_url == "http://test/internal/resilience/breakers/ok"
    assert (await _call(outer, "GET", "/resilience/health")).status_code == 404


# -- async Redis storage -------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_redis_read_does_not_block_the_loop(private_redis: PrivateRedis) -> None:
    """While Redis has not answered a health read, the same loop serves other requests."""
    from stalwart.contrib.redis import AsyncRedisStorage

    url = private_redis.url
    served = AsyncRedisStorage(url, prefix="router", socket_timeout=60.0)
    other = AsyncRedisStorage(url, prefix="router", socket_timeout=60.0)
    try:
        breakers = BreakerRegistry(storage=served, log=False)
        breakers.get("jira")
        breakers.get("splunk")
        elsewhere = BreakerRegistry(storage=other, log=False)
        await elsewhere.get("jira").force_open_async()  # another process opens it
        app = _app(admin_router(breakers, actions=()))

        @app.get("/ping")
        async def ping() -> str:
            return "pong"

        assert (await _call(app, "GET", "/ops/breakers/jira")).json()["state"] == "forced_open"
        pool: Any = served.client.connection_pool  # type: ignore[union-attr]
        results: dict[str, httpx.Response] = {}

        async def health() -> None:
            results["health"] = await _call(app, "GET", "/ops/health")

        private_redis.pause()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(health)
                with anyio.fail_after(10):
                    # Nothing signals the moment the read reaches Redis: yield until then.
                    while not pool._in_use_connections:
                        await anyio.lowlevel.checkpoint()
                    assert (await _call(app, "GET", "/ping")).json() == "pong"
                assert "health" not in results  # still waiting: the loop was free
                private_redis.resume()
        finally:
            private_redis.resume()
        response = results["health"]
        assert (response.status_code, response.json()["status"]) == (200, "degraded")
        assert response.json()["open"] == ["jira"]
    finally:
        await served.aclose()
        await other.aclose()
