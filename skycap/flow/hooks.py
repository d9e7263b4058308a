"""The project's tasks.py, loaded with the hooks it puts on the flow's steps (before/after, which it
calls through skycap.tasks); the five old hook names (before_deploy, ...) still work, as the hooks
ALIASES puts on steps. Without a tasks.py, Invoke is not even imported: the steps carry their values
in a FlowValues; with one, in a StageContext (skycap/flow/context.py), the `c` of every hook and task.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from skycap.errors import BadInput, DeployFailed, SkycapError

ALIASES = {  # the hooks of tasks.py before the named steps: (when, step)
    "before_deploy": ("before", "deploy:updating"),
    "after_deploy": ("after", "deploy:finished"),
    "deploy_failed": ("after", "deploy:failed"),
    "before_rollback": ("before", "rollback:reverting"),
    "after_rollback": ("after", "rollback:finished"),
}
# What the old hooks received as keyword arguments, by parameter name; still given to a hook that names them.
CONTEXT_ARGUMENTS = ("stage", "rev", "node", "tag", "release", "namespace", "error")

_registered: list[tuple[str, str, object]] = []  # (when, step, task or dotted name), from the tasks.py loading


def before(step: str, *hooks) -> None:
    """Run each hook (an Invoke task, or the dotted name of one in tasks.py) before the step."""
    _register("before", step, hooks)


def after(step: str, *hooks) -> None:
    """Run each hook (an Invoke task, or the dotted name of one in tasks.py) after the step."""
    _register("after", step, hooks)


def locked(task):
    """Mark a task to run under the stage lock when run with `skycap task` (above or below @task)."""
    task.skycap_locked = True
    return task


def is_locked(task) -> bool:
    return bool(getattr(task, "skycap_locked", False) or getattr(task.body, "skycap_locked", False))


def _register(when: str, step: str, hooks) -> None:
    from invoke import Task

    from skycap.flow.steps import STEP_NAMES

    if step not in STEP_NAMES:
        raise BadInput(f"{when}({step!r}, ...): there is no step {step!r}", "the steps are: " + ", ".join(STEP_NAMES))
    for hook in hooks:
        if not isinstance(hook, (Task, str)):
            raise BadInput(f"{when}({step!r}, {hook!r}): a hook is an Invoke @task or the dotted name of one")
        _registered.append((when, step, hook))


class HookFailed(DeployFailed):
    """A task of tasks.py raised, or outlived its timeout (and was killed)."""


@dataclass
class Hook:
    name: str     # its dotted name in tasks.py (the task's own name if it is not in the collection)
    task: object  # the invoke.Task


class ProjectTasks:
    """tasks.py, loaded: its Invoke collection, the hooks it put on the steps, its Invoke configuration."""

    def __init__(self, path: Path, collection=None):
        self.path = path
        self.collection = collection  # the invoke.Collection of tasks.py; None without a tasks.py
        self.hooks: dict[tuple[str, str], list[Hook]] = {}
        self._config = None

    @classmethod
    def load(cls, path: Path) -> ProjectTasks:
        """The project's tasks.py (none: no tasks); BadInput (exit 2) naming the file when it cannot be used."""
        if not path.is_file():
            return cls(path)
        from invoke import Collection, Task

        module, registered = _import(path)
        # Names as written in Python (before_deploy, db.migrate_all); find() takes Invoke's dashed ones too.
        collection = Collection.from_module(module, loaded_from=str(path.parent), auto_dash_names=False)
        tasks = cls(path, collection)
        for name, (when, step) in ALIASES.items():
            found = tasks.find(name)
            if found is not None:
                registered.append((when, step, found))
        for when, step, hook in registered:
            task = hook if isinstance(hook, Task) else tasks.get(hook, f"{when}({step!r}, {hook!r})")
            tasks.hooks.setdefault((when, step), []).append(Hook(tasks.name_of(task), task))
        return tasks

    @property
    def names(self) -> list[str]:
        return sorted(self.collection.task_names) if self.collection is not None else []

    def find(self, name: str):
        """The task of that dotted name (or with dashes for underscores, as `inv` names them), or None."""
        if self.collection is None:
            return None
        for candidate in (name, name.replace("-", "_")):
            try:
                return self.collection[candidate]
            except (KeyError, ValueError):
                continue
        return None

    def get(self, name: str, what: str = ""):
        task = self.find(name)
        if task is None:
            raise BadInput(f"{what + ': ' if what else ''}{self.path} has no task {name!r}",
                           f"its tasks: {', '.join(self.names) or 'none'}")
        return task

    def name_of(self, task) -> str:
        for name in self.collection.task_names:
            if self.collection[name] is task:
                return name
        return task.name

    def config(self):
        """The project's Invoke configuration, loaded as `inv` would: system, user, invoke.yaml, INVOKE_* variables."""
        if self._config is None:
            from invoke import Config

            from skycap.flow.context import KillableLocal

            config = Config(project_location=str(self.path.parent))
            config.load_collection(self.collection.configuration())
            config.load_project()
            config.load_shell_env()
            config.runners.local = KillableLocal
            config.run.in_stream = False  # tasks run unattended (hooks in CI): they read no terminal
            self._config = config
        return self._config

    def context(self, session, **known):
        """The `c` of the steps and hooks: a StageContext, or without a tasks.py only its FlowValues."""
        if self.collection is None:
            c = FlowValues(session, self)
        else:
            from skycap.flow.context import StageContext

            c = StageContext(session, self, self.config().clone())
        for key, value in known.items():
            setattr(c, key, value)
        return c

    def run_hooks(self, when: str, step: str, c, *, tolerate: bool = False) -> None:
        for hook in self.hooks.get((when, step), ()):
            from skycap.flow.context import run_task

            try:
                run_task(c, hook.name, hook.task, context_arguments(hook.task, c), what=f"hook {hook.name}",
                         where=f"{when} {step}")
            except HookFailed as exc:
                if not tolerate:
                    raise
                c.session.run.screen.warn(f"{exc.message} (reported; the outcome stays as recorded)")
                c.hook_errors.append(exc.message)


