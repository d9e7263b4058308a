"""What a deploy would change, read from one `kubectl diff`: which objects it creates or changes,
and the diff itself without what Skycap stamps on every release (the release number and node
annotations, and what the API server changes because they changed). `diff` and `deploy --dry-run`
both read it here, so they agree object by object."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skycap.cluster.labels import LAST_APPLIED, NODE_ANNOTATION, RELEASE_ANNOTATION
from skycap.cluster.redact import MASK

# Lines every deploy changes by itself: they do not make an object "changed". A Secret's
# last-applied annotation arrives masked (skycap.cluster.redact): its lines then start with the mask.
BOOKKEEPING = (f"{RELEASE_ANNOTATION}:", f"{NODE_ANNOTATION}:", LAST_APPLIED,
               '{"apiVersion"', "generation:", "resourceVersion:", "time:", "f:skycap.io/", MASK)
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")


@dataclass
class FileDiff:
    """One object's part of a kubectl diff: its header lines and its hunks (each a list of lines)."""

    name: str  # group.version.Kind.namespace.name, as kubectl names the file
    header: list[str] = field(default_factory=list)
    hunks: list[list[str]] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return any(hunk[0].startswith("@@ -0,0 ") for hunk in self.hunks)

    def essential(self) -> "FileDiff":
        """This diff without Skycap's stamps: a hunk that changes nothing else is left out."""
        if self.created:
            return self
        hunks = [kept for kept in map(_without_bookkeeping, self.hunks) if kept]
        return FileDiff(self.name, self.header, hunks)

    def text(self) -> str:
        return "".join(self.header) + "".join("".join(hunk) for hunk in self.hunks)


def parse_diff(text: str) -> list[FileDiff]:
    files: list[FileDiff] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("diff "):
            files.append(FileDiff(line.split()[-1].rsplit("/", 1)[-1], [line]))
        elif not files:
            continue
        elif line.startswith("@@ "):
            files[-1].hunks.append([line])
        elif files[-1].hunks:
            files[-1].hunks[-1].append(line)
        else:
            files[-1].header.append(line)
    return files


def _is_bookkeeping(line: str) -> bool:
    return line[:1] in "+-" and line[1:].strip().startswith(BOOKKEEPING)


def _without_bookkeeping(hunk: list[str]) -> list[str]:
    """The hunk without its bookkeeping lines, its line counts made to match; [] when nothing else changes."""
    lines = [line for line in hunk[1:] if not _is_bookkeeping(line)]
    if not any(line[:1] in "+-" for line in lines):
        return []
    found = HUNK.match(hunk[0].rstrip("\n"))
    if not found:
        return [hunk[0], *lines]
    old = sum(1 for line in lines if line[:1] in " -")
    new = sum(1 for line in lines if line[:1] in " +")
    return [f"@@ -{found.group(1)},{old} +{found.group(3)},{new} @@{found.group(5)}\n", *lines]


def essential_diff(text: str) -> str:
    """The diff of what would really change: Skycap's own stamps left out (`-v` shows them)."""
    return "".join(essential.text() for essential in (f.essential() for f in parse_diff(text)) if essential.hunks)


def classify_diff(rendered, diff_text: str) -> dict[str, list[str]]:
    """Each rendered object's fate: create (all new), change (more than Skycap's stamps differ), or unchanged."""
    created, changed = set(), set()
    for file in parse_diff(diff_text):
        if file.created:
            created.add(file.name)
        elif file.essential().hunks:
            changed.add(file.name)
    plan = {"create": [], "change": [], "unchanged": []}
    for manifest in rendered.manifests:
        api_version = manifest.obj["apiVersion"].replace("/", ".")
        namespace = manifest.obj["metadata"].get("namespace", "")
        key = ".".join(part for part in (api_version, manifest.kind, namespace, manifest.name) if part)
        action = "create" if key in created else "change" if key in changed else "unchanged"
        plan[action].append(manifest.ref())
    return plan


def plan_lines(plan: dict[str, list[str]]) -> list[str]:
    return [f"    {action:<9} {ref}" for action in ("create", "change", "unchanged") for ref in plan[action]]
