"""skycap.commands.scale.scale_objects: `skycap scale` sets spec.replicas on the named services' workloads
of the current release, and refuses a service that has none to scale."""

from __future__ import annotations

import pytest

from skycap.cluster.labels import SERVICE_LABEL
from skycap.commands.scale import scale_objects
from skycap.errors import BadInput


def workload(kind: str, name: str, service: str | None, replicas: int = 2) -> dict:
    labels = {SERVICE_LABEL: service} if service else {}
    return {"kind": kind, "metadata": {"name": name, "labels": labels}, "spec": {"replicas": replicas}}


def release_objects() -> list[dict]:
    return [workload("Deployment", "web", "web"), workload("Service", "web", "web"),
            workload("StatefulSet", "db", "db", 3), workload("Deployment", "web-canary", "web", 1),
            workload("Deployment", "unlabelled", None), workload("DaemonSet", "agent", "agent")]


def test_the_named_services_workloads_are_scaled_in_place_and_returned():
    objects = release_objects()
    scaled = scale_objects(objects, {"web": 0, "db": 5})
    assert [(o["kind"], o["metadata"]["name"], o["spec"]["replicas"]) for o in scaled] == [
        ("Deployment", "web", 0), ("StatefulSet", "db", 5), ("Deployment", "web-canary", 0)]
    assert objects[0]["spec"]["replicas"] == 0  # in place: the new release records the new counts
    assert objects[1]["spec"] == {"replicas": 2}  # a Service is not a workload
    assert objects[4]["spec"]["replicas"] == 2 and objects[5]["spec"]["replicas"] == 2


def test_no_counts_scale_nothing():
    objects = release_objects()
    assert scale_objects(objects, {}) == []
    assert objects == release_objects()


@pytest.mark.parametrize("counts, service", [({"agent": 3}, "agent"), ({"web": 1, "worker": 2}, "worker"),
                                             ({"zz": 1, "aa": 1}, "aa")])
def test_a_service_without_a_deployment_or_stateful_set_is_refused_by_name(counts, service):
    with pytest.raises(BadInput) as info:
        scale_objects(release_objects(), counts)
    assert info.value.message == (f"service {service} has no Deployment or StatefulSet in the current release "
                                  "to scale")
    assert info.value.exit_code == 2


def test_objects_without_labels_are_passed_over():
    bare = {"kind": "Deployment", "metadata": {"name": "x", "labels": None}, "spec": {"replicas": 1}}
    assert scale_objects([bare, workload("Deployment", "web", "web")], {"web": 4})[0]["metadata"]["name"] == "web"
