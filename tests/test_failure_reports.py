"""Failure reports show the real thing, on the real node: the failing container's own last lines and
exit code, the image the kubelet could not pull, the probe that fails and its message, the missing
ConfigMap key, the memory limit a container exceeded. Nothing here is a status written on a
container's behalf: each case is a real container, kubelet and containerd doing what they do."""

from __future__ import annotations

import pytest

from tests.deployproject import make_project


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, real_node, namespace, kubeconfig, publish):
    project = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)
    project.edit_stage(lambda s: s["services"].update(
        worker={**s["services"]["worker"], "replicas": 0}, notifier={**s["services"]["notifier"], "replicas": 0}))
    project.edit_stage(lambda s: s["services"]["web"].update(replicas=1))
    return project


def test_a_container_that_prints_a_line_and_exits_3(project):
    bad = project.commit("crashes", labels={"skycap.io/behaviour": "crash"})
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    assert "CrashLoopBackOff (restarted" in ran.stderr and "last exit 3, Error" in ran.stderr
    assert "(previous instance):" in ran.stderr
    assert "| crashing on purpose: exit 3" in ran.stderr
    assert f"| skycap demo image skytap/web:{bad[:12]} starting on pod web-" in ran.stderr


PROBE = """          readinessProbe:       # without one, Skycap trusts a start only after 3 s of Ready
            httpGet:
              path: /health
              port: 8080
            periodSeconds: 1
"""


def test_a_worker_without_a_readiness_probe_that_exits_3_a_second_after_it_starts(project):
    """Ready the moment it runs, for about a second: a release that must not be called deployed."""
    project.edit_stage(lambda s: s["services"]["worker"].update(replicas=1))
    project.edit_template("worker.yaml.j2", PROBE, "")
    project.edit_template("worker.yaml.j2", "          args:", """          command: ["sh", "-c", "echo working; sleep 1; echo giving up; exit 3"]
          args:""")
    node = project.commit("gives up")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 1, ran.stderr
    assert "worker: Deployment worker failed" in ran.stderr and "last exit 3, Error" in ran.stderr
    assert "| giving up" in ran.stderr


def test_an_image_tag_that_does_not_exist(project):
    ghost = project.commit("never pushed", publish=False)
    ran = project.run("deploy", "test", f"rev={ghost}", "--skip-image-check")
    assert ran.code == 1, ran.stderr
    assert f"cannot pull image {project.cluster.registry}/skytap/web:{ghost[:12]} (not found)" in ran.stderr
    assert "Failed: Failed to pull image" in ran.stderr and "not found" in ran.stderr


def test_a_readiness_probe_that_never_passes(project):
    slow = project.commit("never ready", labels={"skycap.io/behaviour": "never-ready"})
    ran = project.run("deploy", "test", f"rev={slow}", "--timeout", "6", "--no-rollback")
    assert ran.code == 4, ran.stderr
    assert "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404" in ran.stderr
    assert "| never becoming ready, on purpose" in ran.stderr


def test_a_missing_config_map_key(project):
    project.edit_template("web.yaml.j2", "key: LOG_LEVEL", "key: NO_SUCH_KEY")
    node = project.commit("wrong key")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 1, ran.stderr
    assert "CreateContainerConfigError: couldn't find key NO_SUCH_KEY in ConfigMap" in ran.stderr


def test_a_memory_limit_the_container_exceeds(project):
    project.edit_template("web.yaml.j2", "          ports:", """          command: ["sh", "-c", "echo filling memory; head -c 200m /dev/zero | tail"]
          resources:
            limits:
              memory: 24Mi
          ports:""")
    node = project.commit("eats memory")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 1, ran.stderr
    assert "last exit 137, OOMKilled" in ran.stderr
    assert "| filling memory" in ran.stderr
