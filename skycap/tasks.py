"""What a deploy project's tasks.py imports from Skycap: hooks on the flow's steps, and `locked`.

    from invoke import task
    from skycap.tasks import before, after, locked

    @task
    def migrate(c):
        c.kubectl("apply", "-f", "jobs/migrate.yaml")

    before("deploy:publishing", migrate)

A hook is an ordinary Invoke task (or the dotted name of one in tasks.py, "db.migrate"); it receives
the stage context `c` (skycap.flow.hooks.StageContext). The steps are skycap.flow.steps.STEP_NAMES.
"""

from __future__ import annotations

from skycap.flow.hooks import after, before, locked
from skycap.flow.steps import STEP_NAMES

__all__ = ["before", "after", "locked", "STEP_NAMES"]
