"""The release ledger: every deploy, rollback, scale and unlock of a stage is a numbered release.

Releases live in the stage's namespace, one Secret each (not on the machine that ran the deploy), so a
rollback during an incident needs nothing but the cluster. A Secret holds a JSON document
(`release.json`) and the rendered manifests, gzip-compressed (`manifests.gz`); manifests too big for
one Secret continue in part Secrets, which carry no release label and so never show up in a listing.
"""

from __future__ import annotations

import base64
import getpass
import gzip
import hashlib
import itertools
import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone

from skycap.cluster.kube import drained
from skycap.cluster.labels import (
    DIGEST_ANNOTATION,
    MANAGED_BY,
    PART_LABEL,
    PARTS_ANNOTATION,
    RELEASE_LABEL,
    STAGE_LABEL,
    STATUS_LABEL,
)
from skycap.errors import BadInput, LockLost

STATUSES = ("pending", "deployed", "failed", "rolled-back", "superseded", "interrupted", "recorded")
KINDS = ("deploy", "rollback", "scale", "unlock", "restart")
GOOD_STATUSES = ("deployed", "superseded")
DEFAULT_KEEP = 20

RELEASE_TYPE = "skycap.io/release"
PART_TYPE = "skycap.io/release-part"
DOCUMENT_KEY = "release.json"
MANIFESTS_KEY = "manifests.gz"
# A Secret holds at most 1 MiB of data; what is left over is room for release.json.
CHUNK_BYTES = 768 * 1024
DOCUMENT_FORMAT = 1


@dataclass
class Release:
    number: int
    kind: str  # one of KINDS
    status: str  # one of STATUSES
    rev: str | None
    node: str | None
    tags: dict[str, str]  # service -> image tag
    who: str  # user@host, or the CI job
    started: str  # ISO 8601 UTC
    finished: str | None
    note: str = ""  # "rollback to 3", a failure reason, "lock broken (held by ...)"
    target: int | None = None  # for rollbacks: the release rolled back to
    applied: list[str] = field(default_factory=list)  # kind/name of the objects applied so far
    vm: dict = field(default_factory=dict)  # per VM service: release dir name per host
    services: list[str] = field(default_factory=list)
    manifests: str | None = None  # YAML text; None when listed without it
    manifests_size: int = 0  # bytes of YAML stored with the release (0: it carries none)
    resource_version: str | None = None  # of its Secret as last read or written: status writes are conditional on it
    objects: list[dict] | None = field(default=None, repr=False, compare=False)  # the manifests, parsed and checked


def restorable(release: Release) -> bool:
    """Whether a rollback can go back to `release`: it ran, and it recorded manifests or VM releases."""
    return release.status in GOOD_STATUSES and (release.manifests_size > 0 or bool(release.vm))


def vm_releases(recorded: dict, results: dict) -> dict:
    """What each VM service runs after a release: what it `recorded` (the release it started from: a
    scale, restart or rollback leaves the hosts as they were), overridden by the release folder each
    deploy or rollback in `results` (VmResult dicts by service) switched the hosts to."""
    switched = {name: result.get("release") for name, result in results.items()
                if result.get("action") in ("deploy", "rollback") and result.get("release") and result.get("hosts")}
    return {**recorded, **switched}


def who_am_i() -> str:
    """The CI job that runs us (its URL, and who started it when known), else user@host."""
    return _ci_job(os.environ) or f"{user_name()}@{socket.gethostname()}"


