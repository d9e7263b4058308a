"""skycap.cluster.ledger, its pure parts: what a release's manifests may hold (a forged entry is refused
before kubectl sees it), the release document's encoding, compression into Secret-sized chunks."""

from __future__ import annotations

import base64
import gzip
import json
import random

import pytest

from skycap.cluster import ledger
from skycap.cluster.ledger import (CHUNK_BYTES, KINDS, STATUSES, Refused, Release, _ci_job, _highest_label,
                           checked_objects, compress, decode_release, encode_document, object_problem, restorable,
                           vm_releases)

NS = "shop"


def k8s(kind="ConfigMap", name="web-config", api_version="v1", **metadata) -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, **metadata}}


@pytest.mark.parametrize("obj", [
    k8s(),
    k8s("Deployment", "web", "apps/v1", namespace=NS),
    k8s("ClusterRoleBinding", "system:shop:reader", "rbac.authorization.k8s.io/v1"),
    k8s("Widget", "w.1", "example.com/v1beta1"),
])
def test_what_a_deploy_writes_is_accepted(obj):
    assert object_problem(obj, NS) is None


@pytest.mark.parametrize("obj, problem", [
    ("a string", "is not a Kubernetes object"),
    ({"kind": "ConfigMap", "metadata": "x"}, "is not a Kubernetes object"),
    (k8s(kind="--server=http:"), "has kind '--server=http:', which is not a Kubernetes kind"),
    (k8s(kind=None), "has kind None"),
    (k8s(kind="A" * 64), "which is not a Kubernetes kind"),
    (k8s(api_version="V1"), "(ConfigMap) has apiVersion 'V1', which is not an API version"),
    (k8s(api_version="apps/v1/x"), "which is not an API version"),
    (k8s(api_version="-x/v1"), "which is not an API version"),
    (k8s(name="/127.0.0.1:1"), "(ConfigMap) has name '/127.0.0.1:1', which is not a Kubernetes object name"),
    (k8s(name="-f"), "which is not a Kubernetes object name"),
    (k8s(name="a,b"), "which is not a Kubernetes object name"),
    (k8s(name="a/../b"), "which is not a Kubernetes object name"),
    (k8s(name="a=b"), "which is not a Kubernetes object name"),
    (k8s(name=["a"]), "has name ['a']"),
    (k8s(name="a" * 254), "which is not a Kubernetes object name"),
    (k8s(namespace="kube-system"), "(ConfigMap/web-config) is in namespace 'kube-system', not the stage's 'shop'"),
])
def test_what_no_deploy_writes_is_named(obj, problem):
    assert problem in object_problem(obj, NS)


def test_the_first_bad_object_is_named_by_its_place():
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"  # an empty document is no object
            "---\napiVersion: v1\nkind: x y\nmetadata: {name: b}\n")
    with pytest.raises(Refused, match=r"^object 2 of its manifests has kind 'x y'"):
        checked_objects(text, NS)


def test_checked_objects_skip_empty_documents_and_refuse_bad_yaml():
    assert [o["metadata"]["name"] for o in checked_objects("---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
                                                           NS)] == ["s"]
    assert checked_objects("", NS) == []
    with pytest.raises(Refused, match="its manifests are not valid YAML"):
        checked_objects("kind: [", NS)


def release(**changes) -> Release:
    fields = dict(number=7, kind="deploy", status="deployed", rev="abc", node="f" * 40, tags={"web": "v1"},
                  who="me@host", started="2024-05-01T12:00:00Z", finished="2024-05-01T12:01:00Z")
    return Release(**{**fields, **changes})


def as_secret(document: str, resource_version="42") -> dict:
    return {"metadata": {"name": "skycap.staging.v7", "resourceVersion": resource_version},
            "data": {"release.json": base64.b64encode(document.encode()).decode()}}


