"""skycap.cluster.apply: which objects go first (config and RBAC before the workloads that read them), what
is watched, and how a rejection names the template an object came from."""

from __future__ import annotations

import json

import pytest

from skycap.cluster.apply import rejection_text, rendered_from_manifests, split_phases, targets_of
from skycap.errors import CommandFailed
from skycap.project.render import Manifest, Rendered

NS = "shop"


def manifest(kind: str, name: str, service: str | None = "web", source: str = "web.yaml.j2") -> Manifest:
    return Manifest({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}, source, service)


def names(stream: str) -> list[str]:
    return [f"{obj['kind']}/{obj['metadata']['name']}" for obj in map(json.loads, stream.splitlines())]


def test_config_and_rbac_first_each_phase_in_rendered_order():
    rendered = Rendered([manifest("Deployment", "web"), manifest("Secret", "creds"), manifest("Service", "web"),
                         manifest("ConfigMap", "web-config"), manifest("RoleBinding", "rb"),
                         manifest("PersistentVolumeClaim", "data"), manifest("CronJob", "nightly")])
    early, rest = split_phases(rendered, NS)
    assert names(early) == ["Secret/creds", "ConfigMap/web-config", "RoleBinding/rb", "PersistentVolumeClaim/data"]
    assert names(rest) == ["Deployment/web", "Service/web", "CronJob/nightly"]


@pytest.mark.parametrize("kind", ["Namespace", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding",
                                  "ClusterRole", "ClusterRoleBinding", "ResourceQuota", "LimitRange",
                                  "PersistentVolumeClaim", "CustomResourceDefinition"])
def test_what_pods_need_before_they_start_goes_first(kind):
    early, rest = split_phases(Rendered([manifest(kind, "x"), manifest("Deployment", "web")]), NS)
    assert names(early) == [f"{kind}/x"] and names(rest) == ["Deployment/web"]


def test_the_stages_own_namespace_is_left_out_another_one_goes_first():
    rendered = Rendered([manifest("Namespace", NS), manifest("Namespace", "shop-jobs"), manifest("Deployment", "w")])
    early, rest = split_phases(rendered, NS)
    assert names(early) == ["Namespace/shop-jobs"]
    assert names(rest) == ["Deployment/w"]


def test_nothing_rendered_is_two_empty_phases():
    assert split_phases(Rendered([]), NS) == ("", "")


def test_each_phase_is_one_json_object_a_line_as_rendered():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"A": "ünïcode"}}
    early, _ = split_phases(Rendered([Manifest(obj, "c.yaml", None)]), NS)
    assert early.endswith("\n") and early.count("\n") == 1
    assert json.loads(early) == obj


def test_only_workloads_and_services_are_watched_with_their_service():
    rendered = Rendered([manifest(kind, kind.lower(), service="api" if kind == "Job" else "web")
                         for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "Service", "ConfigMap",
                                      "CronJob", "Pod", "Ingress")])
    watched = [(t.kind, t.name, t.service) for t in targets_of(rendered)]
    assert watched == [("Deployment", "deployment", "web"), ("StatefulSet", "statefulset", "web"),
                       ("DaemonSet", "daemonset", "web"), ("Job", "job", "api"), ("Service", "service", "web")]
    assert targets_of(Rendered([manifest("Deployment", "x", service=None)]))[0].service == ""


def test_a_release_read_back_knows_each_objects_service():
    text = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    skycap.io/service: web\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bare\n---\n"
            "just a string\n---\n")
    rendered = rendered_from_manifests(text)
    assert [(m.ref(), m.service, m.source) for m in rendered.manifests] == [
        ("Service/web", "web", "(release)"), ("ConfigMap/bare", None, "(release)")]


def test_a_rejection_names_the_template_of_each_object_it_mentions():
    rendered = Rendered([manifest("Deployment", "web"), manifest("ConfigMap", "generated", source="(skycap)"),
                         manifest("Service", "other", source="other.yaml.j2", service="other")])
    stderr = ('Warning: spec.template: deprecated\n'
              'The Deployment "web" is invalid: spec.replicas: Invalid value: -1\n'
              'The ConfigMap "generated" is invalid: data: too long\n')
    text = rejection_text(CommandFailed(["kubectl", "apply"], 1, stderr=stderr), rendered)
    assert text.startswith('The Deployment "web" is invalid')
    assert "deprecated" not in text  # server warnings are not the complaint
    assert "(Deployment/web comes from templates/web.yaml.j2, service web)" in text
    assert "generated comes from" not in text  # Skycap made it: no template to point at
    assert "Service/other" not in text


def test_a_rejection_with_only_noise_still_shows_what_kubectl_said():
    stderr = "Warning: only a warning\n"
    text = rejection_text(CommandFailed(["kubectl", "apply"], 1, stderr=stderr), Rendered([]))
    assert text == "Warning: only a warning"
