"""`skycap diff STAGE rev=REV`: what a deploy of that revision would change."""

from __future__ import annotations

from skycap.flow.deploy import next_release_number, render, resolve_revision
from skycap.session import open_stage


def diff(run, stage_name: str, rev: str) -> int:
    """kubectl diff of what rev= renders against what runs; what Skycap stamps on every release
    (release number, node) is not a change: hidden unless -v, and exit 0 when nothing else differs."""
    from skycap.cluster.plan import classify_diff, essential_diff, plan_lines

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
