"""A command on a VM host for as long as Skycap stays attached: its output streamed line by line,
and the command stopped on the host when Skycap lets go (Ctrl-C, a dropped connection).

Without a terminal, sshd does not signal a command whose session closes: a `tail -F` would run on
the host for ever. So the command runs in the background of a small sh script whose other job
waits for the session's stdin to close, then stops it."""

from __future__ import annotations

import select
import shlex
import threading


# $1: the folder to run in; the rest: the command's words, each one argument (never a shell string).
ATTACHED = """\
exec 3<&0
cd "$1" || exit 1
shift
"$@" </dev/null &
child=$!
{ while read -r _ <&3; do :; done; kill -TERM "$child" 2>/dev/null; } &
watcher=$!
wait "$child"
code=$?
kill "$watcher" 2>/dev/null
exit "$code"
"""
UNREACHABLE = 255  # the exit code for a host that could not run the command, as ssh(1) uses


def attached_command(folder: str, argv: list[str]) -> str:
    return " ".join(["sh", "-c", shlex.quote(ATTACHED), "skycap", shlex.quote(folder),
                     *(shlex.quote(word) for word in argv)])


def run_attached(host, folder: str, argv: list[str], out, err, stop: threading.Event) -> int | None:
    """Run argv in folder on an open skycap.vm.hosts.HostConnection; feed its stdout and stderr to `out` and
    `err` (output.Lines or output.Raw); return the exit code, or None when `stop` was set first."""
    import paramiko

    from skycap.vm.hosts import HostUnreachable

    channel = None
    try:
        channel = host.connection.transport.open_session(timeout=host.options.connect_timeout)
        channel.exec_command(attached_command(folder, argv))
        while not stop.is_set():
            finished = channel.eof_received or channel.closed  # looked at first: no data can follow it
            while channel.recv_ready():
                out.feed(channel.recv(1 << 16))
            while channel.recv_stderr_ready():
                err.feed(channel.recv_stderr(1 << 16))
            if finished:
                out.close()
                err.close()
                return channel.recv_exit_status()
            select.select([channel], [], [], 0.2)
        return None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise HostUnreachable(host.spec, f"the connection to {host.where} was lost: {exc or type(exc).__name__}",
                              "is the VM still up?") from None
    finally:
        if channel is not None:
            channel.close()
