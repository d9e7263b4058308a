"""Rollback: re-apply a recorded release's manifests and switch VM hosts back. It needs neither
Mercurial, nor the registry, nor the templates: in an incident those may be what is down."""

from __future__ import annotations

from datetime import datetime, timezone

from skycap.cluster.apply import apply_manifests, rendered_from_manifests, watch
from skycap.cluster.errors import call_api
from skycap.cluster.ledger import GOOD_STATUSES, restorable
from skycap.cluster.prune import prune_left_behind
from skycap.errors import BadInput, Interrupted
from skycap.session import (
    DeployState,
    Phases,
    emit_json,
    host_printer,
    interruptible,
    lock_ttl,
    mark_dead_releases,
    open_stage,
    record,
    recorded,
    vm_result_dict,
)


def rollback(run, stage_name: str, *, release=None, timeout=None, accept_new_host_keys=False) -> int:
    session = open_stage(run, stage_name)
    stage = session.stage
    phases = Phases(run, stage_name)
    from skycap.flow.hooks import HookFailed, ProjectTasks

    tasks = ProjectTasks.load(stage.project.tasks_file)
    work = Rollback(session, phases, timeout=timeout or stage.rollout_timeout,
                    accept_new_host_keys=accept_new_host_keys, number=release)
    outcome = {"stage": stage_name, "status": "failed", "release": None, "target": None}
    try:
        with interruptible():
            work.run(tasks.context(session, flow=work))
            target = work.target
            outcome.update(status="deployed", release=work.state.release.number, target=target.number)
            run.screen.ok(f"release {work.state.release.number}: {stage_name} is back on release {target.number} "
                          f"(rev {target.rev}, {str(target.node)[:12]})")
            return 0
    except KeyboardInterrupt:
        raise Interrupted("rollback interrupted; the lock was released; see `skycap status "
                          f"{stage_name}` and run the rollback again") from None
    except HookFailed as exc:
        if work.state is not None and work.state.release is not None:
            raise
        raise BadInput(f"{exc.message}; nothing was changed", exc.hint) from None
    finally:
        outcome["target"] = work.target.number if work.target is not None else None
        if work.lock is not None:
            work.lock.release()
        if run.output == "json":
            emit_json({**outcome, "log": str(run.log.path) if run.log.used else None})
        elif run.log.used:
            run.screen.line(f"    log: {run.log.path}")


class Rollback:
    """One rollback, step by step: the bodies of the rollback:* steps (skycap/flow/steps.py says their
    order). `skycap rollback` takes the lock and chooses the target in rollback:starting; the automatic
    rollback of a failed deploy comes with its target, under the deploy's lock."""

    def __init__(self, session, phases, *, timeout, accept_new_host_keys, number=None, target=None,
                 note=None, failed_release=None):
        self.session, self.phases = session, phases
        self.timeout, self.accept_new_host_keys = timeout, accept_new_host_keys
        self.number = number  # release=N, when asked for
        self.target = target
        self.note = note
        self.failed_release = failed_release
        self.lock = None  # the lock this rollback took (not the automatic one's)
        self.replaced = None  # the current release, which becomes rolled-back
        self.state = None  # of the rollback's own release
        self.c = None

    def run(self, c) -> None:
        from skycap.flow.steps import run_step

        self.c = c
        run_step(c, "rollback:starting")
        with recorded(self.session, self.state, "rollback"):
            for name in ("rollback:reverting", "rollback:reverted", "rollback:publishing", "rollback:published",
                         "rollback:finishing"):
                run_step(c, name)
            run_step(c, "rollback:finished", tolerate=("after",))

    # ----- the steps -----

    def starting(self) -> None:
        session = self.session
        if self.target is None:
            self.take_lock_and_choose()
        target = self.target
        if target.manifests is None:
            target = self.target = session.ledger.get(target.number)
        check_vm_target(session, target, self.accept_new_host_keys)  # before any change
        self.state = DeployState(stage=session.stage.name, rev=target.rev or "")
        self.state.rendered = rendered_from_manifests(target.manifests or "")
        self.c.rev, self.c.node, self.c.target = target.rev, target.node, target.number
        self.note = self.note or f"rollback to {target.number}"

    def reverting(self) -> None:
        session, target, state = self.session, self.target, self.state
        session.require_lock()
        state.release = session.ledger.begin(
            "rollback", rev=target.rev, node=target.node, tags=dict(target.tags), manifests=target.manifests or "",
            services=list(target.services), note=self.note,
            target=target.number,  # after the failed release, even if its entry is gone
            number=self.failed_release.number + 1 if self.failed_release is not None else None)
        state.release.vm = dict(target.vm)  # what the hosts will run; a host switched elsewhere is recorded as it goes
        self.c.release = state.release.number
        self.started = datetime.now(timezone.utc)
        if state.rendered.manifests:
            apply_manifests(session, state, self.phases)

    def publishing(self) -> None:
        session, state = self.session, self.state
        if state.rendered.manifests:
            watch(session, state, self.phases, timeout=self.timeout, since=self.started)
        rollback_vms(session, self.target, state, self.phases, self.accept_new_host_keys)

    def finishing(self) -> None:
        session, ledger, replaced = self.session, self.session.ledger, self.replaced
        session.require_lock()
        record(ledger, self.state, "deployed", self.note)
        prune_left_behind(session, self.state.rendered, [self.failed_release, replaced])
        if replaced is not None and replaced.number != self.target.number:
            replaced.status = "rolled-back"
            ledger.update_if(replaced, lambda standing: standing.status in GOOD_STATUSES)  # superseded just now

    def take_lock_and_choose(self) -> None:
        from skycap.cluster.lock import StageLock

        session, stage, run = self.session, self.session.stage, self.session.run
        lock = StageLock(session.api, stage.namespace, stage.name, purpose="rollback", ttl=lock_ttl(),
                         notice=run.screen.line)
        with self.phases.phase("take the stage lock"):
            call_api(session, "lock", lock.acquire)
        self.lock = session.lock = lock
        mark_dead_releases(session)
        ledger = session.ledger
        self.replaced = ledger.current()
        self.target = choose_rollback_target(ledger, self.replaced, self.number, stage.name, run.screen.warn)
        lock.set_purpose(f"rollback to release {self.target.number}")


