"""The smaller commands: status, history, render, diff, scale and unlock."""

from __future__ import annotations

from datetime import datetime, timezone

from skycap.apply import apply_objects, rendered_from_manifests, watch
from skycap.deploy import next_release_number, render, resolve_revision
from skycap.errors import BadInput, Interrupted, SkycapError
from skycap.session import (
    DeployState,
    Phases,
    call_api,
    emit_json,
    interruptible,
    load_objects,
    lock_ttl,
    open_stage,
    print_table,
    record,
    recorded,
)


def status(run, stage_name: str) -> int:
    from skycap.status import collect_status, print_status

    session = open_stage(run, stage_name)
    report = collect_status(session)
    if session.stage.environment is not None:
        from skycap.environments.commands import print_environment, status_extra

        report["environment"] = status_extra(session)
    if run.output == "json":
        emit_json(report)
    else:
        print_status(run.screen, report)
        if "environment" in report:
            print_environment(report["environment"])
    return 0


def history(run, stage_name: str) -> int:
    session = open_stage(run, stage_name)
    releases = call_api(session, "ledger", session.ledger.releases)
    if run.output == "json":
        emit_json({"stage": stage_name, "releases": [release_dict(r) for r in releases],
                   "problems": session.ledger.problems})
        return 0
    rows = [("#", "STATUS", "KIND", "REV", "NODE", "WHO", "STARTED", "NOTE")]
    for r in releases:
        rows.append((str(r.number), r.status, r.kind, (r.rev or "")[:20], (r.node or "")[:12], r.who[:30],
                     r.started, r.note[:60]))
    print_table(rows)
    for problem in session.ledger.problems:
        run.screen.warn(problem)
    if not releases:
        run.screen.line(f"stage {stage_name} has no releases yet")
    return 0


def release_dict(release) -> dict:
    data = dict(release.__dict__)
    data.pop("manifests", None)
    data.pop("objects", None)
    return data


def render_command(run, stage_name: str, rev: str) -> int:
    session = open_stage(run, stage_name)
    revision = resolve_revision(session.stage, rev)
    number = 0
    try:
        number = next_release_number(session)
    except SkycapError as exc:
        run.screen.warn(f"release number unknown ({exc.message}); rendering with release 0")
    print(render(session.stage, revision, number).to_yaml(), end="")
    return 0


def diff(run, stage_name: str, rev: str) -> int:
    """kubectl diff of what rev= renders against what runs; what Skycap stamps on every release
    (release number, node) is not a change: hidden unless -v, and exit 0 when nothing else differs."""
    from skycap.plan import classify_diff, essential_diff, plan_lines

    session = open_stage(run, stage_name)
    revision = resolve_revision(session.stage, rev)
    rendered = render(session.stage, revision, next_release_number(session))
    _, text = session.kubectl.diff(rendered.to_yaml())
    plan = classify_diff(rendered, text)
    for line in plan_lines(plan):
        run.screen.line(line)
    print(text if run.verbose else essential_diff(text), end="")
    changes = len(plan["create"]) + len(plan["change"])
    if changes:
        run.screen.line(f"{changes} object(s) would change; unchanged: {len(plan['unchanged'])}")
    else:
        run.screen.ok(f"no change: {stage_name} already runs what rev={rev} renders")
    if run.log.used:
        run.screen.line(f"    log: {run.log.path}")
    return 1 if changes else 0


def scale(run, stage_name: str, counts: dict[str, int], *, timeout=None) -> int:
    from skycap.yamlio import dump_all

    session = open_stage(run, stage_name)
    stage = session.stage
    unknown = sorted(set(counts) - set(stage.services))
    if unknown:
        raise BadInput(f"no Kubernetes service {unknown[0]!r} in stage {stage_name}",
                       f"services: {', '.join(sorted(stage.services))}")
    phases = Phases(run, stage_name)
    from skycap.lock import StageLock

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
    from skycap.render import SERVICE_LABEL

    scaled, seen = [], set()
    for obj in objects:
        service = (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        if service in counts and obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet"):
            obj["spec"]["replicas"] = counts[service]
            scaled.append(obj)
            seen.add(service)
    missing = sorted(set(counts) - seen)
    if missing:
        raise BadInput(f"service {missing[0]} has no Deployment or StatefulSet in the current release to scale")
    return scaled


def unlock(run, stage_name: str, *, force: bool = False) -> int:
    from skycap.lock import unlock as break_and_record

    session = open_stage(run, stage_name)
    stage = session.stage
    done = call_api(session, "lock", break_and_record, session.api, stage.namespace, stage.name, force=force,
                    notice=run.screen.line)
    if done.broken is None and not done.interrupted:
        run.screen.ok(f"stage {stage_name} was not locked; nothing to do")
        return 0
    if done.broken is not None:
        run.screen.ok(f"stage {stage_name} unlocked: it was held by {done.broken.holder} since "
                      f"{done.broken.since}, doing: {done.broken.purpose}")
    for number in done.interrupted:
        run.screen.warn(f"release {number} was left pending by that deploy; marked interrupted")
    if done.release is not None:
        run.screen.line(f"    recorded as release {done.release.number}")
    return 0
