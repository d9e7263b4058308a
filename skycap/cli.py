"""The command line's entry point: the only place errors become exit codes.

The commands themselves are the click app in skycap.cli_commands, with one exception: a plain
`skycap logs STAGE SERVICE [--tail N] [--since D] [-f] [-p]` (what an engineer types in an incident,
where the time to the first line is the point) is read here without importing click and the
commands' definitions: 0.017 s of a 0.09 s command whose whole work is two API requests. Any other
form of it (--help, an option click would refuse or read differently) goes to click, which says
what is wrong as usual.
"""

from __future__ import annotations

import sys

from skycap.errors import SkycapError

LOGS_FLAGS = {"-f": "follow", "--follow": "follow", "-p": "previous", "--previous": "previous"}
LOGS_VALUES = {"--tail": "tail", "--since": "since"}


def plain_logs(args: list[str]) -> dict | None:
    """The arguments of `[--project DIR] logs STAGE SERVICE [options]` when args are exactly that and
    click would read them the same way; None for anything else."""
    found: dict = {"project": None, "tail": None, "since": None, "follow": False, "previous": False}
    words = iter(args)
    word = next(words, None)
    if word is not None and word.partition("=")[0] == "--project":
        found["project"] = _value(word, words)
        word = next(words, None)
    if word != "logs":
        return None
    positional = []
    for word in words:
        if word in LOGS_FLAGS:
            found[LOGS_FLAGS[word]] = True
        elif word.partition("=")[0] in LOGS_VALUES:
            found[LOGS_VALUES[word.partition("=")[0]]] = _value(word, words)
        elif word.startswith("-"):
            return None
        else:
            positional.append(word)
    if len(positional) != 2 or not _plain_values(found):
        return None
    found["stage"], found["service"] = positional
    found["tail"] = int(found["tail"]) if found["tail"] is not None else None
    return found


def _value(word: str, words) -> str:
    """An option's value: after its = (--tail=5), else the next word (--tail 5); "" when there is none."""
    _, equals, value = word.partition("=")
    return value if equals else next(words, "")


def _plain_values(found: dict) -> bool:
    """Every value given is there and not empty, none looks like an option, and --tail is digits only."""
    given = [found[name] for name in ("project", "tail", "since") if found[name] is not None]
    if any(not value or value.startswith("-") for value in given):
        return False
    return found["tail"] is None or (found["tail"].isascii() and found["tail"].isdigit())


def run_command(args: list[str]) -> int:
    logs_args = plain_logs(args)
    if logs_args is None:
        from skycap.cli_commands import run_click

        return run_click(args)
    from skycap.commands.logs import log_options, logs
    from skycap.context import RunContext

    options = log_options(logs_args["tail"], logs_args["since"], logs_args["follow"], logs_args["previous"])
    return logs(RunContext(project_arg=logs_args["project"], command="logs"), logs_args["stage"],
                logs_args["service"], options)


def main(argv: list[str] | None = None) -> None:
    try:
        code = run_command(sys.argv[1:] if argv is None else list(argv))
    except SkycapError as exc:
        _error(f"error: {exc.message}")
        if exc.hint:
            _error(f"  {exc.hint}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: a short message, the traceback in a file
        _error(f"error: skycap hit an unexpected {type(exc).__name__}: {exc}")
        _error(f"  the traceback is in {_save_traceback()}; please report it")
        sys.exit(1)
    sys.exit(code)


def _error(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _save_traceback() -> str:
    import os
    import traceback
    from datetime import datetime, timezone

    from skycap.context import log_dir, private_file

    path = log_dir() / f"crash-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}.txt"
    with private_file(path) as crash:
        crash.write(traceback.format_exc())
    return str(path)


def run() -> None:
    """The console script."""
    try:
        main()
    finally:
        if "skycap.proc" in sys.modules:
            sys.modules["skycap.proc"].stop_running()  # nothing left behind by a run that stopped early


if __name__ == "__main__":
    run()
