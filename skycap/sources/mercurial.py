"""Mercurial revision -> node -> image tag, resolved once, locally.

A local path is used as it is; a URL is mirrored in a cached clone under
$XDG_CACHE_HOME/skycap/hg/ that is pulled before each resolution.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from skycap.errors import BadInput, CommandFailed
from skycap.proc import run

REMOTE_SCHEMES = ("http", "https", "ssh")
DOCKER_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
FULL_NODE_RE = re.compile(r"^[0-9a-f]{40}$")
# No tag, bookmark, branch or revset needs these; '&' and '|' have the words 'and' and 'or'.
FORBIDDEN_CHARS = set("`$;&|<>\\")
MAX_REV_LENGTH = 500
NOT_DEPLOYABLE = {"0" * 40: "the null revision", "f" * 40: "the working directory"}
FIELDS = "{node}\x1f{branch}\x1f{user}\x1f{date|isodatesec}\x1f{desc|firstline}\x1e"
TAGS_FROM_NODE = {"{node|short}": lambda node: node[:12], "{node}": lambda node: node}
LOCAL_TIMEOUT = 60
NETWORK_TIMEOUT = 600


@dataclass(frozen=True)
class Revision:
    rev: str          # as the user typed it
    node: str         # 40 hex digits
    tag: str          # the image tag made by the stage's image_tag template
    branch: str
    user: str
    date: str         # ISO 8601, with the committer's offset
    summary: str      # first line of the description

    @property
    def short(self) -> str:
        return self.node[:12]


def resolve(source: str, rev: str, image_tag_template: str = "{node|short}") -> Revision:
    """Resolve rev in the repository at source (path or URL) to exactly one changeset."""
    check_rev(rev)
    repo = local_repo(source, want=rev if FULL_NODE_RE.match(rev) else None)
    changesets = _log(repo, source, rev, limit=6)
    if not changesets:
        raise BadInput(f"revision {rev!r} names no changeset in {display(source)}")
    if len(changesets) > 1:
        raise _several(repo, source, rev, changesets)
    node, branch, user, date, summary = changesets[0]
    if node in NOT_DEPLOYABLE:
        raise BadInput(f"revision {rev!r} is {NOT_DEPLOYABLE[node]}, not a committed changeset")
    tag = _image_tag(repo, node, image_tag_template)
    return Revision(rev=rev, node=node, tag=tag, branch=branch, user=user, date=date, summary=summary)


def check_rev(rev: str) -> None:
    """Refuse what no revision contains before it reaches hg."""
    if not isinstance(rev, str) or not rev.strip():
        raise BadInput("the revision is empty", "pass rev=REV: a hash, tag, bookmark, branch or revset")
    bad = sorted({c for c in rev if c in FORBIDDEN_CHARS or not c.isprintable()})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        hint = ("in a revset, write 'and' and 'or' instead of '&' and '|'" if {"&", "|"} & set(bad)
                else "a revision is a hash, tag, bookmark, branch name or revset")
        raise BadInput(f"revision {rev!r} has characters no revision has: {shown}", hint)
    if rev.lstrip().startswith("-"):
        raise BadInput(f"revision {rev!r} starts with '-': a revision is never a command-line option")
    if len(rev) > MAX_REV_LENGTH:
        raise BadInput(f"revision is {len(rev)} characters long: more than {MAX_REV_LENGTH} is not a revision")


def archive(source: str, node: str, dest_tgz: str | os.PathLike) -> Path:
    """Write the files of changeset node to dest_tgz (gzip tar, files at its root)."""
    repo = local_repo(source, want=node)
    _hg(repo, source, "archive", "-r", node, "-t", "tgz", "-p", ".", "--", str(dest_tgz))
    return Path(dest_tgz)


def local_repo(source: str, want: str | None = None) -> str:
    """The local repository to run hg in: source itself, or the cached clone of a URL, pulled.

    When want is a full node already in the cache, nothing is pulled: a node never changes.
    """
    scheme = urlsplit(source).scheme.lower() if "://" in source else ""
    if scheme == "file":
        return local_repo(urlsplit(source).path)
    if scheme and scheme not in REMOTE_SCHEMES:
        raise BadInput(f"cannot read a Mercurial repository from {display(source)}",
                       "hg: takes a local path or an http://, https:// or ssh:// URL")
    if not scheme:
        if not (Path(source) / ".hg").is_dir():
            raise BadInput(f"no Mercurial repository at {source}",
                           "check the stage's hg: setting (a path is relative to the stage file)")
        return source
    cache = cache_dir() / hashlib.sha256(source.encode()).hexdigest()[:24]
    if not (cache / ".hg").is_dir():
        _clone(source, cache)
    elif not (want and _has_node(str(cache), source, want)):
        with _credentials(source) as (url, config):
            _hg(str(cache), source, *config, "pull", "--", url, timeout=NETWORK_TIMEOUT)
    return str(cache)


def reach(source: str) -> str:
    """Whether the repository answers, without cloning or pulling (for `skycap doctor`): a URL's tip
    as the server gives it; for a local path, that it holds a repository (hg itself is not started:
    on a busy machine its start-up alone takes seconds). BadInput saying why not."""
    if "://" not in source or source.lower().startswith("file:"):
        path = Path(local_repo(source))  # a path without a repository gets its clear message there
        if not (path / ".hg" / "requires").is_file() and not (path / ".hg" / "store").is_dir():
            raise BadInput(f"{path} has a .hg folder but no repository in it", "check the stage's hg: setting")
        return f"local repository {path}"
    tip = _hg(None, source, "identify", "--id", "-r", "tip", "--", source, timeout=15).stdout.strip()
    return f"{display(source)} answers (tip {tip})"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skycap" / "hg"


def display(source: str) -> str:
    """source with any password in a URL masked."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    if parts.password is None:
        return source
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _credentials(source: str):
    """(the URL without its password, hg's options to find it): a password in a URL would show in hg's
    command line to anyone on the machine (ps, /proc), so it goes in a private hgrc (0600) as an
    [auth] entry instead, deleted when hg is done."""
    parts = urlsplit(source)
    if parts.password is None:
        yield source, ()
        return
    host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
    where = host + (f":{parts.port}" if parts.port else "")
    fd, path = tempfile.mkstemp(prefix="skycap-hgrc-", suffix=".rc")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as hgrc:
            hgrc.write(f"[auth]\nskycap.prefix = {urlunsplit(parts._replace(netloc=where))}\n"
                       f"skycap.username = {unquote(parts.username or '')}\n"
                       f"skycap.password = {unquote(parts.password)}\n")
        user = f"{parts.username}@" if parts.username else ""
        yield urlunsplit(parts._replace(netloc=user + where)), ("--config-file", path)
    finally:
        os.unlink(path)


