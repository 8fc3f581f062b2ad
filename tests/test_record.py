"""`stalwart._record.Record`: `_replace` and `_asdict`, as a dataclass's `replace` and `asdict`."""

from __future__ import annotations

import copy
import dataclasses
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart._record import Record


class Point(Record):
    """A record whose ``__init__`` checks its input, as `BreakerConfig`'s does."""

    __slots__ = ("x", "y", "label")  # noqa: RUF023 - fields in order
    x: int
    y: int
    label: str

    def __init__(self, x: int, y: int = 0, *, label: str = "") -> None:
        if x < 0:
            raise ValueError(f"x must be at least 0, got x={x!r}")
        self._set(x, y, label)


def test_replace_changes_the_named_fields_only() -> None:
    """`_replace` returns a new record with the changes; the original is untouched."""
    point = Point(1, 2, label="a")
    moved = point._replace(y=5)
    assert moved == Point(1, 5, label="a")
    assert point == Point(1, 2, label="a")
    assert moved is not point
    assert type(moved) is Point
    assert point._replace(label="b").label == "b"  # a keyword-only field


def test_replace_goes_through_init_and_its_checks() -> None:
    """A change `__init__` refuses raises its `ValueError`, as `dataclasses.replace` does."""
    with pytest.raises(ValueError, match=r"x=-1"):
        Point(1)._replace(x=-1)


def test_replace_refuses_unknown_fields() -> None:
    """A name that is not a field is a `TypeError` naming it, and nothing is made."""
    with pytest.raises(TypeError, match=r"Point\._replace\(\) got unknown fields \['z'\]"):
        Point(1)._replace(z=3)


def test_asdict_lists_the_fields_in_order() -> None:
    """`_asdict` maps each field to its value, in ``__slots__`` order."""
    assert list(Point(1, 2, label="a")._asdict().items()) == [("x", 1), ("y", 2), ("label", "a")]


@pytest.mark.skipif(sys.version_info < (3, 13), reason="copy.replace is new in Python 3.13")
def test_copy_replace_uses_replace() -> None:  # pragma: no cover - Python 3.13+
    """`copy.replace` works on records as on dataclasses."""
    assert copy.replace(Point(1), y=2) == Point(1, 2)  # type: ignore[attr-defined]


def test_replace_is_also_the_copy_protocol_hook() -> None:
    """``__replace__`` (what `copy.replace` calls) does what `_replace` does."""
    assert Point(1).__replace__(y=4) == Point(1, 4)
    with pytest.raises(TypeError, match="unknown fields"):
        Point(1).__replace__(z=4)


def test_a_record_is_not_a_dataclass() -> None:
    """`dataclasses.replace` does not apply: records are made without `dataclasses`."""
    assert not dataclasses.is_dataclass(Point(1))


@given(
    x=st.integers(min_value=0),
    y=st.integers(),
    label=st.text(max_size=5),
    new_y=st.none() | st.integers(),
    new_label=st.none() | st.text(max_size=5),
)
def test_replace_equals_a_record_made_with_the_merged_fields(
    x: int, y: int, label: str, new_y: int | None, new_label: str | None
) -> None:
    """`_replace(**changes)` equals the record built from its fields updated by `changes`."""
    point = Point(x, y, label=label)
    changes = {
        name: value for name, value in (("y", new_y), ("label", new_label)) if value is not None
    }
    replaced = point._replace(**changes)
    fields = {**point._asdict(), **changes}
    assert replaced == Point(fields["x"], fields["y"], label=fields["label"])
    assert replaced._asdict() == fields
    assert point._replace() == point
    assert hash(point._replace()) == hash(point)
