"""Names: what the user types (a branch like feature/JIRA-1234_new-billing) -> valid DNS labels."""

from __future__ import annotations

import hashlib
import re

from skycap.errors import BadInput

ENV_NAME_RE = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9._/]{0,199}$")
DNS_LABEL_MAX = 63
DURATION_RE = re.compile(r"(\d+)\s*(w|d|h|m|s)")
UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
TTL_EXAMPLE = "write it like 8h, 30m, 2d, 1h30m or 90s"


def check_name(name: str) -> str:
    if not ENV_NAME_RE.match(name) or "//" in name or ".." in name:
        raise BadInput(f"{name!r} is not a valid environment name",
                       "use letters, digits and - _ . / (a branch name like feature/JIRA-1234_new-billing works), "
                       "at most 200 characters, starting with a letter or digit")
    return name


def dns_label(text: str, limit: int = DNS_LABEL_MAX, salt: str = "") -> str:
    """Lower case, runs of anything but [a-z0-9] as one '-', and when longer than `limit`, cut with a
    hash of the whole (and `salt`) appended, so two long names that share a prefix stay apart."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "env"
    if len(label) <= limit:
        return label
    digest = hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()[:8]
    return f"{label[:limit - len(digest) - 1].rstrip('-')}-{digest}"


def stage_name(name: str) -> str:
    """The environment's name where Skycap needs a stage name: labels, the lock's Lease, the ledger."""
    return dns_label(name)


def namespace_for(source_namespace: str, name: str) -> str:
    return dns_label(f"{source_namespace}-{stage_name(name)}", salt=source_namespace)


def parse_duration(text: str, what: str = "--ttl") -> int:
    """8h, 30m, 2d, 1h30m, 90s, 1w (a bare number is seconds) -> seconds; BadInput with an example otherwise."""
    cleaned = (text or "").strip().lower()
    if cleaned.isdigit():
        cleaned += "s"
    parts = DURATION_RE.findall(cleaned)
    if not parts or DURATION_RE.sub("", cleaned).strip():
        raise BadInput(f"{what} {text!r} is not a duration", TTL_EXAMPLE)
    seconds = sum(int(number) * UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise BadInput(f"{what} {text!r} must be longer than zero", TTL_EXAMPLE)
    return seconds


def human_duration(seconds: float) -> str:
    """A short rounded duration: 45s, 12m, 3h20m, 2d4h; negative values as 'N ago'."""
    if seconds < 0:
        return f"{human_duration(-seconds)} ago"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
