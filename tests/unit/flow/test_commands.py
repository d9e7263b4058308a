"""skycap.flow.commands.task_arguments: `skycap task STAGE NAME KEY=VALUE ...` words as the task's
keyword arguments, of the type of each parameter's default; what the task does not take is bad input."""

from __future__ import annotations

import pytest
from invoke import task

from skycap.errors import BadInput
from skycap.flow.commands import task_arguments


@task
def seed(c, table, rows=10, ratio=0.5, dry_run=False, note="none"):
    """A task with one required argument and one default of each type."""


@task
def bare(c):
    pass


def test_values_take_the_type_of_the_default():
    assert task_arguments("db.seed", seed, {"table": "users", "rows": "3", "ratio": "2", "dry_run": "yes",
                                            "note": "7"}) == {"table": "users", "rows": 3, "ratio": 2.0,
                                                              "dry_run": True, "note": "7"}


@pytest.mark.parametrize("text, value", [("true", True), ("YES", True), ("1", True), ("on", True),
                                         ("false", False), ("No", False), ("0", False), ("off", False)])
def test_booleans(text, value):
    assert task_arguments("seed", seed, {"table": "t", "dry_run": text})["dry_run"] is value


@pytest.mark.parametrize("values, message", [
    ({"table": "t", "dry_run": "maybe"}, "task seed: dry_run=maybe is not true or false"),
    ({"table": "t", "rows": "many"}, "task seed: rows=many is not a whole number"),
    ({"table": "t", "rows": "1.5"}, "task seed: rows=1.5 is not a whole number"),
    ({"table": "t", "ratio": "half"}, "task seed: ratio=half is not a number"),
])
def test_a_value_of_the_wrong_type_is_refused(values, message):
    with pytest.raises(BadInput) as info:
        task_arguments("seed", seed, values)
    assert info.value.message == message


def test_an_argument_the_task_does_not_take_lists_those_it_does():
    with pytest.raises(BadInput) as info:
        task_arguments("seed", seed, {"table": "t", "c": "x"})  # the context is no argument
    assert info.value.message == "task seed takes no argument c="
    assert info.value.hint == "it takes: table=, rows=, ratio=, dry_run=, note="
    with pytest.raises(BadInput) as info:
        task_arguments("bare", bare, {"x": "1"})
    assert info.value.hint == "it takes: no arguments"


def test_a_required_argument_must_be_given():
    with pytest.raises(BadInput) as info:
        task_arguments("seed", seed, {"rows": "1"})
    assert info.value.message == "task seed needs table="
    assert task_arguments("bare", bare, {}) == {}
