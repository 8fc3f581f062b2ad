"""The Django app: STALWART applied to the default registry, and its system checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import stalwart
from stalwart.breaker import CircuitBreaker, MemoryStorage
from stalwart.contrib.django import apps as stalwart_apps
from stalwart.contrib.django import checks
from stalwart.contrib.redis import RedisStorage

if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis
    from pytest_django.fixtures import SettingsWrapper

TESTS = Path(__file__).parent
FACTORY_CALLS: list[int] = []


def storage_factory() -> MemoryStorage:
    """A STORAGE factory named by dotted path in a test."""
    FACTORY_CALLS.append(1)
    return MemoryStorage()


@pytest.fixture(autouse=True)
def _registry_guard() -> Iterator[None]:
    """The default registry's storage and defaults are as before after every test."""
    registry = stalwart.registry
    storage, defaults = registry.storage, registry.defaults
    yield
    stalwart_apps.apply_settings()  # the settings as restored: the test settings
    assert registry.storage is storage
    assert registry.defaults == defaults


def _ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def _all_checks() -> list[Any]:
    return checks.check_settings() + checks.check_redis()


# -- settings applied -------------------------------------------------------------------


def test_settings_configure_the_registry_and_make_the_breakers(
    settings: SettingsWrapper,
) -> None:
    """DEFAULTS become the registry's defaults and BREAKERS exist before any call."""
    settings.STALWART = {
        "DEFAULTS": {"failure_threshold": 2, "recovery_timeout": 9},
        "BREAKERS": {"jira": {}, "splunk": {"failure_threshold": 7}, "intune": None},
    }
    registry = stalwart.registry
    assert registry.names() == ["intune", "jira", "splunk"]
    assert registry.get("jira").config.failure_threshold == 2
    assert registry.get("splunk").config.failure_threshold == 7
    assert registry.get("splunk").config.recovery_timeout == 9
    assert registry.health().total == 3
    assert stalwart.circuit_breaker("later").config.failure_threshold == 2


def test_override_settings_takes_effect_and_is_undone() -> None:
    """Inside override_settings the new STALWART applies; after it, the old one again."""
    registry = stalwart.registry
    with override_settings(STALWART={"BREAKERS": {"a": {"failure_threshold": 4}}}):
        assert registry.get("a").config.failure_threshold == 4
        with override_settings(STALWART={"BREAKERS": {"a": {"failure_threshold": 6}}}):
            assert registry.get("a").config.failure_threshold == 6
        assert registry.get("a").config.failure_threshold == 4
    assert "a" not in registry


