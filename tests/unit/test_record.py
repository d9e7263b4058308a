"""Record behaves like the dataclasses it replaced on `skycap logs`' path."""

from __future__ import annotations

import pytest

from skycap.record import Record, fresh


class Point(Record):
    x: int
    y: int = 0
    tags: list[str] = fresh(list)
    cache: dict = fresh(dict, repr=False)
    counter = 0  # not annotated: a class attribute, not a field


def test_fields_by_position_or_name_with_defaults():
    point = Point(1, tags=["a"])
    assert (point.x, point.y, point.tags, point.cache) == (1, 0, ["a"], {})
    assert Point._fields == ("x", "y", "tags", "cache")


def test_a_fresh_default_is_made_for_each_record():
    first, second = Point(1), Point(1)
    first.tags.append("a")
    assert second.tags == []
    assert "tags" not in Point.__dict__


def test_equality_by_class_and_fields_and_unhashable():
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(1, 3)
    assert Point(1) != (1, 0, [], {})
    with pytest.raises(TypeError):
        hash(Point(1))


def test_repr_as_a_dataclass_without_hidden_fields():
    assert repr(Point(1, 2, ["a"])) == "Point(x=1, y=2, tags=['a'])"


@pytest.mark.parametrize("args, kwargs", [((), {}), ((1, 2, [], {}, 5), {}), ((1,), {"x": 2}), ((1,), {"z": 3})])
def test_wrong_arguments_are_a_type_error(args, kwargs):
    with pytest.raises(TypeError):
        Point(*args, **kwargs)
