"""Secret values out of what kubectl prints, before it reaches the run log or the screen.

A Secret's `data` and `stringData` values are replaced, and so is its last-applied-configuration
annotation's copy of them (`kubectl apply` keeps the Secret as applied there, stringData in clear).
kubectl prints Secrets as JSON (`get -o json`, what Skycap asks for), YAML, or in a `kubectl diff`.
"""

from __future__ import annotations

import json
import re

from skycap.cluster.labels import LAST_APPLIED

MASK = "***"
_VALUES_BLOCK = re.compile(r"^(\s*)(data|stringData):\s*$")
_ANNOTATION = re.compile(r"^(\s*)" + re.escape(LAST_APPLIED) + r":")
_KEY_VALUE = re.compile(r"^(\s*[^:\s][^:]*:)(\s*)(.*)$")


def redact(text: str) -> str:
    """text with every Secret value it shows replaced by ***; anything else as it was."""
    if not text or "Secret" not in text:
        return text
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.dumps(redact_object(json.loads(text)), indent=4) + "\n"
        except ValueError:
            pass
    if text.startswith("diff ") or "\ndiff " in text:
        return redact_diff(text)
    if re.search(r"^kind: Secret\s*$", text, re.M):
        return _redact_yaml(text)
    return text


def redact_object(value):
    """A copy of a decoded object (a list, or anything holding Kubernetes objects) without Secret values."""
    if isinstance(value, list):
        return [redact_object(item) for item in value]
    if not isinstance(value, dict):
        return value
    copy = {key: redact_object(item) for key, item in value.items()}
    if copy.get("kind") != "Secret":
        return copy
    for key in ("data", "stringData"):
        if isinstance(copy.get(key), dict):
            copy[key] = {name: MASK for name in copy[key]}
    annotations = (copy.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        annotations[LAST_APPLIED] = _redacted_last_applied(annotations[LAST_APPLIED])
    return copy


def _redacted_last_applied(text) -> str:
    try:
        return json.dumps(redact_object(json.loads(text)), separators=(",", ":"))
    except (TypeError, ValueError):
        return MASK


def _redact_yaml(text: str) -> str:
    from skycap.yamlio import YAMLError, dump_all, load_all

    try:
        return dump_all(redact_object(document) for document in load_all(text))
    except YAMLError:
        return _redact_lines(text.splitlines(keepends=True), prefixed=False)


def redact_diff(text: str) -> str:
    """A `kubectl diff` (files named group.version.Kind.namespace.name) without the values of its Secrets."""
    out, section = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("diff "):
            out.append(_section(section))
            section = []
        section.append(line)
    out.append(_section(section))
    return "".join(out)


def _section(lines: list[str]) -> str:
    if not lines or not lines[0].startswith("diff ") or ".Secret." not in lines[0].split()[-1].rsplit("/", 1)[-1]:
        return "".join(lines)
    return _redact_lines(lines, prefixed=True)


def _redact_lines(lines: list[str], *, prefixed: bool) -> str:
    """Line by line, YAML as kubectl prints it: values under data:/stringData:, and the
    last-applied annotation with what continues it, masked. `prefixed`: diff lines (a +, - or space first)."""
    out, masking_below = [], None  # the indent a masked block's lines are deeper than
    for line in lines:
        if prefixed and (line[:1] not in " +-" or line.startswith(("+++", "---"))):
            out.append(line)
            continue
        mark, body = (line[:1], line[1:]) if prefixed else ("", line)
        indent = len(body) - len(body.lstrip())
        if masking_below is not None and body.strip() and indent > masking_below:
            out.append(mark + _masked_value(body, mark) + "\n")
            continue
        masking_below = None
        block, annotation = _VALUES_BLOCK.match(body), _ANNOTATION.match(body)
        if block:
            masking_below = len(block.group(1))
        elif annotation:
            masking_below = len(annotation.group(1))
            line = f"{mark}{annotation.group(0)} {MASK}\n"
        out.append(line)
    return "".join(out)


def _masked_value(body: str, mark: str) -> str:
    """`  KEY: value` as `  KEY: ***` (kubectl's own mask kept as it is); any other line as `  ***`."""
    indent = body[:len(body) - len(body.lstrip())]
    pair = _KEY_VALUE.match(body.rstrip("\n"))
    if pair and pair.group(3).startswith(MASK):
        return body.rstrip("\n")
    side = {"-": " (before)", "+": " (after)"}.get(mark, "")
    if pair and not pair.group(1).strip().startswith(("{", "[", '"')):
        return f"{pair.group(1)} {MASK}{side}"
    return f"{indent}{MASK}{side}"