def choose_rollback_target(ledger, current, number, stage_name: str, warn):
    if number is not None:
        target = ledger.get(number)
        if not target.manifests and not target.vm and target.kind != "deploy":
            raise BadInput(f"release {number} has no recorded manifests to roll back to")
        if target.status not in ("deployed", "superseded", "rolled-back"):
            raise BadInput(f"release {number} never ran successfully (status {target.status})",
                           f"pick a good one from `skycap history {stage_name}`")
        return target
    if current is None:
        raise BadInput(f"stage {stage_name} has no deployed release, so there is nothing to roll back from",
                       f"see `skycap history {stage_name}`")
    target, skipped = readable_good_before(ledger, current.number)
    for problem in skipped:
        warn(f"{problem}: skipped" + (f", rolling back to release {target.number} instead" if target else ""))
    if target is None:
        raise BadInput(f"there is no good release before release {current.number} to roll back to",
                       f"see `skycap history {stage_name}`; to go forward instead: skycap deploy {stage_name} rev=REV")
    return target


def readable_good_before(ledger, number: int, releases=None) -> tuple:
    """The newest good release older than `number` whose manifests can be read, with its manifests; and
    why each newer good one was passed over (an unreadable entry must not stop a rollback)."""
    skipped = []
    for release in ledger.releases() if releases is None else releases:
        if release.number < number and restorable(release):
            try:
                return ledger.get(release.number), skipped
            except BadInput as exc:
                skipped.append(exc.message)
    return None, skipped


def check_vm_target(session, target, accept_new_host_keys) -> None:
    """Before any change: each VM release `target` recorded is still on every host (BadInput, exit 2, else)."""
    from skycap.vm import deploy as vm

    stage = session.stage
    for name, service in stage.vm.items():
        wanted = (target.vm or {}).get(name)
        if wanted:
            vm.require_release(service, wanted, accept_new_host_keys=accept_new_host_keys,
                               project_root=stage.project.root)


def rollback_vms(session, target, state, phases, accept_new_host_keys) -> None:
    """Switch every host back to the release's VM release (or each host's previous one)."""
    if not session.stage.vm:
        return
    from skycap.vm import deploy as vm

    stage = session.stage
    for name, service in stage.vm.items():
        session.require_lock()
        wanted = (target.vm or {}).get(name) or None
        with phases.phase(f"switch {name} back on {len(service.hosts)} host(s)"):
            try:
                result = vm.rollback(service, wanted, accept_new_host_keys=accept_new_host_keys,
                                     on_event=host_printer(session), project_root=stage.project.root)
            except (vm.VmDeployFailed, vm.VmInterrupted) as exc:
                state.vm_results[name] = vm_result_dict(exc.result)
                raise
            state.vm_results[name] = vm_result_dict(result)
