"""The deploy project's own tasks.py: Invoke tasks run around the pipelines.

A hook is a task named before_deploy, after_deploy or deploy_failed (also before_rollback,
after_rollback). It receives the Invoke context and any of these keyword arguments it names:
stage, rev, node, tag, release, namespace, error.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from skycap.errors import BadInput, DeployFailed

HOOK_NAMES = ("before_deploy", "after_deploy", "deploy_failed", "before_rollback", "after_rollback")


class Hooks:
    def __init__(self, tasks_file: Path, log=None, screen=None):
        self.tasks_file = tasks_file
        self.log = log
        self.screen = screen
        self._tasks = None

    def _load(self) -> dict:
        if self._tasks is not None:
            return self._tasks
        self._tasks = {}
        if not self.tasks_file.is_file():
            return self._tasks
        import importlib.util

        from invoke import Collection

        spec = importlib.util.spec_from_file_location("skycap_project_tasks", self.tasks_file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the project's own code: report, don't crash
            raise BadInput(f"{self.tasks_file} cannot be loaded: {type(exc).__name__}: {exc}") from None
        collection = Collection.from_module(module)
        for name in HOOK_NAMES:
            task = collection.tasks.get(name) or collection.tasks.get(name.replace("_", "-"))
            if task is not None:
                self._tasks[name] = task
        return self._tasks

    def run(self, name: str, **values) -> bool:
        """Run the hook if the project defines it; DeployFailed when it fails."""
        task = self._load().get(name)
        if task is None:
            return False
        from invoke import Config, Context

        accepted = inspect.signature(task.body).parameters
        kwargs = {key: value for key, value in values.items() if key in accepted}
        if self.screen:
            self.screen.phase(f"hook {name} (tasks.py)")
        import contextlib
        import sys

        context = Context(config=Config(overrides={"run": {"hide": False, "echo": False}}))
        try:
            # stdout is for --output json alone: what hooks print goes with the human output
            with contextlib.redirect_stdout(sys.stderr):
                task(context, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's hook stops the pipeline
            if self.log:
                self.log.write("hook", f"{name} failed: {type(exc).__name__}: {exc}")
            raise DeployFailed(f"hook {name} in {self.tasks_file.name} failed: {type(exc).__name__}: "
                               f"{str(exc).strip()[:500]}") from None
        return True
