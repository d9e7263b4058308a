"""Secrets stay secret: run logs and crash files only their owner can read, Secret values redacted
from what kubectl prints before it reaches the log or the screen, and registry credentials that
never cross plain HTTP to a host off this machine unless the stage allows it."""

from __future__ import annotations

import stat
from pathlib import Path

from skycap.context import RunLog
from tests.deployproject import ROOT, skycap


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_logs_and_crash_files_are_private(isolated_home, monkeypatch):
    log = RunLog("test-deploy")
    log.write("kubectl:out", "what kubectl printed")
    assert mode(log.path) == 0o600 and mode(log.path.parent) == 0o700

    from skycap import pipelines

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipelines, "history", broken)
    ran = skycap("--project", str(ROOT), "history", "demo")
    crash = Path(ran.stderr.split("traceback is in ")[1].split(";")[0])
    assert crash.parent == log.path.parent and mode(crash) == 0o600
