"""What one run of a command carries: the project, the screen, the run's log file, and the output mode."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from skycap.record import Record, fresh

TYPE_CHECKING = False  # as typing's, without importing typing (3 ms of `skycap logs`, which never needs it)
if TYPE_CHECKING:
    from typing import TextIO


def user_state_dir(override_variable: str, name: str) -> Path:
    """$override_variable if set, else $XDG_STATE_HOME/skycap/<name> (~/.local/state by default)."""
    explicit = os.environ.get(override_variable)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "skycap" / name


def log_dir() -> Path:
    return user_state_dir("SKYCAP_LOG_DIR", "logs")


def private_file(path: Path) -> TextIO:
    """path opened for appending, made 0600 in a folder made 0700: run logs and crash files hold what
    kubectl, ssh and tracebacks printed, which is for the user who ran Skycap only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8")


class RunLog:
    """The run's log file: everything kubectl and ssh printed, filtered or not, with timestamps."""

    def __init__(self, name: str):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.path = log_dir() / f"{stamp}-{name}-{os.getpid()}.log"
        self._file: TextIO | None = None

    def write(self, source: str, text: str) -> None:
        if not text:
            return
        if self._file is None:
            self._file = private_file(self.path)
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        for line in text.rstrip("\n").splitlines():
            self._file.write(f"{stamp} [{source}] {line}\n")
        self._file.flush()

    @property
    def used(self) -> bool:
        return self._file is not None


class Screen(Record):
    """Human output on stderr: live lines on a terminal, timestamped plain lines elsewhere."""

    stream: TextIO = fresh(lambda: sys.stderr)
    quiet: bool = False

    @property
    def is_terminal(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    @property
    def colour(self) -> bool:
        return self.is_terminal and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if not self.is_terminal:
            text = f"{time.strftime('%H:%M:%S')} {text}"
        print(text, file=self.stream, flush=True)

    def phase(self, text: str) -> None:
        self.line(self._paint("==> ", "1;34") + text)

    def ok(self, text: str) -> None:
        self.line(self._paint("ok ", "32") + text)

    def warn(self, text: str) -> None:
        self.line(self._paint("warning: ", "33") + text)

    def fail(self, text: str) -> None:
        self.line(self._paint("FAILED ", "1;31") + text)

    def raw(self, text: str) -> None:
        """Untouched text (verbose tool output, reports)."""
        if not self.quiet:
            print(text.rstrip("\n"), file=self.stream, flush=True)


class RunContext(Record):
    project_arg: str | None = None
    verbose: int = 0
    output: str = "text"
    screen: Screen = fresh(Screen)
    command: str = "skycap"
    _log: RunLog | None = None
    _project = None

    @classmethod
    def from_click(cls, ctx) -> "RunContext":
        obj = ctx.obj or {}
        return cls(project_arg=obj.get("project"), verbose=obj.get("verbose", 0), command=ctx.info_name or "skycap")

    @property
    def project(self):
        if self._project is None:
            from skycap.project.config import find_project

            self._project = find_project(self.project_arg)
        return self._project

    def log_for(self, stage: str) -> RunLog:
        if self._log is None:
            self._log = RunLog(f"{stage}-{self.command}")
        return self._log

    @property
    def log(self) -> RunLog:
        return self._log or self.log_for("run")
