"""skycap.cluster.kinds: one record per kind, and the fallback for the kinds without one."""

from __future__ import annotations

import pytest

from skycap.cluster import kinds
from skycap.cluster.rollout_rules import View
from tests.unit.cluster.kinds.objects import NOW


def test_watched_kinds_are_the_union_in_first_seen_order():
    assert kinds.watched_kinds(["Job", "Deployment", "ConfigMap"]) == ["Job", "Pod", "Deployment", "ReplicaSet"]
    assert kinds.watched_kinds([]) == []


def test_a_kind_without_a_record_is_applied_with_the_rest_and_not_waited_for():
    unknown = kinds.of("Certificate")
    assert not (unknown.applied_early or unknown.followed or unknown.cluster_scoped or unknown.restartable)
    assert unknown.api == ("", "certificates") and kinds.of("Ingress").api == ("networking.k8s.io", "ingresses")
    assert kinds.evaluate("Certificate", "tls", View(), NOW).reason == "applied"


def test_what_the_workloads_read_is_applied_first():
    early = {name for name, kind in kinds.KINDS.items() if kind.applied_early}
    assert {"ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim"} <= early
    assert not early & {"Deployment", "StatefulSet", "DaemonSet", "Job", "Service", "Ingress"}


def test_a_deploy_follows_the_workloads_jobs_and_services():
    assert {name for name, kind in kinds.KINDS.items() if kind.followed} == {
        "Deployment", "StatefulSet", "DaemonSet", "Job", "Service"}


@pytest.mark.parametrize("name, scaled, restarted", [
    ("Deployment", True, True), ("StatefulSet", True, True), ("ReplicaSet", True, False),
    ("DaemonSet", False, True), ("Job", False, False), ("ConfigMap", False, False),
])
def test_what_scale_and_restart_may_change(name, scaled, restarted):
    kind = kinds.of(name)
    assert (kind.replicas is not None, kind.restartable) == (scaled, restarted)


def test_the_pod_template_of_a_cron_job_is_inside_its_job_template():
    template = {"metadata": {"labels": {"app": "report"}}}
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}}
    assert kinds.of("CronJob").template_of(cron) is template
    assert kinds.of("CronJob").template_of({"kind": "CronJob", "spec": {"jobTemplate": None}}) is None
    assert kinds.of("ConfigMap").template_of({"kind": "ConfigMap", "data": {}}) is None


def test_how_many_pods_a_live_workload_wants():
    assert kinds.of("Deployment").wants({"spec": {}}) == 1  # Kubernetes' default replica count
    assert kinds.of("StatefulSet").wants({"spec": {"replicas": 0}}) == 0
    assert kinds.of("DaemonSet").wants({"status": {"desiredNumberScheduled": 3}}) == 3
    assert kinds.of("DaemonSet").wants({"spec": {"replicas": 5}}) == 0


def test_writing_a_path_makes_the_mappings_on_the_way():
    obj = {"kind": "Deployment"}
    kinds.of("Deployment").write(obj, ("spec", "replicas"), 4)
    assert obj == {"kind": "Deployment", "spec": {"replicas": 4}}


def test_cluster_scoped_kinds_and_what_prune_keeps():
    assert kinds.of("ClusterRole").cluster_scoped and not kinds.of("Role").cluster_scoped
    assert "volume claim" in kinds.of("PersistentVolumeClaim").kept_on_prune
    assert kinds.of("Deployment").kept_on_prune == ""