def _ci_job(env) -> str | None:
    github_run = None
    if env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        github_run = f"{server}/{env.get('GITHUB_REPOSITORY', '?')}/actions/runs/{env['GITHUB_RUN_ID']}"
    systems = (  # (set when running there, name, job URL, who started it)
        ("GITLAB_CI", "gitlab", env.get("CI_JOB_URL"), env.get("GITLAB_USER_LOGIN")),
        ("GITHUB_ACTIONS", "github", github_run, env.get("GITHUB_ACTOR")),
        ("BUILDKITE", "buildkite", env.get("BUILDKITE_BUILD_URL"), env.get("BUILDKITE_BUILD_CREATOR")),
        ("JENKINS_URL", "jenkins", env.get("BUILD_URL"), env.get("BUILD_USER_ID")),
        ("CIRCLECI", "circleci", env.get("CIRCLE_BUILD_URL"), env.get("CIRCLE_USERNAME")),
        ("TEAMCITY_VERSION", "teamcity", env.get("BUILD_URL"), None),
        ("CI", "ci", None, None),
    )
    for marker, name, url, actor in systems:
        if env.get(marker):
            where = f"{name} {url}" if url else f"{name} on {socket.gethostname()}"
            return f"{where} by {actor}" if actor else where
    return None


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (some containers)
        return f"uid{os.getuid()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    """The releases of one stage, kept in its namespace."""

    def __init__(self, api_client, namespace: str, stage: str):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.stage = stage
        self.problems: list[str] = []  # ledger objects the last listing could not read
        self.highest_number = 0  # the highest release number the last listing saw, readable or not

    # -- reading --------------------------------------------------------------------------------

    def releases(self) -> list[Release]:
        """Newest first, without manifests, in one API call. Unreadable objects land in self.problems."""
        releases, self.problems = [], []
        secrets = self._list_secrets()
        self.highest_number = _highest_label(secrets)
        for secret in secrets:
            try:
                releases.append(decode_release(secret))
            except ValueError as exc:
                self.problems.append(f"secret {secret['metadata']['name']} is not a readable release ({exc}); "
                                     "skipped")
        return sorted(releases, key=lambda release: release.number, reverse=True)

    def get(self, number: int, with_manifests: bool = True) -> Release:
        secret = self._read_secret(self.secret_name(number))
        if secret is None:
            raise BadInput(f"release {number} of stage {self.stage} does not exist", self._known_numbers())
        try:
            release = decode_release(secret)
            if with_manifests:
                release.manifests = self._read_manifests(secret)
                release.objects = checked_objects(release.manifests, self.namespace)
        except Refused as exc:
            raise BadInput(f"release {number} of stage {self.stage} is refused: {exc}; a ledger entry that no "
                           "deploy could have written is never applied nor pruned",
                           f"it is the Secret {secret['metadata']['name']} in namespace {self.namespace}, edited "
                           f"by hand or forged; pick another release from `skycap history {self.stage}`") from None
        except ValueError as exc:
            raise BadInput(f"release {number} of stage {self.stage} cannot be read: {exc}",
                           f"it is the Secret {secret['metadata']['name']} in namespace {self.namespace}") from None
        return release

    @property
    def next_number(self) -> int:
        """The number the next release gets, as the last listing saw the ledger."""
        return self.highest_number + 1

    def _listed(self, releases: list[Release] | None) -> list[Release]:
        return self.releases() if releases is None else releases

    def current(self) -> Release | None:
        """The newest release with status deployed: what runs now."""
        return next((release for release in self.releases() if release.status == "deployed"), None)

    def last_good_before(self, number: int, releases: list[Release] | None = None) -> Release | None:
        """The newest release older than `number` that a rollback can go back to (see restorable).
        `releases`, here and below: a listing made under the stage lock, to use instead of listing again."""
        for release in self._listed(releases):
            if release.number < number and restorable(release):
                return self.get(release.number)
        return None

    # -- writing --------------------------------------------------------------------------------

    def begin(self, kind: str, *, rev=None, node=None, tags=None, manifests: str = "", services=None, note: str = "",
              target=None, number: int | None = None) -> Release:
        """Record a new pending release. Its number is the highest + 1, claimed by creating its Secret;
        `number`: that number as a listing made under the stage lock saw it, instead of listing again
        (a number taken meanwhile is skipped, so the caller can tell)."""
        if kind not in KINDS:
            raise ValueError(f"unknown release kind {kind!r}")
        manifests = manifests or ""
        release = Release(number=0, kind=kind, status="pending", rev=rev, node=node, tags=dict(tags or {}),
                          who=who_am_i(), started=utc_now(), finished=None, note=note, target=target,
                          services=list(services or []), manifests=manifests,
                          manifests_size=len(manifests.encode()))
        chunks, digest = compress(manifests)
        for candidate in itertools.count(number or self._highest_number() + 1):
            release.number = candidate
            created = self._create_secret(self._release_secret(release, chunks[0], len(chunks) - 1, digest))
            if created:
                release.resource_version = created["metadata"]["resourceVersion"]
                break
        self._create_parts(release.number, chunks[1:])
        return release

    def update(self, release: Release) -> None:
        """Write the release's document (status, finished, note, applied, vm ...); the manifests stay.

        Only over the version of its Secret that was last read or written (optimistic concurrency): a
        writer whose view is stale, say a deploy that lost its lock and would write `deployed` over the
        `interrupted` someone else recorded meanwhile, gets LockLost instead of overwriting it."""
        from kubernetes.client.exceptions import ApiException

        metadata = {"labels": {STATUS_LABEL: release.status}}
        if release.resource_version:
            metadata["resourceVersion"] = release.resource_version
        patch = {"metadata": metadata, "data": {DOCUMENT_KEY: _b64(encode_document(release))}}
        try:
            response = self.core.patch_namespaced_secret(self.secret_name(release.number), self.namespace, patch,
                                                         _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                raise self._stale(release) from None
            self._raise_if_missing(exc, f"release {release.number} of stage {self.stage} is gone from the ledger")
            raise
        release.resource_version = json.loads(response.data)["metadata"]["resourceVersion"]

    def _stale(self, release: Release) -> LockLost:
        try:
            standing = self.get(release.number, with_manifests=False)
            now = f"it says {standing.status} now"
        except BadInput as exc:
            now = exc.message
        return LockLost(f"release {release.number} of stage {self.stage} was changed by someone else while this "
                        f"run wrote it as {release.status} ({now}); left as it is",
                        "this run's stage lock was lost or broken meanwhile; see `skycap history "
                        f"{self.stage}`")

    def update_if(self, release: Release, still) -> bool:
        """Update a release that is not this run's own (its listing may be stale): on a conflict, read it
        again and write only while still(release as it stands) holds. True when written."""
        try:
            self.update(release)
            return True
        except LockLost:
            standing = self.get(release.number, with_manifests=False)
            if not still(standing):
                return False
            release.resource_version = standing.resource_version
            self.update(release)
            return True

    def finish(self, release: Release, status: str, note: str | None = None,
               releases: list[Release] | None = None) -> None:
        """Record the outcome; a deployed release supersedes the one deployed before it."""
        if status not in STATUSES:
            raise ValueError(f"unknown release status {status!r}")
        release.status, release.finished = status, utc_now()
        if note is not None:
            release.note = note
        self.update(release)
        if status == "deployed":
            for older in self._listed(releases):
                if older.status == "deployed" and older.number < release.number:
                    older.status = "superseded"
                    self.update_if(older, lambda standing: standing.status == "deployed")

    def interrupt_pending(self, note: str, releases: list[Release] | None = None) -> list[int]:
        """Mark every pending release interrupted: call it while holding the stage lock, when a pending
        release can only belong to a holder that died (or whose lock was broken). `releases`: a listing
        made under the lock, if the caller has one."""
        marked = []
        for release in [release for release in self._listed(releases) if release.status == "pending"]:
            release.status, release.finished = "interrupted", utc_now()
            release.note = f"{release.note}; {note}" if release.note else note
            if self.update_if(release, lambda standing: standing.status == "pending"):
                marked.append(release.number)
        return marked

    def prune(self, keep: int = DEFAULT_KEEP, releases: list[Release] | None = None) -> list[int]:
        """Delete the oldest releases beyond `keep`; never the current one, the one a rollback would go
        back to (the last good one before it), nor a pending one."""
        releases = self._listed(releases)
        current = next((release for release in releases if release.status == "deployed"), None)
        fallback = current and next((release for release in releases if release.number < current.number
                                     and restorable(release)), None)
        doomed = [release.number for release in releases[keep:]
                  if release is not current and release is not fallback and release.status != "pending"]
        for number in doomed:
            self._delete_secret(self.secret_name(number))
        if doomed:
            numbers = ",".join(str(number) for number in doomed)
            drained(self.core.delete_collection_namespaced_secret(
                self.namespace, label_selector=f"{self._stage_selector()},{PART_LABEL} in ({numbers})",
                _preload_content=False))
        return doomed

    # -- the Secrets ----------------------------------------------------------------------------

    def secret_name(self, number: int) -> str:
        return f"skycap.{self.stage}.v{number}"

    def _stage_selector(self) -> str:
        return f"{MANAGED_BY}=skycap,{STAGE_LABEL}={self.stage}"

    def _labels(self) -> dict[str, str]:
        return {MANAGED_BY: "skycap", STAGE_LABEL: self.stage}

    def _release_secret(self, release: Release, first_chunk: bytes, parts: int, digest: str) -> dict:
        labels = {**self._labels(), RELEASE_LABEL: str(release.number), STATUS_LABEL: release.status}
        return {"apiVersion": "v1", "kind": "Secret", "type": RELEASE_TYPE,
                "metadata": {"name": self.secret_name(release.number), "labels": labels,
                             "annotations": {PARTS_ANNOTATION: str(parts), DIGEST_ANNOTATION: digest}},
                "data": {DOCUMENT_KEY: _b64(encode_document(release)), MANIFESTS_KEY: _b64(first_chunk)}}

    def _part_secret(self, number: int, index: int, chunk: bytes) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "type": PART_TYPE,
                "metadata": {"name": f"{self.secret_name(number)}.part{index}",
                             "labels": {**self._labels(), PART_LABEL: str(number)}},
                "data": {MANIFESTS_KEY: _b64(chunk)}}

    def _create_parts(self, number: int, chunks: list[bytes]) -> None:
        try:
            for index, chunk in enumerate(chunks, start=1):
                part = self._part_secret(number, index, chunk)
                if not self._create_secret(part):  # left over from a release deleted by hand: ours now
                    self._delete_secret(part["metadata"]["name"])
                    self._create_secret(part)
        except BaseException:
            # A release without all its parts would be unreadable: take it back whole.
            self._delete_secret(self.secret_name(number))
            for index in range(1, len(chunks) + 1):
                self._delete_secret(f"{self.secret_name(number)}.part{index}")
            raise

    def _read_manifests(self, secret: dict) -> str:
        annotations = secret["metadata"].get("annotations") or {}
        compressed = _unb64((secret.get("data") or {}).get(MANIFESTS_KEY, ""))
        for index in range(1, int(annotations.get(PARTS_ANNOTATION, "0")) + 1):
            part = self._read_secret(f"{secret['metadata']['name']}.part{index}")
            if part is None:
                raise ValueError(f"its manifests part {index} is missing")
            compressed += _unb64((part.get("data") or {}).get(MANIFESTS_KEY, ""))
        expected = annotations.get(DIGEST_ANNOTATION)
        if expected and hashlib.sha256(compressed).hexdigest() != expected:
            raise ValueError("its stored manifests do not match their checksum")
        try:
            return gzip.decompress(compressed).decode() if compressed else ""
        except (OSError, EOFError) as exc:
            raise ValueError(f"its manifests cannot be decompressed: {exc}") from None

    def _list_secrets(self) -> list[dict]:
        selector = f"{self._stage_selector()},{RELEASE_LABEL}"
        response = self.core.list_namespaced_secret(self.namespace, label_selector=selector,
                                                    _preload_content=False)
        items = json.loads(response.data)["items"]
        if not items:
            # Listing in a missing namespace answers an empty list, not 404.
            self._require_namespace()
        return items

    def _read_secret(self, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.read_namespaced_secret(name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def _create_secret(self, body: dict) -> dict | None:
        """The Secret as created, None when the name is taken."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.create_namespaced_secret(self.namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return None
            self._raise_if_missing(exc, f"the ledger of stage {self.stage} cannot be written: {_reason(exc)}")
            raise
        return json.loads(response.data)

    def _delete_secret(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            drained(self.core.delete_namespaced_secret(name, self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _highest_number(self) -> int:
        return _highest_label(self._list_secrets())

    def _known_numbers(self) -> str:
        numbers = sorted(release.number for release in self.releases())
        if not numbers:
            return f"the ledger of stage {self.stage} is empty"
        return "known releases: " + ", ".join(str(number) for number in numbers)

    def _require_namespace(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            drained(self.core.read_namespace(self.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                raise BadInput(f"namespace {self.namespace} (stage {self.stage}) does not exist",
                               "a deploy creates it when the stage file asks for that") from None
            if exc.status != 403:  # not allowed to read namespaces: assume it is there
                raise

    def _raise_if_missing(self, exc: BaseException, message: str) -> None:
        """Turn a 404 into BadInput: the namespace is gone, or else the object is."""
        if getattr(exc, "status", None) == 404:
            self._require_namespace()
            raise BadInput(message) from None


# -- what a release's manifests may hold -----------------------------------------------------------

KIND_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}$")
API_VERSION_RE = re.compile(r"^(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?v[0-9]+[a-z0-9]*$")
# A DNS subdomain, or (RBAC) a path segment with colons: never an option, a path, a list or a selector.
OBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.:]{0,251}[A-Za-z0-9])?$")


class Refused(ValueError):
    """A release's manifests hold what no deploy writes: a forged or corrupt ledger entry."""


def checked_objects(manifests: str, namespace: str) -> list[dict]:
    """The objects of a release's manifests, each a Kubernetes object of the stage's namespace whose kind
    and name kubectl can only read as a kind and a name; Refused names the first that is not."""
    from skycap.yamlio import YAMLError, load_all

    try:
        objects = [document for document in load_all(manifests) if document is not None]
    except YAMLError:
        raise Refused("its manifests are not valid YAML") from None
    for index, obj in enumerate(objects, start=1):
        problem = object_problem(obj, namespace)
        if problem:
            raise Refused(f"object {index} of its manifests {problem}")
    return objects


def object_problem(obj, namespace: str) -> str | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return "is not a Kubernetes object"
    kind, name, api_version = obj.get("kind"), obj["metadata"].get("name"), obj.get("apiVersion")
    if not isinstance(kind, str) or not KIND_RE.match(kind):
        return f"has kind {kind!r}, which is not a Kubernetes kind"
    if not isinstance(api_version, str) or not API_VERSION_RE.match(api_version):
        return f"({kind}) has apiVersion {api_version!r}, which is not an API version"
    if not isinstance(name, str) or not OBJECT_NAME_RE.match(name):
        return f"({kind}) has name {name!r}, which is not a Kubernetes object name"
    declared = obj["metadata"].get("namespace")
    if declared is not None and declared != namespace:
        return f"({kind}/{name}) is in namespace {declared!r}, not the stage's {namespace!r}"
    return None


# -- the release document ------------------------------------------------------------------------

_DOCUMENT_FIELDS = ("number", "kind", "status", "rev", "node", "tags", "who", "started", "finished", "note",
                    "target", "applied", "vm", "services", "manifests_size")


def encode_document(release: Release) -> str:
    document = {"format": DOCUMENT_FORMAT, **{name: getattr(release, name) for name in _DOCUMENT_FIELDS}}
    return json.dumps(document, sort_keys=True)


def decode_release(secret: dict) -> Release:
    """The release a Secret holds, without its manifests; ValueError says why it cannot be read."""
    raw = (secret.get("data") or {}).get(DOCUMENT_KEY)
    if raw is None:
        raise ValueError(f"no {DOCUMENT_KEY}")
    document = json.loads(_unb64(raw))
    if not isinstance(document, dict):
        raise ValueError(f"{DOCUMENT_KEY} is not a JSON object")
    try:
        release = _release_from_document(document)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{DOCUMENT_KEY} lacks or garbles {exc}") from None
    release.resource_version = secret["metadata"].get("resourceVersion")
    return release


def _release_from_document(document: dict) -> Release:
    number = document["number"]
    if not isinstance(number, int) or not all(isinstance(document[key], str) for key in ("kind", "status")):
        raise TypeError("number, kind or status")
    return Release(number=number, kind=document["kind"], status=document["status"], rev=document.get("rev"),
                   node=document.get("node"), tags=dict(document.get("tags") or {}),
                   who=str(document.get("who", "?")), started=str(document.get("started", "")),
                   finished=document.get("finished"), note=str(document.get("note") or ""),
                   target=document.get("target"), applied=list(document.get("applied") or []),
                   vm=dict(document.get("vm") or {}), services=list(document.get("services") or []),
                   manifests_size=int(document.get("manifests_size") or 0))


def compress(manifests: str) -> tuple[list[bytes], str]:
    """The gzipped manifests in Secret-sized chunks (at least one, maybe empty), and their sha256."""
    compressed = gzip.compress(manifests.encode(), compresslevel=6, mtime=0)
    chunks = [compressed[i:i + CHUNK_BYTES] for i in range(0, len(compressed), CHUNK_BYTES)]
    return chunks or [b""], hashlib.sha256(compressed).hexdigest()


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _highest_label(secrets: list[dict]) -> int:
    """The highest release number on the ledger's Secrets, readable or not (a number is never reused)."""
    numbers = [_int_or_none(secret["metadata"].get("labels", {}).get(RELEASE_LABEL)) for secret in secrets]
    return max((number for number in numbers if number is not None), default=0)


def _int_or_none(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _reason(exc) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(getattr(exc, "reason", exc))