def _import(path: Path):
    """tasks.py as a module, and the hooks it registered while it was imported."""
    spec = importlib.util.spec_from_file_location("skycap_project_tasks", path)
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as Invoke's loader does: tasks.py may import its neighbours
    _registered.clear()
    try:
        spec.loader.exec_module(module)
    except SkycapError as exc:
        raise BadInput(f"{path}{_line_in(path, exc)}: {exc.message}", exc.hint) from None
    except BaseException as exc:  # noqa: BLE001 - the project's own code, even a sys.exit: report, don't crash
        raise BadInput(f"{path} cannot be loaded{_line_in(path, exc)}: {type(exc).__name__}: {exc}",
                       f"run `python {path}` to see the whole error") from None
    finally:
        registered = list(_registered)
        _registered.clear()
    return module, registered


def _line_in(path: Path, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f", line {exc.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == str(path)]
    return f", line {lines[-1]}" if lines else ""


class FlowValues:
    """What the steps know of the stage and the release (None where not known yet), and their flow."""

    stage = namespace = release = rev = node = tag = target = error = step = None
    session = project_tasks = flow = hook_errors = None

    def __init__(self, session, project_tasks: ProjectTasks):
        self.session = session
        self.project_tasks = project_tasks
        self.stage = session.stage.name
        self.namespace = session.stage.namespace
        self.hook_errors = []


def context_arguments(task, c) -> dict:
    """The values the old hooks took by name (stage, rev, ...), for the parameters the task has."""
    accepted = inspect.signature(task.body).parameters
    return {name: getattr(c, name) for name in CONTEXT_ARGUMENTS if name in accepted}


