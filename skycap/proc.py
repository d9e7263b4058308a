"""The one helper through which captured subprocesses run: argument tuples, never a shell."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Mapping, Sequence

from skycap.errors import BadInput, CommandFailed


@dataclass
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, input: str | bytes | None = None, check: bool = True, timeout: float | None = None,
        env: Mapping[str, str] | None = None, cwd: str | None = None, missing_hint: str | None = None) -> Result:
    """Run argv, capture its output as text, raise CommandFailed on a non-zero exit when check is set."""
    argv = tuple(str(a) for a in argv)
    full_env = None if env is None else {**os.environ, **env}
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=not isinstance(input, bytes),
                              timeout=timeout, env=full_env, cwd=cwd)
    except FileNotFoundError:
        raise BadInput(f"{argv[0]} is not installed or not on PATH", missing_hint) from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, _text(exc.stdout), _text(exc.stderr),
                            message=f"{argv[0]} did not finish within {timeout:g} s") from None
    result = Result(argv, done.returncode, _text(done.stdout), _text(done.stderr))
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stdout, result.stderr)
    return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
