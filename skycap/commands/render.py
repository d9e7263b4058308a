"""`skycap render STAGE rev=REV`: the manifests a deploy of that revision would apply."""

from __future__ import annotations

from skycap.errors import SkycapError
from skycap.flow.deploy import next_release_number, render, resolve_revision
from skycap.session import open_stage


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