def test_ready_makes_no_network_call_and_no_query(settings: SettingsWrapper) -> None:
    """ready() with a Redis URL connects to nothing (and queries nothing: the DB is blocked)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        settings.STALWART = {
            "STORAGE": f"redis://127.0.0.1:{port}/0",
            "BREAKERS": {"jira": {}, "splunk": {}},
        }
        django_apps.get_app_config("stalwart").ready()  # no django_db mark: a query fails
        assert isinstance(stalwart.registry.storage, RedisStorage)
        assert stalwart.registry.get("jira").storage is stalwart.registry.storage
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_storage_dict_passes_its_options_to_redis_storage(settings: SettingsWrapper) -> None:
    """STORAGE {"URL", "OPTIONS"} makes a RedisStorage with those options."""
    settings.STALWART = {"STORAGE": {"URL": "redis://127.0.0.1:1/0", "OPTIONS": {"prefix": "b"}}}
    storage = stalwart.registry.storage
    assert isinstance(storage, RedisStorage)
    assert storage.prefix == "b"


@pytest.mark.parametrize(
    "path",
    ["stalwart.breaker.MemoryStorage", "test_contrib_django_app.storage_factory"],
)
def test_storage_dotted_path_to_a_class_or_factory(settings: SettingsWrapper, path: str) -> None:
    """A dotted path to a storage class or factory is called for the storage."""
    before = len(FACTORY_CALLS)
    settings.STALWART = {"STORAGE": path}
    assert isinstance(stalwart.registry.storage, MemoryStorage)
    assert len(FACTORY_CALLS) == before + (path.endswith("factory"))


def test_invalid_settings_do_not_stop_the_app(settings: SettingsWrapper) -> None:
    """Bad DEFAULTS, STORAGE and one bad breaker are skipped (checks report them)."""
    settings.STALWART = {
        "DEFAULTS": {"failure_threshold": 0},
        "STORAGE": "no.such.module.Storage",
        "BREAKERS": {"bad": {"window": -1}, "good": {}},
    }
    assert stalwart.registry.names() == ["good"]


# -- system checks ----------------------------------------------------------------------


def test_valid_settings_pass_every_check(settings: SettingsWrapper) -> None:
    """A full, valid STALWART gives no message."""
    settings.STALWART = {
        "DEFAULTS": {"failure_threshold": 5, "window": 60},
        "BREAKERS": {"jira": {"failure_rate": 0.5, "minimum_calls": 10}},
        "STORAGE": "stalwart.breaker.MemoryStorage",
        "HEALTH_ACCESS": "myapp.view_health",
        "PUBLIC_SUMMARY": True,
        "ADMIN_ACCESS": "superuser",
        "TASK_STATUS_ACCESS": "public",
        "CRITICAL_STATUS": 500,
        "REQUEST_DEADLINE": 30,
        "DEADLINE_HEADER": "X-Request-Timeout",
        "MAX_REQUEST_DEADLINE": 60.0,
        "CORRELATION_HEADER": "X-Request-ID",
        "CELERY_APP": "proj.celery.app",
    }
    assert _all_checks() == []


def test_e001_stalwart_not_a_dict(settings: SettingsWrapper) -> None:
    """stalwart.E001: STALWART must be a dict."""
    settings.STALWART = ["jira"]
    assert _ids(_all_checks()) == ["stalwart.E001"]


def test_e002_unknown_key(settings: SettingsWrapper) -> None:
    """stalwart.E002: an unknown key is named."""
    settings.STALWART = {"BREAKER": {}}
    (message,) = checks.check_settings()
    assert message.id == "stalwart.E002"
    assert "'BREAKER'" in message.msg


@pytest.mark.parametrize(
    ("defaults", "named"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"recovery_timeout": "soon"}, "recovery_timeout"),
        ({"treshold": 3}, "treshold"),
        ("fast", "'fast'"),
    ],
)
def test_e003_bad_defaults(settings: SettingsWrapper, defaults: object, named: str) -> None:
    """stalwart.E003: bad DEFAULTS, naming the option and the value."""
    settings.STALWART = {"DEFAULTS": defaults}
    (message,) = checks.check_settings()
    assert message.id == "stalwart.E003"
    assert named in message.msg


@pytest.mark.parametrize(
    ("breakers", "named"),
    [
        ({"jira": {"window": -1}}, "-1"),
        ({"jira": {"failure_rate": 2}}, "failure_rate"),
        ({"jira": {"storage": "x"}}, "storage"),
        ({"jira": 5}, "5"),
        ({"": {}}, "name"),
        (["jira"], "['jira']"),
    ],
)
def test_e004_bad_breakers(settings: SettingsWrapper, breakers: object, named: str) -> None:
    """stalwart.E004: a bad breaker (option, value or name), named."""
    settings.STALWART = {"BREAKERS": breakers}
    (message,) = checks.check_settings()
    assert message.id == "stalwart.E004"
    assert named in message.msg


@pytest.mark.parametrize(
    "storage",
    [
        42,
        "no.such.module.Storage",
        "stalwart.contrib.django.conf.SETTING",
        {"URL": "http://127.0.0.1/"},
        {"URL": "redis://127.0.0.1/0", "PREFIX": "x"},
        {"URL": "redis://127.0.0.1/0", "OPTIONS": {"prefix": "{bad}"}},
    ],
)
def test_e005_bad_storage(settings: SettingsWrapper, storage: object) -> None:
    """stalwart.E005: STORAGE that names no storage."""
    settings.STALWART = {"STORAGE": storage}
    assert _ids(checks.check_settings()) == ["stalwart.E005"]


@pytest.mark.parametrize(
    "values",
    [{"HEALTH_ACCESS": "staf"}, {"ADMIN_ACCESS": "public"}, {"TASK_STATUS_ACCESS": 1}],
)
def test_e006_bad_access(settings: SettingsWrapper, values: dict[str, object]) -> None:
    """stalwart.E006: an access value that is no level nor permission; admin never public."""
    settings.STALWART = values
    (message,) = checks.check_settings()
    assert message.id == "stalwart.E006"
    assert next(iter(values)) in message.msg


def test_e007_public_summary_not_a_bool(settings: SettingsWrapper) -> None:
    """stalwart.E007: PUBLIC_SUMMARY must be True or False."""
    settings.STALWART = {"PUBLIC_SUMMARY": "yes"}
    assert _ids(checks.check_settings()) == ["stalwart.E007"]


@pytest.mark.parametrize("status", [99, 600, "503", True, None])
def test_e008_bad_critical_status(settings: SettingsWrapper, status: object) -> None:
    """stalwart.E008: CRITICAL_STATUS must be an HTTP status code."""
    settings.STALWART = {"CRITICAL_STATUS": status}
    (message,) = checks.check_settings()
    assert message.id == "stalwart.E008"
    assert repr(status) in message.msg


@pytest.mark.parametrize(
    "values",
    [
        {"REQUEST_DEADLINE": -1},
        {"REQUEST_DEADLINE": "30s"},
        {"MAX_REQUEST_DEADLINE": None},
        {"DEADLINE_HEADER": "X Timeout"},
        {"CORRELATION_HEADER": ""},
    ],
)
def test_e009_bad_middleware_values(settings: SettingsWrapper, values: dict[str, object]) -> None:
    """stalwart.E009: a bad middleware value, named."""
    settings.STALWART = values
    (message,) = checks.check_settings()
    assert message.id == "stalwart.E009"
    assert next(iter(values)) in message.msg


def test_e010_bad_celery_app(settings: SettingsWrapper) -> None:
    """stalwart.E010: CELERY_APP must be a dotted path."""
    settings.STALWART = {"CELERY_APP": 3}
    assert _ids(checks.check_settings()) == ["stalwart.E010"]


def test_w001_unreachable_redis(settings: SettingsWrapper) -> None:
    """stalwart.W001: nothing answers at the Redis URL (the password is not shown)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        settings.STALWART = {"STORAGE": f"redis://user:s3cret@127.0.0.1:{port}/0"}
        (message,) = checks.check_redis()
    assert message.id == "stalwart.W001"
    assert "s3cret" not in message.msg
    assert str(port) in message.msg


