"""skycap.flow.hooks, its pure parts: before/after refuse a hook on a step that does not exist (at
load, with the steps listed), the old hook names stand on real steps, `locked`, and the values old-style
hooks take by name."""

from __future__ import annotations

import pytest
from invoke import task

from skycap.errors import BadInput
from skycap.flow import hooks
from skycap.flow.steps import STEP_NAMES


def test_the_old_hook_names_stand_on_real_steps():
    assert hooks.ALIASES == {"before_deploy": ("before", "deploy:updating"),
                             "after_deploy": ("after", "deploy:finished"),
                             "deploy_failed": ("after", "deploy:failed"),
                             "before_rollback": ("before", "rollback:reverting"),
                             "after_rollback": ("after", "rollback:finished")}
    assert {step for _, step in hooks.ALIASES.values()} <= set(STEP_NAMES)


@task
def migrate(c):
    pass


@pytest.fixture
def registered(monkeypatch) -> list:
    """hooks._registered is module state that loading a tasks.py fills; each test starts it empty."""
    fresh: list = []
    monkeypatch.setattr(hooks, "_registered", fresh)
    return fresh


def test_hooks_register_by_task_or_dotted_name(registered):
    hooks.before("deploy:publishing", migrate, "db.seed")
    hooks.after("deploy:finished", migrate)
    assert registered == [("before", "deploy:publishing", migrate), ("before", "deploy:publishing", "db.seed"),
                          ("after", "deploy:finished", migrate)]


def test_a_hook_on_an_unknown_step_lists_the_known_ones(registered):
    with pytest.raises(BadInput) as info:
        hooks.before("deploy:migrate", migrate)
    assert info.value.message == "before('deploy:migrate', ...): there is no step 'deploy:migrate'"
    assert info.value.hint.startswith("the steps are: deploy:starting, deploy:started, ")
    assert registered == []


def test_a_hook_that_is_no_task_is_refused(registered):
    def plain(c):
        pass

    with pytest.raises(BadInput, match=r"a hook is an Invoke @task or the dotted name of one"):
        hooks.after("deploy:finished", plain)
    assert registered == []


def test_locked_marks_a_task_above_or_below_task():
    @hooks.locked
    @task
    def above(c):
        pass

    @task
    @hooks.locked
    def below(c):
        pass

    assert hooks.is_locked(above) and hooks.is_locked(below) and not hooks.is_locked(migrate)


def test_old_style_hooks_get_the_values_they_name():
    @task
    def notify(c, stage, rev, error=None):
        pass

    c = type("C", (), {"stage": "staging", "rev": "tip", "error": "boom", "node": "n"})()
    assert hooks.context_arguments(notify, c) == {"stage": "staging", "rev": "tip", "error": "boom"}
    assert hooks.context_arguments(migrate, c) == {}
