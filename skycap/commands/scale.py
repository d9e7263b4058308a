"""`skycap scale STAGE SERVICE=N ...`: a recorded release that changes only replica counts, under the stage lock."""

from __future__ import annotations

from datetime import datetime, timezone

from skycap.cluster import kinds
from skycap.cluster.apply import apply_objects, rendered_from_manifests, watch
from skycap.cluster.errors import call_api
from skycap.errors import BadInput, Interrupted
from skycap.session import DeployState, Phases, interruptible, load_objects, lock_ttl, open_stage, record, recorded


def scale(run, stage_name: str, counts: dict[str, int], *, timeout=None) -> int:
    from skycap.yamlio import dump_all

    session = open_stage(run, stage_name)
    stage = session.stage
    unknown = sorted(set(counts) - set(stage.services))
    if unknown:
        raise BadInput(f"no Kubernetes service {unknown[0]!r} in stage {stage_name}",
                       f"services: {', '.join(sorted(stage.services))}")
    phases = Phases(run, stage_name)
    from skycap.cluster.lock import StageLock

    lock = StageLock(session.api, stage.namespace, stage.name, purpose=f"scale {counts}", ttl=lock_ttl(),
                     notice=run.screen.line)
    with phases.phase("take the stage lock"):
        call_api(session, "lock", lock.acquire)
    session.lock = lock
    try:
        with interruptible():
            ledger = session.ledger
            current = ledger.current()
            if current is None:
                raise BadInput(f"stage {stage_name} has no deployed release to scale", "deploy it first")
            current = ledger.get(current.number)
            objects = load_objects(current.manifests or "")
            scaled = scale_objects(objects, counts)
            note = "scale " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            session.require_lock()
            release = ledger.begin("scale", rev=current.rev, node=current.node, tags=dict(current.tags),
                                   manifests=dump_all(objects),
                                   services=list(current.services), note=note, target=current.number)
            release.vm = dict(current.vm)  # the VM hosts keep running what they ran
            state = DeployState(stage=stage_name, rev=current.rev or "", release=release)
            state.rendered = rendered_from_manifests(dump_all(scaled))
            with recorded(session, state, "scale"):
                with phases.phase(note):
                    state.applied = apply_objects(session, dump_all(scaled))
                watch(session, state, phases, timeout=timeout or stage.rollout_timeout,
                      since=datetime.now(timezone.utc))
                session.require_lock()
                record(ledger, state, "deployed", note)
            run.screen.ok(f"release {release.number}: {note}")
            return 0
    except KeyboardInterrupt:
        raise Interrupted("scale interrupted; the lock was released") from None
    finally:
        lock.release()


def scale_objects(objects: list[dict], counts: dict[str, int]) -> list[dict]:
    """Set spec.replicas on each named service's Deployments/StatefulSets (in place); return those."""
    from skycap.cluster.labels import SERVICE_LABEL

    scaled, seen = [], set()
    for obj in objects:
        service = (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        kind = kinds.of(obj["kind"])
        if service in counts and kind.replicas is not None:
            kind.write(obj, kind.replicas, counts[service])
            scaled.append(obj)
            seen.add(service)
    missing = sorted(set(counts) - seen)
    if missing:
        raise BadInput(f"service {missing[0]} has no Deployment or StatefulSet in the current release to scale")
    return scaled
