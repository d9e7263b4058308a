"""`skycap history STAGE`: the stage's releases, newest first."""

from __future__ import annotations

from skycap.cluster.errors import call_api
from skycap.session import emit_json, open_stage, print_table


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
