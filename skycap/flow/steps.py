"""What a deploy and a rollback do, in order: the one list of their steps, with Capistrano's names.

Each step is an Invoke task of the collection that collection() makes (deploy.starting, ...); its
body is a method of the running Deploy (skycap/flow/deploy.py) or Rollback (skycap/flow/rollback.py), reached
as `c.flow`. Steps without a body are points to hook on. run_step() runs a step's before hooks, its
body, its after hooks; it calls the body itself, so that a project without tasks.py never imports Invoke.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    name: str           # "deploy:updating"
    does: str           # one line, for `skycap tasks` and the README
    body: str | None    # the method of c.flow that does it; None: a point to hook on


DEPLOY_STEPS = (
    Step("deploy:starting", "resolve the revision, take the stage lock, render, check the images, dry-run the "
         "manifests on the server, reach every VM host; nothing changes before it ends", "starting"),
    Step("deploy:started", "every check passed, the lock is held", None),
    Step("deploy:updating", "record the release as pending; upload and unpack the VM archive on every host; "
         "apply ConfigMaps, Secrets and RBAC, then everything else (with vm_order: before, the hosts are "
         "switched, restarted and checked before the apply)", "updating"),
    Step("deploy:updated", "the release is in the cluster and on the hosts", None),
    Step("deploy:publishing", "watch the rollout; switch the VM hosts, restart, check", "publishing"),
    Step("deploy:published", "the release runs everywhere", None),
    Step("deploy:finishing", "record the release as deployed, prune what the previous release applied and "
         "this one does not, trim the ledger", "finishing"),
    Step("deploy:finished", "done; the lock is released after it", None),
)
FAILED_STEP = Step("deploy:failed", "the deploy failed: after the release is recorded failed and the "
                   "automatic rollback (its own rollback:* steps) ran", None)
ROLLBACK_STEPS = (
    Step("rollback:starting", "take the stage lock, choose the release to go back to (the automatic rollback "
         "of a failed deploy holds the lock already)", "starting"),
    Step("rollback:reverting", "record the rollback as a pending release; re-apply the chosen release's "
         "manifests", "reverting"),
    Step("rollback:reverted", "the old manifests are in the cluster", None),
    Step("rollback:publishing", "watch the rollout; switch the VM hosts back, restart, check", "publishing"),
    Step("rollback:published", "the old release runs everywhere", None),
    Step("rollback:finishing", "record the rollback as deployed, the release it replaced as rolled back",
         "finishing"),
    Step("rollback:finished", "done", None),
)
STEPS = {step.name: step for step in (*DEPLOY_STEPS, FAILED_STEP, *ROLLBACK_STEPS)}
STEP_NAMES = tuple(STEPS)
FIRST_CHANGE = "deploy:updating"  # hooks that fail before its body: nothing changed (exit 2)


def run_body(c, step: Step) -> None:
    if step.body is not None:
        getattr(c.flow, step.body)()


def _task(step: Step):
    from invoke import Task

    def body(c):
        run_body(c, step)

    body.__doc__ = step.does
    return Task(body, name=step.name.partition(":")[2])


def collection():
    """The flow's steps as an Invoke collection: namespaces deploy and rollback, a task per step."""
    from invoke import Collection

    root = Collection("flow")
    for namespace in ("deploy", "rollback"):
        part = Collection(namespace)
        for step in STEPS.values():
            if step.name.startswith(namespace + ":"):
                part.add_task(_task(step))
        root.add_collection(part)
    return root


def run_step(c, name: str, *, tolerate: tuple[str, ...] = ()) -> None:
    """Step `name` with its hooks. A failing hook raises HookFailed, unless where it ran ("before",
    "after") is in `tolerate`: then it is reported (c.hook_errors) and the flow goes on."""
    c.step = name
    c.project_tasks.run_hooks("before", name, c, tolerate="before" in tolerate)
    c.session.run.log.write("skycap", f"step: {name}")
    run_body(c, STEPS[name])
    c.project_tasks.run_hooks("after", name, c, tolerate="after" in tolerate)
