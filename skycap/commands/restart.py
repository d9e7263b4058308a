"""`skycap restart STAGE SERVICE ...`: a recorded restart, under the stage lock.

Kubernetes services: a rolling restart, as `kubectl rollout restart` makes it (a restartedAt
annotation on the pod template), of the current release's manifests, applied and watched like a
deploy (same rules, same report). The changed manifests are recorded as a release of kind
`restart`, so the ledger matches what runs and status shows no drift.

VM services: the stage file's `restart` then `check` on each host, `parallel` at a time, no host
starting once one has failed. The same release records them."""

from __future__ import annotations

from datetime import datetime, timezone

from skycap.cluster import kinds
from skycap.cluster.errors import call_api
from skycap.cluster.labels import RESTARTED_AT, SERVICE_LABEL
from skycap.commands.running.targets import find_service
from skycap.errors import BadInput, Interrupted
from skycap.session import (
    DeployState,
    Phases,
    host_printer,
    interruptible,
    load_objects,
    lock_ttl,
    mark_dead_releases,
    open_stage,
    recorded,
    vm_result_dict,
)

def restart(run, stage_name: str, names: list[str], *, timeout=None, accept_new_host_keys=False) -> int:
    session = open_stage(run, stage_name)
    stage = session.stage
    targets = [find_service(stage, name) for name in dict.fromkeys(names)]
    pods = [t.name for t in targets if t.kubernetes is not None]
    vms = [t.vm for t in targets if t.vm is not None]
    for vm in vms:
        if not vm.restart:
            raise BadInput(f"vm {vm.name} has no restart command to run", "add restart: to its block in the stage file")
    note = "restart " + " ".join(t.name for t in targets)
    phases = Phases(run, stage_name)
    from skycap.cluster.lock import StageLock

    lock = StageLock(session.api, stage.namespace, stage.name, purpose=note, ttl=lock_ttl())
    session.lock = lock  # every change below checks that it is still held
    with phases.phase("take the stage lock"):
        call_api(session, "lock", lock.acquire)
    try:
        with interruptible():
            mark_dead_releases(session)
            number = restart_locked(session, phases, pods, vms, note, timeout or stage.rollout_timeout,
                                    accept_new_host_keys)
            run.screen.ok(f"release {number}: {note}")
            return 0
    except KeyboardInterrupt:
        raise Interrupted(f"restart interrupted; the lock was released; see `skycap status {stage_name}`") from None
    finally:
        lock.release()
        if run.log.used:
            run.screen.line(f"    log: {run.log.path}")


def restart_locked(session, phases, pods: list[str], vms: list, note: str, timeout: float,
                   accept_new_host_keys: bool) -> int:
    from skycap.cluster.apply import apply_objects, rendered_from_manifests, watch
    from skycap.yamlio import dump_all

    ledger, stage = session.ledger, session.stage
    current = ledger.current()
    if current is None:
        raise BadInput(f"stage {stage.name} has no deployed release to restart", "deploy it first")
    current = ledger.get(current.number)
    objects = load_objects(current.manifests or "")
    started = datetime.now(timezone.utc)
    restarted = mark_restarted(objects, pods, started, current.number)
    session.require_lock()
    release = ledger.begin("restart", rev=current.rev, node=current.node, tags=dict(current.tags),
                           manifests=dump_all(objects), services=list(current.services), note=note,
                           target=current.number)
    release.vm = dict(current.vm)  # VM hosts still run those releases, restarted or not
    state = DeployState(stage=stage.name, rev=current.rev or "", release=release)
    state.rendered = rendered_from_manifests(dump_all(restarted))
    with recorded(session, state, "restart"):
        if restarted:
            with phases.phase(f"restart {', '.join(pods)}"):
                state.applied = apply_objects(session, dump_all(restarted))
            watch(session, state, phases, timeout=timeout, since=started)
        for vm in vms:
            restart_hosts(session, state, phases, vm, accept_new_host_keys)
        session.require_lock()
    release.applied = list(state.applied)
    ledger.finish(release, "deployed", note)
    return release.number


def mark_restarted(objects: list[dict], services: list[str], moment: datetime, number: int) -> list[dict]:
    """Stamp restartedAt on the pod template of each named service's workloads (in place); return those."""
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    changed, seen = [], set()
    for obj in objects:
        service = (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        kind = kinds.of(obj["kind"])
        if service in services and kind.restartable:
            template = kind.template_of(obj).setdefault("metadata", {})
            template.setdefault("annotations", {})[RESTARTED_AT] = stamp
            changed.append(obj)
            seen.add(service)
    missing = [service for service in services if service not in seen]
    if missing:
        raise BadInput(f"service {missing[0]} has no Deployment, StatefulSet or DaemonSet in release {number} "
                       "to restart", "deploy it first")
    return changed


def restart_hosts(session, state, phases, vm, accept_new_host_keys: bool) -> None:
    from skycap.vm import deploy as vms

    with phases.phase(f"restart {vm.name} on {len(vm.hosts)} host(s), {vm.parallel} at a time"):
        try:
            result = vms.restart(vm, accept_new_host_keys=accept_new_host_keys, on_event=host_printer(session),
                                 project_root=session.stage.project.root)
        except (vms.VmDeployFailed, vms.VmInterrupted) as exc:
            state.vm_results[vm.name] = vm_result_dict(exc.result)
            raise
        state.vm_results[vm.name] = vm_result_dict(result)