def hg_executable() -> str:
    # The mercurial package installs hg beside the interpreter running skycap, on PATH or not.
    beside = Path(sys.executable).parent / "hg"
    return str(beside) if beside.exists() else "hg"


def _clone(source: str, cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Clone beside the final place, then rename: an interrupted clone leaves no half repository.
    tmp = tempfile.mkdtemp(prefix=".clone-", dir=cache.parent)
    try:
        with _credentials(source) as (url, config):
            _hg(None, source, *config, "clone", "--noupdate", "--", url, os.path.join(tmp, "repo"),
                timeout=NETWORK_TIMEOUT)
        try:
            os.rename(os.path.join(tmp, "repo"), cache)
        except OSError:
            if not (cache / ".hg").is_dir():  # else another run cloned it first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _has_node(repo: str, source: str, node: str) -> bool:
    try:
        return bool(_hg(repo, source, "log", "-r", node, "-T", "{node}").stdout)
    except BadInput:
        return False


def _log(repo: str, source: str, rev: str, limit: int) -> list[list[str]]:
    out = _hg(repo, source, "log", "-r", rev, "-l", str(limit), "-T", FIELDS, rev=rev).stdout
    return [record.split("\x1f") for record in out.split("\x1e") if record]


def _several(repo: str, source: str, rev: str, changesets: list[list[str]]) -> BadInput:
    count = len(_hg(repo, source, "log", "-r", rev, "-T", ".", rev=rev).stdout)
    shown = "\n    ".join(_describe(c) for c in changesets[:5])
    more = f"\n    ... and {count - 5} more" if count > 5 else ""
    return BadInput(f"revision {rev!r} names {count} changesets in {display(source)}; a deploy needs exactly one",
                    f"they are:\n    {shown}{more}\n  pick one by its hash, or narrow the revset (max(...), last(...))")


def _ambiguous(repo: str, source: str, prefix: str) -> BadInput:
    everything = _hg(repo, source, "log", "-r", "all()", "-T", "{node}\n").stdout.split()
    nodes = [n for n in everything if n.startswith(prefix)]
    revs = [arg for node in nodes[:10] for arg in ("-r", node)]
    listing = _hg(repo, source, "log", *revs, "-T", FIELDS).stdout if nodes else ""
    shown = "\n    ".join(_describe(r.split("\x1f")) for r in listing.split("\x1e") if r)
    return BadInput(f"short hash {prefix!r} is ambiguous in {display(source)}: {len(nodes)} changesets start with it",
                    f"candidates:\n    {shown}\n  give more digits of the hash")


def _describe(fields: list[str]) -> str:
    node, branch, user, date, summary = fields
    return f"{node[:12]}  {date}  {summary}"


def _image_tag(repo: str, node: str, template: str) -> str:
    if template in TAGS_FROM_NODE:
        tag = TAGS_FROM_NODE[template](node)
    else:
        try:
            tag = run(_argv(repo, "log", "-r", node, "-T", template), env=_env(), timeout=LOCAL_TIMEOUT).stdout
        except CommandFailed as exc:
            raise BadInput(f"image_tag template {template!r} is not a valid Mercurial template: "
                           f"{_message(exc.stderr)}") from None
    if not DOCKER_TAG_RE.match(tag):
        raise BadInput(f"image_tag template {template!r} makes {tag!r} for {node[:12]}, which is not a valid image tag",
                       "a tag is 1 to 128 letters, digits, '_', '.' and '-', and does not start with '.' or '-'")
    return tag


def _hg(repo: str | None, source: str, *args: str, rev: str | None = None, timeout: float = LOCAL_TIMEOUT):
    try:
        return run(_argv(repo, *args), env=_env(), timeout=timeout,
                   missing_hint="install Mercurial (pip install mercurial) or put hg on PATH")
    except CommandFailed as exc:
        raise _explain(exc, repo, source, rev) from None


def _argv(repo: str | None, *args: str) -> list[str]:
    argv = [hg_executable(), "--noninteractive", "--config", "ui.interactive=false"]
    return argv + (["-R", repo] if repo else []) + list(args)


def _env() -> dict[str, str]:
    # HGPLAIN: no aliases, defaults, i18n or pager from the user's hgrc change what we parse.
    return {"HGPLAIN": "1", "HGENCODING": "utf-8"}


def _explain(exc: CommandFailed, repo: str | None, source: str, rev: str | None) -> BadInput:
    """Turn hg's failure into a message about what the user gave."""
    message = _message(exc.stderr) or _message(exc.stdout) or exc.message
    password = urlsplit(source).password if "://" in source else None
    if password:
        message = message.replace(password, "***")
    where = display(source)
    if exc.returncode == -1:
        return BadInput(f"hg did not finish in time on {where}: {message}")
    ambiguous = re.search(r"ambiguous revision identifier: '?([0-9a-f]+)", message)
    if ambiguous and repo and rev is not None:
        return _ambiguous(repo, source, ambiguous.group(1))
    unknown = re.search(r"unknown revision '(.*)'", message)
    if unknown and rev is not None:
        part = f" (hg does not know {unknown.group(1)!r})" if unknown.group(1) != rev else ""
        remote = "://" in source
        return BadInput(f"unknown revision {rev!r} in {where}{part}",
                        "has it been pushed there?" if remote else "is it committed in that repository?")
    if "parse error" in message and rev is not None:
        return BadInput(f"revision {rev!r} is not a valid revision or revset: {message}")
    if "://" in source and any(verb in exc.argv for verb in ("clone", "pull")):
        return BadInput(f"cannot reach the Mercurial repository {where}: {message}",
                        "check the stage's hg: URL, the network, and that the server is up")
    if "repository" in message and "not found" in message:
        return BadInput(f"no Mercurial repository at {where}", "check the stage's hg: setting")
    return BadInput(f"hg failed on {where}: {message}")


def _message(text: str) -> str:
    """hg's own one-line reason: its first 'abort:' or 'hg:' line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    main = next((line for line in lines if line.startswith(("abort: ", "hg: "))), lines[-1] if lines else "")
    return main.removeprefix("abort: ").removeprefix("hg: ")
