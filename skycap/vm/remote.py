"""The shell side of a VM deploy: POSIX sh scripts built from validated values with shlex.quote.

Layout on each host, as Capistrano's:

    DEPLOY_TO/releases/<release>/   one unpacked archive per deploy, with a REVISION file
    DEPLOY_TO/shared/               linked_dirs and linked_files, kept across releases
    DEPLOY_TO/current               symlink to the live release, switched by an atomic rename
    DEPLOY_TO/revisions.log         one line per deploy, rollback and switch back
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from shlex import quote

RELEASE_NAME_RE = re.compile(r"^[0-9]{14}-[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
NODE_RE = re.compile(r"^[0-9a-f]{40}$")
DEPLOY_TO_RE = re.compile(r"^/[-/._a-zA-Z0-9]*$")
LINKED_PATH_RE = re.compile(r"^[-._a-zA-Z0-9][-/._a-zA-Z0-9]*$")

# Exit codes of the prepare and switch scripts that Python turns into plain-language errors.
CURRENT_NOT_A_SYMLINK = 90
RELEASE_EXISTS = 91
RELEASE_MISSING = 92

# Prints what the host has: where current points, and each release with its REVISION.
_REPORT_STATE = """\
printf 'current\\t%s\\n' "$(readlink current || true)"
for dir in releases/*; do
  [ -d "$dir" ] || continue
  printf 'release\\t%s\\t%s\\n' "${dir#releases/}" "$(head -n 1 "$dir/REVISION" 2>/dev/null || true)"
done
"""


@dataclass
class HostState:
    """What a host has under deploy_to, as its state report said."""

    current: str | None = None          # the release current points to, if it points into releases/
    current_target: str | None = None   # what readlink said, whatever it is
    releases: dict[str, str] = field(default_factory=dict)  # release name -> node in its REVISION
    notes: list[str] = field(default_factory=list)


def parse_state(deploy_to: str, output: str) -> HostState:
    state = HostState()
    for line in output.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "current" and rest:
            state.current_target = rest
            target = posixpath.normpath(posixpath.join(deploy_to, rest))
            if posixpath.dirname(target) == posixpath.join(deploy_to, "releases"):
                state.current = posixpath.basename(target)
        elif kind == "release":
            name, _, node = rest.partition("\t")
            state.releases[name] = node.strip()
        elif kind == "note":
            state.notes.append(rest)
    return state


def check_layout_values(deploy_to: str, linked_dirs=(), linked_files=()) -> None:
    """Repeat the stage loader's checks: these values end up inside remote commands."""
    if not DEPLOY_TO_RE.match(deploy_to) or ".." in deploy_to.split("/"):
        raise ValueError(f"deploy_to {deploy_to!r} is not an absolute path of letters, digits, - _ . /")
    for path in [*linked_dirs, *linked_files]:
        if not LINKED_PATH_RE.match(path) or ".." in path.split("/"):
            raise ValueError(f"linked path {path!r} is not a relative path of letters, digits, - _ . /")


def inspect_script(deploy_to: str) -> str:
    return f"cd {quote(deploy_to)} 2>/dev/null || exit 0\n" + _REPORT_STATE


def prepare_script(deploy_to: str, release: str, node: str, linked_dirs, linked_files) -> str:
    """Unpack the archive from stdin into releases/<release> (via a hidden folder), link shared/, report state."""
    root, shared = quote(deploy_to), quote(f"{deploy_to}/shared")
    partial, target = quote(f"releases/.{release}.partial"), quote(f"releases/{release}")
    lines = [
        "set -eu",
        f"mkdir -p {root}/releases {root}/shared",
        f"cd {root}",
        f"if [ -e current ] && [ ! -L current ]; then exit {CURRENT_NOT_A_SYMLINK}; fi",
        f"if [ -e {target} ] || [ -L {target} ]; then exit {RELEASE_EXISTS}; fi",
        f"rm -rf {partial} && mkdir {partial}",
        f"tar -xzf - -C {partial}",
        f"printf '%s\\n' {quote(node)} > {partial}/REVISION",
    ]
    for path in linked_dirs:
        lines.append(f"mkdir -p shared/{quote(path)}")
        lines += _link_lines(partial, path, shared)
    for path in linked_files:
        parent = posixpath.dirname(path)
        if parent:
            lines.append(f"mkdir -p shared/{quote(parent)}")
        note = quote(f"note\tshared/{path} did not exist: created it empty")
        lines.append(f"[ -e shared/{quote(path)} ] || {{ : > shared/{quote(path)}; printf '%s\\n' {note}; }}")
        lines += _link_lines(partial, path, shared)
    lines.append(f"mv {partial} {target}")
    return "\n".join(lines) + "\n" + _REPORT_STATE


def _link_lines(partial: str, path: str, shared: str) -> list[str]:
    """Replace whatever the archive has at path with a symlink into shared/."""
    inside = f"{partial}/{quote(path)}"
    parent = posixpath.dirname(path)
    lines = [f"rm -rf {inside}"]
    if parent:
        lines.append(f"mkdir -p {partial}/{quote(parent)}")
    lines.append(f"ln -s {shared}/{quote(path)} {inside}")
    return lines


def switch_script(deploy_to: str, release: str) -> str:
    """Point current at the release: a new symlink renamed over the old one, so there is no moment without one."""
    temporary = quote(f".current.{release}")
    return "\n".join([
        "set -eu",
        f"cd {quote(deploy_to)}",
        f"[ -d {quote('releases/' + release)} ] || exit {RELEASE_MISSING}",
        f"ln -sfn {quote(f'{deploy_to}/releases/{release}')} {temporary}",
        f"mv -T {temporary} current",
    ]) + "\n"


def remove_current_script(deploy_to: str) -> str:
    """Undo a first deploy: there is no previous release to go back to."""
    return f"rm -f {quote(deploy_to)}/current\n"


def command_in_current(deploy_to: str, command: str) -> str:
    """Run the stage file's restart or check command inside the live release, in its own sh."""
    return f"cd {quote(deploy_to)}/current && sh -c {quote(command)}\n"


def record_script(deploy_to: str, log_line: str, remove: list[str] = ()) -> str:
    """Append to revisions.log; remove old releases and folders left by interrupted unpacks."""
    lines = ["set -eu", f"cd {quote(deploy_to)}", f"printf '%s\\n' {quote(log_line)} >> revisions.log",
             "rm -rf releases/.*.partial"]
    if remove:
        lines.append("rm -rf -- " + " ".join(quote(f"releases/{name}") for name in remove))
    return "\n".join(lines) + "\n"


def discard_script(deploy_to: str, release: str) -> str:
    """Remove a release that never went live (or was switched away from); never the live one."""
    root, path = quote(deploy_to), quote(f"{deploy_to}/releases/{release}")
    return f'if [ "$(readlink {root}/current || true)" != {path} ]; then rm -rf {path}; fi\n'


def releases_to_remove(releases, keep: int, current: str | None, previous: str | None) -> list[str]:
    """All but the newest `keep` releases, never current nor previous; names skycap did not make are left alone."""
    dated = sorted({name for name in releases if RELEASE_NAME_RE.match(name)})
    kept = set(dated[-keep:]) | {current, previous}
    return [name for name in dated if name not in kept]