@pytest.mark.redis
def test_w001_not_reported_when_redis_answers(settings: SettingsWrapper) -> None:
    """The Redis check is silent when Redis answers PING."""
    settings.STALWART = {"STORAGE": "redis://127.0.0.1:6379/0"}
    assert checks.check_redis() == []


def test_w002_breakers_with_another_storage(settings: SettingsWrapper) -> None:
    """stalwart.W002: a breaker of the registry keeps another storage than STORAGE."""
    settings.STALWART = {"STORAGE": "stalwart.breaker.MemoryStorage"}
    own = CircuitBreaker("own", storage=MemoryStorage(), log=False)
    (message,) = checks.check_settings()
    assert message.id == "stalwart.W002"
    assert "'own'" in message.msg
    del own


def test_manage_py_check_fails_on_errors(settings: SettingsWrapper) -> None:
    """manage.py check runs the checks: an error stops it."""
    settings.STALWART = {"DEFAULTS": {"failure_threshold": -3}}
    with pytest.raises(SystemCheckError, match=r"stalwart\.E003"):
        call_command("check")


# -- shared state across processes ------------------------------------------------------


def _settings_module(tmp_path: Path, stalwart_setting: dict[str, Any]) -> dict[str, str]:
    (tmp_path / "shared_settings.py").write_text(
        f"from django_settings import *  # noqa\nSTALWART = {stalwart_setting!r}\n"
    )
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "shared_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)]),
    }


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", "stalwart", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.redis
def test_redis_state_is_shared_with_another_process(
    settings: SettingsWrapper, tmp_path: Path, prefix: str, client: redis.Redis
) -> None:
    """A breaker opened here reads as open in another process, and its reset there shows here."""
    shared = {
        "STORAGE": {"URL": "redis://127.0.0.1:6379/0", "OPTIONS": {"prefix": prefix}},
        "BREAKERS": {"jira": {"failure_threshold": 2}},
    }
    settings.STALWART = shared
    jira = stalwart.registry.get("jira")
    jira.force_open()
    env = _settings_module(tmp_path, shared)
    seen = json.loads(_manage(env, "breakers", "--json"))
    assert seen["breakers"]["jira"]["state"] == "forced_open"
    assert seen["health"]["status"] == "critical"
    assert _manage(env, "reset", "jira").strip() == "jira: closed"
    assert jira.state.value == "closed"
    assert client.exists(f"{prefix}:{{jira}}:state")
