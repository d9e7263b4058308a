"""skycap.flow.steps: the named steps of a deploy and a rollback in Capistrano's order, and which
step is the first change (a hook failing before it: nothing changed, exit 2)."""

from __future__ import annotations

from skycap.flow.steps import DEPLOY_STEPS, FIRST_CHANGE, ROLLBACK_STEPS, STEP_NAMES, STEPS


def test_the_deploy_and_rollback_steps_in_order():
    assert [step.name for step in DEPLOY_STEPS] == [
        "deploy:starting", "deploy:started", "deploy:updating", "deploy:updated", "deploy:publishing",
        "deploy:published", "deploy:finishing", "deploy:finished"]
    assert [step.name for step in ROLLBACK_STEPS] == [
        "rollback:starting", "rollback:reverting", "rollback:reverted", "rollback:publishing",
        "rollback:published", "rollback:finishing", "rollback:finished"]
    assert "deploy:failed" in STEP_NAMES and STEPS["deploy:failed"].body is None


def test_steps_ending_in_ed_are_points_to_hook_on_the_others_do_the_work():
    for step in STEPS.values():
        assert (step.body is None) == step.name.endswith("ed"), step.name
        assert step.does


def test_the_first_change_is_the_update():
    assert FIRST_CHANGE == "deploy:updating"
    assert STEP_NAMES.index(FIRST_CHANGE) == 2  # starting and started change nothing
