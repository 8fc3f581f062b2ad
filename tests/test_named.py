"""Tests for stalwart._named: one instance per name, for the strategies shared by name."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stalwart._named import Named


class Thing:
    def __init__(self, name: str, size: int = 1, clock: Any = None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.name = name
        self.size = size
        self.clock = clock

    def options(self) -> dict[str, Any]:
        return {"size": self.size}

    def stats_dict(self) -> dict[str, Any]:
        return {"size": self.size}


def test_the_first_get_builds_and_later_ones_share() -> None:
    things: Named[Thing] = Named("thing")
    built: list[Thing] = []

    def build() -> Thing:
        built.append(Thing("a", 1))
        return built[-1]

    first = things.get("a", {"size": 1}, build)
    assert things.get("a", {"size": 1}, build) is first
    assert things.get("a", {}, build) is first  # no options: whatever is there
    assert built == [first]
    assert "a" in things
    assert len(things) == 1
    assert list(things) == [first]
    assert things.find("a") is first
    assert things.find("b") is None
    assert "b" not in things  # find never creates


def test_other_options_name_each_difference() -> None:
    things: Named[Thing] = Named("thing")
    things.get("a", {"size": 1, "colour": "red"}, lambda: Thing("a", 1))
    with pytest.raises(ValueError, match=r"thing 'a' already exists") as caught:
        things.get("a", {"size": 2, "colour": "red"}, lambda: Thing("a", 2))
    assert "size=1 (asked 2)" in str(caught.value)
    assert "colour" not in str(caught.value)


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_must_be_a_non_empty_string(name: Any) -> None:
    things: Named[Thing] = Named("thing")
    with pytest.raises(ValueError, match=r"thing name must be a non-empty string"):
        things.get(name, {"size": 1}, lambda: Thing("x", 1))


def test_stats_by_sorted_name_remove_and_clear() -> None:
    things: Named[Thing] = Named("thing")
    for name, size in (("b", 2), ("a", 1)):
        things.get(name, {"size": size}, lambda name=name, size=size: Thing(name, size))
    assert list(things.stats()) == ["a", "b"]
    assert things.stats()["b"] == {"size": 2}
    assert things.names() == ["a", "b"]
    assert things.remove("a").name == "a"
    with pytest.raises(KeyError):
        things.remove("a")
    things.clear()
    assert len(things) == 0
    assert repr(things) == "Named('thing', [])"


def test_threads_racing_on_one_name_share_one_instance() -> None:
    things: Named[Thing] = Named("thing")
    start = threading.Barrier(8)
    got: list[Thing] = []
    lock = threading.Lock()

    def race() -> None:
        start.wait()
        thing = things.get("shared", {"size": 1}, lambda: Thing("shared", 1))
        with lock:
            got.append(thing)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(got) == 8
    assert all(thing is got[0] for thing in got)


ALLOWED = frozenset({"size", "clock"})


def test_share_builds_once_and_compares_every_option_at_its_default() -> None:
    things: Named[Thing] = Named("thing")
    made = things.share("a", {}, Thing, allowed=ALLOWED, spelling="@thing")
    assert made.size == 1
    assert things.share("a", {"size": 1}, Thing, allowed=ALLOWED, spelling="@thing") is made
    assert things.share("a", {}, Thing, allowed=ALLOWED, spelling="@thing") is made
    with pytest.raises(ValueError, match=r"size=1 \(asked 2\)"):
        things.share("a", {"size": 2}, Thing, allowed=ALLOWED, spelling="@thing")
    clock = object()
    with pytest.raises(ValueError, match=r"clock=None \(asked <object"):
        things.share("a", {"clock": clock}, Thing, allowed=ALLOWED, spelling="@thing")


def test_share_refuses_unknown_options_bad_values_and_bare_decorators() -> None:
    things: Named[Thing] = Named("thing")
    with pytest.raises(TypeError, match="@thing\\(\\) got unknown options: colour; the options"):
        things.share("a", {"colour": "red"}, Thing, allowed=ALLOWED, spelling="@thing")
    with pytest.raises(ValueError, match="size must be >= 1"):
        things.share("a", {"size": 0}, Thing, allowed=ALLOWED, spelling="@thing")
    bare = r"@thing takes the thing's name first: write @thing\(\"name\"\)"
    with pytest.raises(TypeError, match=bare):
        things.share(len, {}, Thing, allowed=ALLOWED, spelling="@thing")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        things.share("", {}, Thing, allowed=ALLOWED, spelling="@thing")
    assert len(things) == 0
