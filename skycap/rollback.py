"""Rollback: re-apply a recorded release's manifests and switch VM hosts back. It needs neither
Mercurial, nor the registry, nor the templates: in an incident those may be what is down."""

from __future__ import annotations

from datetime import datetime, timezone

from skycap.apply import apply_and_watch, rendered_from_manifests
from skycap.errors import BadInput, Interrupted
from skycap.ledger import GOOD_STATUSES, restorable
from skycap.prune import prune_left_behind
from skycap.session import (
    DeployState,
    Phases,
    call_api,
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
    from skycap.lock import StageLock

    lock = StageLock(session.api, stage.namespace, stage.name, purpose="rollback", ttl=lock_ttl(),
                     notice=run.screen.line)
    with phases.phase("take the stage lock"):
        call_api(session, "lock", lock.acquire)
    session.lock = lock
    outcome = {"stage": stage_name, "status": "failed", "release": None, "target": None}
    try:
        with interruptible():
            mark_dead_releases(session)
            ledger = session.ledger
            current = ledger.current()
            target = choose_rollback_target(ledger, current, release, stage_name, run.screen.warn)
            outcome["target"] = target.number
            check_vm_target(session, target, accept_new_host_keys)
            lock.set_purpose(f"rollback to release {target.number}")
            from skycap.hooks import Hooks

            hooks = Hooks(stage.project.tasks_file, run.log, run.screen)
            hooks.run("before_rollback", stage=stage.name, rev=target.rev, node=target.node,
                      release=target.number, namespace=stage.namespace)
            new = rollback_to(session, target, phases, timeout=timeout or stage.rollout_timeout,
                              accept_new_host_keys=accept_new_host_keys, note=f"rollback to {target.number}",
                              replaced=current, vm_checked=True)
            outcome.update(status="deployed", release=new.number)
            hooks.run("after_rollback", stage=stage.name, rev=target.rev, node=target.node,
                      release=new.number, namespace=stage.namespace)
            run.screen.ok(f"release {new.number}: {stage_name} is back on release {target.number} "
                          f"(rev {target.rev}, {str(target.node)[:12]})")
            return 0
    except KeyboardInterrupt:
        raise Interrupted("rollback interrupted; the lock was released; see `skycap status "
                          f"{stage_name}` and run the rollback again") from None
    finally:
        lock.release()
        if run.output == "json":
            emit_json({**outcome, "log": str(run.log.path) if run.log.used else None})
        elif run.log.used:
            run.screen.line(f"    log: {run.log.path}")


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


def rollback_to(session, target, phases, *, timeout, accept_new_host_keys, note, replaced=None,
                failed_release=None, vm_checked=False):
    """Re-apply a recorded release's manifests and watch them, switch the hosts to its VM releases, and
    delete what the failed or replaced release added: no Mercurial, registry or templates needed."""
    ledger = session.ledger
    if target.manifests is None:
        target = ledger.get(target.number)
    if not vm_checked:
        check_vm_target(session, target, accept_new_host_keys)
    session.require_lock()
    new = ledger.begin("rollback", rev=target.rev, node=target.node, tags=dict(target.tags),
                       manifests=target.manifests or "", services=list(target.services), note=note,
                       target=target.number,  # after the failed release, even if its entry is gone
                       number=failed_release.number + 1 if failed_release is not None else None)
    new.vm = dict(target.vm)  # what the hosts will run; a host switched elsewhere is recorded as it goes
    state = DeployState(stage=session.stage.name, rev=target.rev or "", release=new)
    state.rendered = rendered_from_manifests(target.manifests or "")
    with recorded(session, state, "rollback"):
        if state.rendered.manifests:
            apply_and_watch(session, state, phases, timeout=timeout, since=datetime.now(timezone.utc))
        rollback_vms(session, target, state, phases, accept_new_host_keys)
        session.require_lock()
        record(ledger, state, "deployed", note)
    prune_left_behind(session, state.rendered, [failed_release, replaced])
    if replaced is not None and replaced.number != target.number:
        replaced.status = "rolled-back"
        ledger.update_if(replaced, lambda standing: standing.status in GOOD_STATUSES)  # superseded just now
    return new


def check_vm_target(session, target, accept_new_host_keys) -> None:
    """Before any change: each VM release `target` recorded is still on every host (BadInput, exit 2, else)."""
    from skycap import vm

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
    from skycap import vm

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
