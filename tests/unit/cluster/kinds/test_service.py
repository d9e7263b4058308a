"""skycap.cluster.kinds.service: ready endpoints, or nothing that should run behind it."""

from __future__ import annotations

from tests.unit.cluster.kinds.objects import check, obj, pod, service


def test_an_external_name_service_has_nothing_to_wait_for():
    assert check(service(type="ExternalName")).reason == "no selector: nothing to wait for"


def test_finished_pods_and_other_labels_do_not_keep_a_service_waiting():
    done = pod("web-job", phase="Succeeded", ready=False, labels={"app": "web"})
    other = pod("api-0", ready=False, labels={"app": "api"})
    assert check(service(), done, other).state == "succeeded"
    workload = {**obj("StatefulSet", "web"), "spec": {"replicas": 1,
                                                      "template": {"metadata": {"labels": {"app": "web", "x": "y"}}}}}
    assert check(service(), workload).reason == "no ready endpoints yet"
