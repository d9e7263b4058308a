"""`skycap unlock STAGE [--force]`: break a stale stage lock, recorded in the ledger."""

from __future__ import annotations

from skycap.cluster.errors import call_api
from skycap.session import open_stage


def unlock(run, stage_name: str, *, force: bool = False) -> int:
    from skycap.cluster.lock import unlock as break_and_record

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
