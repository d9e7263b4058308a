"""The one helper through which captured subprocesses run: argument tuples, never a shell; each
known while it runs, so that a run that stops early can stop them too."""

from __future__ import annotations

import os
import subprocess
import threading
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
        done = captured(argv, input=input, text=not isinstance(input, bytes), timeout=timeout, env=full_env, cwd=cwd)
    except FileNotFoundError:
        raise BadInput(f"{argv[0]} is not installed or not on PATH", missing_hint) from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, _text(exc.stdout), _text(exc.stderr),
                            message=f"{argv[0]} did not finish within {timeout:g} s") from None
    result = Result(argv, done.returncode, _text(done.stdout), _text(done.stderr))
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stdout, result.stderr)
    return result


_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


def captured(argv, *, input=None, text: bool = True, timeout: float | None = None, env=None,
             cwd=None) -> subprocess.CompletedProcess:
    """subprocess.run(argv, capture_output=True, ...), with the process listed while it runs."""
    with subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else None, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=text, env=env, cwd=cwd) as process:
        with _running_lock:
            _running.add(process)
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            exc.stdout, exc.stderr = process.communicate()
            raise
        except BaseException:
            process.kill()
            raise
        finally:
            with _running_lock:
                _running.discard(process)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def stop_running() -> None:
    """Kill what is still running: read-only checks and lookups (a dry run, hg confirming a node)
    that a run which stopped early (a locked stage, an error, Ctrl-C) no longer waits for."""
    with _running_lock:
        left = list(_running)
    for process in left:
        process.kill()


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
