"""Pruning: deleting what the previous release applied and this one no longer renders.

Only objects carrying the stage's label go, and never a volume's claim (its data), anything
annotated `skycap.io/prune: "false"`, nor Skycap's own ledger and lock, whatever a release lists.
"""

from __future__ import annotations

from skycap.cluster import kinds
from skycap.cluster.labels import PRUNE_ANNOTATION, STAGE_LABEL


def gone_objects(previous, rendered, namespace: str) -> list[tuple[str, str]]:
    """(kind, name) of what `previous` (a release read from the ledger) applied that `rendered` does not."""
    from skycap.cluster.ledger import checked_objects

    if not rendered or not rendered.manifests or previous is None or not previous.manifests:
        return []  # never prune from an empty render
    objects = previous.objects if previous.objects is not None else checked_objects(previous.manifests, namespace)
    current = {(m.kind, m.name) for m in rendered.manifests}
    return [(obj["kind"], obj["metadata"]["name"]) for obj in objects
            if (obj["kind"], obj["metadata"]["name"]) not in current and obj["kind"] != "Namespace"]


def prune_left_behind(session, rendered, releases) -> None:
    """After a rollback to what `rendered` holds: delete what `releases` (the failed release, the one the
    rollback replaced; None is skipped) applied and it does not, by prune's rules. A failure is a
    warning: the rollback itself worked."""
    from skycap.cluster.errors import call_api
    from skycap.errors import SkycapError

    ledger = session.ledger
    try:
        gone = {}
        for release in releases:
            if release is not None and release.manifests is None:
                release = call_api(session, "ledger", ledger.get, release.number)
            gone.update(dict.fromkeys(gone_objects(release, rendered, ledger.namespace)))
        session.require_lock()
        prune_removed(session, list(gone))
    except SkycapError as exc:
        session.run.screen.warn(f"deleting what the rolled-back release added failed (the rollback itself "
                                f"worked): {exc.message}")


def prune_removed(session, gone: list[tuple[str, str]]) -> None:
    if not gone:
        return
    stage = session.stage.name
    live = session.kubectl.get_json([f"{kind}/{name}" for kind, name in gone])
    doomed, kept = [], []
    for obj in live:
        if (obj["metadata"].get("labels") or {}).get(STAGE_LABEL) != stage:
            continue
        ref, reason = f"{obj['kind']}/{obj['metadata']['name']}", kept_because(obj, stage)
        if reason:
            kept.append(f"{ref} ({reason})")
        else:
            doomed.append(ref)
    if kept:
        session.run.screen.line(f"    no longer in the stage, not pruned: {', '.join(kept)}")
    if doomed:
        session.run.screen.phase(f"prune objects no longer in the stage: {', '.join(doomed)}")
        session.kubectl.delete(doomed)


def kept_because(obj: dict, stage: str) -> str | None:
    """Why a live object that left the stage is not deleted, or None."""
    from skycap.cluster.ledger import PART_TYPE, RELEASE_TYPE
    from skycap.cluster.lock import lease_name

    kind, name = obj["kind"], obj["metadata"]["name"]
    if kinds.of(kind).kept_on_prune:
        return kinds.of(kind).kept_on_prune
    if (obj["metadata"].get("annotations") or {}).get(PRUNE_ANNOTATION) == "false":
        return f'annotated {PRUNE_ANNOTATION}: "false"'
    if (kind == "Secret" and obj.get("type") in (RELEASE_TYPE, PART_TYPE)) or (kind == "Lease"
                                                                            and name == lease_name(stage)):
        return "Skycap's own ledger or lock"
    return None