def test_a_release_document_round_trips_without_its_manifests():
    original = release(note="rollback to 3", target=3, applied=["Deployment/web"], vm={"legacy": "r7"},
                       services=["web"], manifests="kind: X\n", manifests_size=8)
    document = encode_document(original)
    assert "manifests\"" not in document and json.loads(document)["format"] == 1
    decoded = decode_release(as_secret(document))
    assert decoded.resource_version == "42" and decoded.manifests is None
    assert decoded == release(note="rollback to 3", target=3, applied=["Deployment/web"], vm={"legacy": "r7"},
                              services=["web"], manifests=None, manifests_size=8, resource_version="42")


@pytest.mark.parametrize("document, reason", [
    ('{"number": 1, "kind": 2, "status": "deployed"}', "lacks or garbles"),
    ('{"number": 1, "kind": "deploy"}', "lacks or garbles 'status'"),
    ("null", "not a JSON object"),
])
def test_a_garbled_document_says_what_it_lacks(document, reason):
    with pytest.raises(ValueError, match=reason):
        decode_release(as_secret(document))


def test_a_document_that_is_not_base64_is_refused():
    with pytest.raises(ValueError):
        decode_release({"metadata": {}, "data": {"release.json": "not base64!"}})


def test_compression_splits_into_chunks_and_joins_back(monkeypatch):
    [empty], _ = compress("")  # a release without manifests still has its one chunk
    assert gzip.decompress(empty) == b""
    monkeypatch.setattr(ledger, "CHUNK_BYTES", 1000)  # the real size needs megabytes of text to reach
    text = random.Random(7).randbytes(1500).hex()  # hex gzips to about half: two chunks
    chunks, digest = compress(text)
    assert [len(chunk) for chunk in chunks[:-1]] == [1000] * (len(chunks) - 1) and len(chunks) >= 2
    assert gzip.decompress(b"".join(chunks)).decode() == text
    assert compress(text)[1] == digest  # the same text, the same sha256 (no timestamp in the gzip)


def test_a_chunk_leaves_room_in_its_secret_for_the_release_document():
    assert CHUNK_BYTES <= 1024 * 1024 - 200 * 1024


@pytest.mark.parametrize("changes, expected", [
    (dict(), True),
    (dict(status="superseded"), True),
    (dict(status="failed"), False),
    (dict(status="rolled-back"), False),
    (dict(manifests_size=0), False),
    (dict(manifests_size=0, vm={"legacy": "r7"}), True),
])
def test_what_a_rollback_can_go_back_to(changes, expected):
    assert restorable(release(**{"manifests_size": 10, **changes})) is expected


def test_vm_hosts_keep_their_release_unless_a_deploy_switched_them():
    recorded = {"legacy": "r5", "batch": "r5"}
    results = {"legacy": {"action": "deploy", "release": "r7", "hosts": ["vm1"]},
               "batch": {"action": "restart", "release": "r9", "hosts": ["vm2"]},
               "new": {"action": "rollback", "release": "r3", "hosts": []}}
    assert vm_releases(recorded, results) == {"legacy": "r7", "batch": "r5"}


def test_the_highest_number_counts_unreadable_releases_and_skips_bad_labels():
    secrets = [{"metadata": {"labels": {"skycap.io/release": value}}} for value in ("3", "12", "x")]
    secrets.append({"metadata": {}})
    assert _highest_label(secrets) == 12
    assert _highest_label([]) == 0


def test_ci_jobs_name_themselves():
    assert _ci_job({}) is None
    assert _ci_job({"GITLAB_CI": "true", "CI_JOB_URL": "https://gl/j/1", "GITLAB_USER_LOGIN": "ann"}) == \
        "gitlab https://gl/j/1 by ann"
    assert _ci_job({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "9", "GITHUB_REPOSITORY": "o/r"}) == \
        "github https://github.com/o/r/actions/runs/9"


def test_the_kinds_and_statuses_every_command_records():
    assert set(KINDS) == {"deploy", "rollback", "scale", "unlock", "restart"}
    assert {"pending", "deployed", "failed", "rolled-back", "superseded", "interrupted"} <= set(STATUSES)
