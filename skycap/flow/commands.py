"""`skycap task STAGE NAME [KEY=VALUE ...]` and `skycap tasks [STAGE]`: the project's tasks run against
a stage, and the flow's steps listed with their hooks (as `cap -T` does)."""

from __future__ import annotations

import inspect

from skycap.cluster.errors import call_api
from skycap.errors import BadInput
from skycap.flow.hooks import ProjectTasks, is_locked
from skycap.session import lock_ttl, open_stage


def task(run, stage_name: str, name: str, values: dict[str, str]) -> int:
    session = open_stage(run, stage_name)
    tasks = ProjectTasks.load(session.stage.project.tasks_file)
    found = tasks.find(name)
    if found is None:
        known = ", ".join(tasks.names) or "none"
        raise BadInput(f"unknown task {name!r}", f"the tasks of {tasks.path}: {known}")
    arguments = task_arguments(name, found, values)
    c = tasks.context(session)
    lock = None
    if is_locked(found):
        from skycap.cluster.lock import StageLock

        lock = StageLock(session.api, session.stage.namespace, stage_name, purpose=f"task {name}", ttl=lock_ttl(),
                         notice=run.screen.line)
        call_api(session, "lock", lock.acquire)
        session.lock = lock
    from skycap.flow.context import run_task

    try:
        run_task(c, name, found, arguments, what=f"task {name}")
    finally:
        if lock is not None:
            lock.release()
    run.screen.ok(f"task {name} done on {stage_name}")
    return 0


def task_arguments(name: str, task, values: dict[str, str]) -> dict:
    """KEY=VALUE words as the task's keyword arguments, turned into the type of the parameter's default."""
    parameters = dict(list(inspect.signature(task.body).parameters.items())[1:])  # after the context
    takes = ", ".join(f"{key}=" for key in parameters) or "no arguments"
    arguments = {}
    for key, text in values.items():
        if key not in parameters:
            raise BadInput(f"task {name} takes no argument {key}=", f"it takes: {takes}")
        arguments[key] = _typed(name, key, text, parameters[key].default)
    missing = [key for key, p in parameters.items() if p.default is inspect.Parameter.empty and key not in values]
    if missing:
        raise BadInput(f"task {name} needs {', '.join(f'{key}=' for key in missing)}", f"it takes: {takes}")
    return arguments


def _typed(name: str, key: str, text: str, default):
    if isinstance(default, bool):
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise BadInput(f"task {name}: {key}={text} is not true or false")
    if isinstance(default, (int, float)):
        try:
            return type(default)(text)
        except ValueError:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise BadInput(f"task {name}: {key}={text} is not {kind}") from None
    return text


def list_tasks(run, stage_name: str | None) -> int:
    from skycap.flow.steps import STEPS

    project = run.project
    if stage_name is not None:
        project.load_stage(stage_name)  # a stage that does not load is said before anything is listed
    tasks = ProjectTasks.load(project.tasks_file)
    width = max(len(name) for name in [*STEPS, *tasks.names])
    print("The flow's steps (hooks from tasks.py under each):")
    for step in STEPS.values():
        print(f"  {step.name:<{width}}  {step.does}")
        for when in ("before", "after"):
            for hook in tasks.hooks.get((when, step.name), ()):
                print(f"  {'':<{width}}  {when}: {hook.name}")
    names = tasks.names
    print(f"\nThe project's tasks ({tasks.path}; run one: skycap task STAGE NAME [KEY=VALUE ...]):")
    for name in names:
        found = tasks.collection[name]
        doc = (inspect.getdoc(found.body) or "").split("\n")[0]
        print(f"  {name:<{width}}  {doc}{'  (locked)' if is_locked(found) else ''}".rstrip())
    if not names:
        print("  none")
    return 0
