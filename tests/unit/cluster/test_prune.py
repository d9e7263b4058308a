"""skycap.cluster.prune, its pure parts: what the previous release applied that this one no longer renders,
and which of those live objects are kept anyway (volume claims, opted out, Skycap's own)."""

from __future__ import annotations

import pytest

from skycap.cluster.ledger import PART_TYPE, RELEASE_TYPE, Refused, Release
from skycap.cluster.lock import lease_name
from skycap.cluster.prune import gone_objects, kept_because
from skycap.project.render import Manifest, Rendered

NS = "shop"


def k8s(kind: str, name: str, **extra) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, **extra.pop("metadata", {})}, **extra}


def previous(*objects: dict, manifests: str = "x") -> Release:
    release = Release(number=3, kind="deploy", status="deployed", rev="a", node="b", tags={}, who="me",
                      started="", finished=None, manifests=manifests)
    release.objects = list(objects)
    return release


def rendered(*objects: dict) -> Rendered:
    return Rendered([Manifest(obj, "t.yaml.j2", "web") for obj in objects])


def test_what_left_the_stage_is_gone_by_kind_and_name():
    before = previous(k8s("Deployment", "web"), k8s("Service", "web"), k8s("ConfigMap", "old"),
                      k8s("Namespace", NS), k8s("Deployment", "worker"))
    now = rendered(k8s("Deployment", "web"), k8s("Service", "web"), k8s("StatefulSet", "worker"))
    assert gone_objects(before, now, NS) == [("ConfigMap", "old"), ("Deployment", "worker")]


@pytest.mark.parametrize("release, now", [
    (None, rendered(k8s("Deployment", "web"))),
    (previous(k8s("ConfigMap", "old"), manifests=""), rendered(k8s("Deployment", "web"))),
    (previous(k8s("ConfigMap", "old")), rendered()),  # an empty render never prunes everything
    (previous(k8s("ConfigMap", "old")), None),
])
def test_nothing_is_gone_without_both_releases(release, now):
    assert gone_objects(release, now, NS) == []


def test_a_release_read_without_parsed_objects_is_checked_first():
    release = previous(manifests="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: old}\n")
    release.objects = None
    assert gone_objects(release, rendered(k8s("Deployment", "web")), NS) == [("ConfigMap", "old")]
    release.manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '-f'}\n"
    with pytest.raises(Refused, match="has name '-f'"):
        gone_objects(release, rendered(k8s("Deployment", "web")), NS)


@pytest.mark.parametrize("obj, reason", [
    (k8s("PersistentVolumeClaim", "data"), "a volume claim: its data stays"),
    (k8s("ConfigMap", "c", metadata={"annotations": {"skycap.io/prune": "false"}}),
     'annotated skycap.io/prune: "false"'),
    (k8s("Secret", "skycap.staging.v3", type=RELEASE_TYPE), "Skycap's own ledger or lock"),
    (k8s("Secret", "skycap.staging.v3.1", type=PART_TYPE), "Skycap's own ledger or lock"),
    (k8s("Lease", lease_name("staging")), "Skycap's own ledger or lock"),
])
def test_what_is_kept_says_why(obj, reason):
    assert reason in kept_because(obj, "staging")


@pytest.mark.parametrize("obj", [
    k8s("ConfigMap", "c"),
    k8s("ConfigMap", "c", metadata={"annotations": {"skycap.io/prune": "true"}}),
    k8s("Secret", "creds", type="Opaque"),
    k8s("Lease", lease_name("other-stage")),
    k8s("ConfigMap", "c", metadata={"annotations": None}),
])
def test_anything_else_that_left_the_stage_may_go(obj):
    assert kept_because(obj, "staging") is None
