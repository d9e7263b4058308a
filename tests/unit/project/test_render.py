"""skycap.project.render, its pure parts: the labels and annotations Skycap stamps on every object and pod
template (what status, logs and the ledger select by), the stage's namespace, and the checks on what
a template renders."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skycap.cluster.labels import (CONFIG_HASH_ANNOTATION, MANAGED_BY, NODE_ANNOTATION, RELEASE_ANNOTATION,
                                   SERVICE_LABEL, STAGE_LABEL)
from skycap.errors import BadInput
from skycap.project.render import (Manifest, Rendered, _add_config_hash, _check_object, _load_documents,
                                   check_collisions, config_hash, expose_node_port, stamp)

STAGE = SimpleNamespace(name="staging", namespace="shop")
REVISION = SimpleNamespace(node="f" * 40, tag="v1", rev="tip", release=7)


def workload(kind="Deployment", name="web", **metadata) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, **metadata},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}}


def stamped(obj: dict, service: str | None = "web") -> dict:
    stamp(Manifest(obj, "web.yaml.j2", service), STAGE, REVISION)
    return obj


def test_every_object_gets_the_stage_labels_namespace_and_release():
    obj = stamped(workload(labels={"team": "a"}, annotations={"keep": "me"}))
    assert obj["metadata"]["namespace"] == "shop"
    assert obj["metadata"]["labels"] == {"team": "a", MANAGED_BY: "skycap", STAGE_LABEL: "staging",
                                         SERVICE_LABEL: "web"}
    assert obj["metadata"]["annotations"] == {"keep": "me", RELEASE_ANNOTATION: "7", NODE_ANNOTATION: "f" * 40}


def test_the_pod_template_gets_the_labels_pods_are_found_by():
    labels = stamped(workload())["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "web", STAGE_LABEL: "staging", SERVICE_LABEL: "web"}


def test_a_cron_jobs_pods_are_labelled_through_its_job_template():
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}}
    labels = stamped(cron)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels == {STAGE_LABEL: "staging", SERVICE_LABEL: "web"}


def test_without_a_service_no_service_label_anywhere():
    obj = stamped(workload(), service=None)
    assert SERVICE_LABEL not in obj["metadata"]["labels"]
    assert obj["spec"]["template"]["metadata"]["labels"] == {"app": "web"}


def test_null_labels_and_annotations_in_a_template_are_filled():
    obj = stamped({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": None,
                                                                          "annotations": None}})
    assert obj["metadata"]["labels"][STAGE_LABEL] == "staging"
    assert obj["metadata"]["annotations"][RELEASE_ANNOTATION] == "7"


def test_cluster_scoped_objects_get_no_namespace():
    obj = stamped({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}})
    assert "namespace" not in obj["metadata"]


def test_a_template_that_names_another_namespace_is_refused():
    stamped(workload(namespace="shop"))  # its own namespace may be written out
    with pytest.raises(BadInput) as info:
        stamped(workload(namespace="prod"))
    assert info.value.message == ("web.yaml.j2: Deployment/web sets namespace 'prod', but stage staging deploys "
                                  "to 'shop'")
    assert info.value.hint == "leave metadata.namespace out of templates; skycap sets it"


def test_the_config_hash_follows_the_content_not_its_order():
    assert config_hash({"a": "1", "b": "2"}) == config_hash({"b": "2", "a": "1"})
    assert config_hash({"a": "1"}) != config_hash({"a": "2"})
    assert len(config_hash({})) == 16
    obj = workload()
    _add_config_hash(obj, "abc")
    assert obj["spec"]["template"]["metadata"]["annotations"] == {CONFIG_HASH_ANNOTATION: "abc"}
    service = {"kind": "Service", "metadata": {"name": "web"}, "spec": {}}
    _add_config_hash(service, "abc")
    assert service == {"kind": "Service", "metadata": {"name": "web"}, "spec": {}}


@pytest.mark.parametrize("spec, after", [
    ({}, "NodePort"),
    ({"type": "ClusterIP"}, "NodePort"),
    ({"type": "ClusterIP", "clusterIP": "None"}, "ClusterIP"),  # headless stays headless
    ({"type": "LoadBalancer"}, "LoadBalancer"),
])
def test_environments_expose_cluster_ip_services_on_a_node_port(spec, after):
    obj = {"kind": "Service", "spec": dict(spec)}
    expose_node_port(obj)
    assert obj["spec"].get("type", "ClusterIP") == after


def test_two_objects_of_the_same_kind_and_name_are_refused_with_both_sources():
    first = Manifest(workload(namespace="shop"), "web.yaml.j2", "web")
    again = Manifest(workload(namespace="shop"), "api.yaml.j2", "api")
    other_kind = Manifest({**workload(namespace="shop"), "kind": "StatefulSet"}, "db.yaml.j2", "db")
    check_collisions(Rendered([first, other_kind]))
    with pytest.raises(BadInput, match=r"Deployment/web is defined twice: in web.yaml.j2 \(service web\) and in "
                                       r"api.yaml.j2 \(service api\)"):
        check_collisions(Rendered([first, other_kind, again]))


@pytest.mark.parametrize("document, message", [
    ("text", "templates/web.yaml.j2, document 2 is not a Kubernetes object"),
    ({"kind": "Deployment", "metadata": {"name": "x"}}, "(Deployment) has no apiVersion"),
    ({"apiVersion": "v1", "metadata": {}}, "(object) has no kind, metadata.name"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "x"}, "(ConfigMap) has no metadata.name"),
])
def test_a_rendered_document_must_be_an_object_with_a_name(document, message):
    with pytest.raises(BadInput) as info:
        _check_object("web.yaml.j2", 2, document)
    assert message in info.value.message


def test_rendered_yaml_that_does_not_parse_names_the_line():
    with pytest.raises(BadInput) as info:
        _load_documents("web.yaml.j2", "kind: ConfigMap\nmetadata:\n  name: [x\n  other: y\n")
    assert info.value.message.startswith("templates/web.yaml.j2 renders invalid YAML at rendered line ")
    assert info.value.hint == "see the output with: skycap render STAGE rev=REV"
    assert _load_documents("web.yaml.j2", "---\n---\nkind: A\n") == [{"kind": "A"}]
