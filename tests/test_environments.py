"""skycap env against the real control plane, registry and Mercurial: create, use as a stage, list,
extend, destroy, gc, and every bad input and fault the issue names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from kubernetes import client

from skycap.environments.naming import namespace_for
from skycap.project.config import NAME_RE
from tests.deployproject import make_project

BRANCH = "feature/JIRA-1234_new-billing"


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish, core_api):
    made = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)
    yield made
    core = client.CoreV1Api(core_api)
    for item in core.list_namespace(label_selector=f"skycap.io/source-namespace={namespace}").items:
        try:
            core.delete_namespace(item.metadata.name)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's own result
            pass


def env_namespace(project, name: str = BRANCH) -> str:
    return namespace_for(project.namespace, name)


def read_namespace(core_api, name: str):
    try:
        return client.CoreV1Api(core_api).read_namespace(name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def environments(project) -> list[dict]:
    ran = project.run("env", "list", "--output", "json")
    assert ran.code == 0, ran.stderr
    return json.loads(ran.stdout)


def wait_gone(core_api, name: str, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read_namespace(core_api, name) is None:
            return True
        time.sleep(0.3)
    return False


def skycap_process(project, *args: str, **env: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "skycap.cli", "--project", str(project.root), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def read_until(proc: subprocess.Popen, marker: str) -> str:
    seen = ""
    for line in proc.stderr:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never printed; stderr was:\n{seen}")


def test_an_environment_is_a_stage_from_create_to_destroy(project, core_api):
    first = project.commit("first")
    ran = project.run("env", "create", BRANCH, "--from", "test", f"rev={first[:12]}", "--ttl", "1h",
                      "--set", "config.web.LOG_LEVEL=debug", "--set", "vars.progress_deadline=45")
    assert ran.code == 0, ran.stderr
    namespace = env_namespace(project)
    assert NAME_RE.match(namespace) and len(namespace) <= 63 and namespace.startswith(project.namespace[:40])
    labels = read_namespace(core_api, namespace).metadata.labels
    assert labels["skycap.io/environment"] == "feature-jira-1234-new-billing"
    assert labels["skycap.io/source-stage"] == "test"
    apps, core = client.AppsV1Api(core_api), client.CoreV1Api(core_api)
    web = apps.read_namespaced_deployment("web", namespace)
    assert web.spec.replicas == 1 and web.status.ready_replicas == 1  # 2 in the stage, capped by env_replicas
    assert web.spec.progress_deadline_seconds == 45
    assert core.read_namespaced_config_map("web-config", namespace).data == {"LOG_LEVEL": "debug"}
    service = core.read_namespaced_service("web", namespace)
    assert service.spec.type == "NodePort"
    assert "web: http://" in ran.stderr and f":{service.spec.ports[0].node_port}/" in ran.stderr
    assert sorted(p.name for p in (project.root / "stages").iterdir()) == ["test.yaml"]  # nothing written there

    [listed] = environments(project)
    assert (listed["name"], listed["stage"], listed["namespace"], listed["rev"], listed["state"]) == \
        (BRANCH, "test", namespace, first[:12], "ready")
    assert 3500 < listed["expires_in"] <= 3600 and listed["owner"]

    status = project.run("status", BRANCH, "--output", "json")
    assert status.code == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["namespace"] == namespace and report["environment"]["stage"] == "test"
    assert any(u["service"] == "web" and u["url"].endswith(f":{service.spec.ports[0].node_port}/")
               for u in report["environment"]["urls"])

    extended = project.run("env", "extend", BRANCH, "--ttl", "10m")
    assert extended.code == 0, extended.stderr
    assert environments(project)[0]["expires_in"] <= 600

    second = project.commit("second")
    deployed = project.run("deploy", BRANCH, f"rev={second}")
    assert deployed.code == 0, deployed.stderr
    [listed] = environments(project)
    assert listed["rev"] == second and 500 < listed["expires_in"] <= 600  # pushed out by its (new) TTL, 10m
    assert apps.read_namespaced_deployment("web", namespace).spec.template.spec.containers[0].image.endswith(
        second[:12])
    history = json.loads(project.run("history", BRANCH, "--output", "json").stdout)["releases"]
    assert [r["status"] for r in history] == ["deployed", "superseded"]
    back = project.run("rollback", BRANCH)
    assert back.code == 0, back.stderr
    assert environments(project)[0]["rev"] == first[:12]  # what runs, after the rollback
    assert project.run("diff", BRANCH, f"rev={second}").code == 1

    destroyed = project.run("env", "destroy", BRANCH)
    assert destroyed.code == 0, destroyed.stderr
    assert read_namespace(core_api, namespace) is None  # it waited until gone
    assert environments(project) == []
    gone = project.run("status", BRANCH)
    assert gone.code == 2 and f"unknown stage {BRANCH!r}" in gone.stderr


def test_a_name_that_exists_exits_2_and_replace_recreates_it(project, core_api):
    node = project.commit("exists")
    assert project.run("env", "create", "pr-7", "--from", "test", f"rev={node}").code == 0
    uid = read_namespace(core_api, env_namespace(project, "pr-7")).metadata.uid
    again = project.run("env", "create", "pr-7", "--from", "test", f"rev={node}")
    assert again.code == 2 and "environment pr-7 exists" in again.stderr and "--replace" in again.stderr
    assert read_namespace(core_api, env_namespace(project, "pr-7")).metadata.uid == uid
    replaced = project.run("env", "create", "pr-7", "--from", "test", f"rev={node}", "--replace")
    assert replaced.code == 0, replaced.stderr
    assert read_namespace(core_api, env_namespace(project, "pr-7")).metadata.uid != uid
    history = json.loads(project.run("history", "pr-7", "--output", "json").stdout)["releases"]
    assert len(history) == 1  # a new environment: a new ledger


@pytest.mark.parametrize("args, message", [
    (["--from", "nosuch", "rev=tip"], "unknown stage 'nosuch'"),
    (["--from", "test", "rev=tip", "--ttl", "tomorrow"], "like 8h"),
    (["--from", "test", "rev=no-such-revision"], "no-such-revision"),
    (["--from", "test", "rev=tip", "--set", "config.nosuch.X=1"], "has no service 'nosuch'"),
])
def test_bad_input_exits_2_and_leaves_nothing(project, core_api, args, message):
    project.commit("tip")
    ran = project.run("env", "create", "bad-input", *args)
    assert ran.code == 2, ran.stderr
    assert message in ran.stderr
    assert wait_gone(core_api, env_namespace(project, "bad-input"))
    assert environments(project) == []


def test_a_missing_image_leaves_nothing(project, core_api):
    node = project.commit("never built", publish=False)
    ran = project.run("env", "create", "no-image", "--from", "test", f"rev={node}")
    assert ran.code == 2, ran.stderr
    assert "not exist in the registry" in ran.stderr and "nothing is left" in ran.stderr
    assert read_namespace(core_api, env_namespace(project, "no-image")) is None
    assert environments(project) == []


def test_a_failed_first_deploy_leaves_nothing_unless_kept(project, core_api):
    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    ran = project.run("env", "create", "crashy", "--from", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    assert "removed again" in ran.stderr and "nothing is left" in ran.stderr
    assert read_namespace(core_api, env_namespace(project, "crashy")) is None  # it waited until gone
    assert environments(project) == []
    kept = project.run("env", "create", "crashy", "--from", "test", f"rev={bad}", "--keep-on-failure")
    assert kept.code == 1, kept.stderr
    [listed] = environments(project)
    assert (listed["name"], listed["state"]) == ("crashy", "failing")


def test_destroy_refuses_a_normal_stage(project, core_api):
    ran = project.run("env", "destroy", "test")
    assert ran.code == 2 and "is a stage" in ran.stderr and "never deletes a stage" in ran.stderr
    assert read_namespace(core_api, project.namespace).status.phase == "Active"
    unknown = project.run("env", "destroy", "nosuch")
    assert unknown.code == 2 and "unknown stage 'nosuch'" in unknown.stderr


def test_destroy_of_an_environment_being_deployed_exits_3(project, core_api):
    node = project.commit("good")
    assert project.run("env", "create", "busy", "--from", "test", f"rev={node}").code == 0
    slow = project.commit("never ready", labels={"skycap.sim/behaviour": "never-ready"})
    deploying = skycap_process(project, "deploy", "busy", f"rev={slow}", "--timeout", "60")
    try:
        read_until(deploying, "wait for the rollout")
        ran = project.run("env", "destroy", "busy")
        assert ran.code == 3, ran.stderr
        assert "is locked by" in ran.stderr and "deploy rev=" in ran.stderr
        assert read_namespace(core_api, env_namespace(project, "busy")).status.phase == "Active"
    finally:
        deploying.send_signal(signal.SIGTERM)
        deploying.communicate(timeout=60)
    assert project.run("env", "destroy", "busy").code == 0


def test_two_creates_of_one_name_at_once(project, core_api):
    node = project.commit("race")
    racers = [skycap_process(project, "env", "create", "race", "--from", "test", f"rev={node}") for _ in range(2)]
    results = [(proc.wait(timeout=180), proc.stderr.read()) for proc in racers]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (2, 3), results
    loser = next(err for code, err in results if code != 0)
    assert "exists" in loser or "locked" in loser
    [listed] = environments(project)
    assert listed["state"] == "ready"
    history = json.loads(project.run("history", "race", "--output", "json").stdout)["releases"]
    assert len(history) == 1  # the loser recorded nothing


def make_expired(project, names, ttl="2s"):
    node = project.commit(f"gc {' '.join(names)}")
    for name in names:
        ran = project.run("env", "create", name, "--from", "test", f"rev={node}", "--ttl", ttl)
        assert ran.code == 0, ran.stderr


def test_gc_destroys_the_expired_ones_only(project, core_api):
    make_expired(project, ["old-1", "old-2"])
    make_expired(project, ["young"], ttl="1h")
    stranger = f"{project.namespace}-stranger"  # labelled like one, made by another project's stage
    client.CoreV1Api(core_api).create_namespace({"metadata": {"name": stranger, "labels": {
        "skycap.io/environment": "stranger", "skycap.io/source-stage": "test",
        "skycap.io/source-namespace": "another-project", "app.kubernetes.io/managed-by": "skycap"}}})
    try:
        time.sleep(2.5)
        states = {e["name"]: e["state"] for e in environments(project)}
        assert states == {"old-1": "expired", "old-2": "expired", "young": "ready"}
        ran = project.run("env", "gc")
        assert ran.code == 0, ran.stderr
        assert "destroyed environment old-1" in ran.stderr and "destroyed environment old-2" in ran.stderr
        assert [e["name"] for e in environments(project)] == ["young"]
        for name in ("old-1", "old-2"):
            assert read_namespace(core_api, env_namespace(project, name)) is None
        assert read_namespace(core_api, stranger).status.phase == "Active"
        assert read_namespace(core_api, project.namespace).status.phase == "Active"
        assert project.run("env", "gc").code == 0  # nothing left to do
    finally:
        client.CoreV1Api(core_api).delete_namespace(stranger)


def test_a_gc_that_dies_half_way_is_finished_by_the_next(project, core_api):
    names = ["die-1", "die-2", "die-3", "die-4"]
    make_expired(project, names)
    time.sleep(2.5)
    dying = skycap_process(project, "env", "gc", SKYCAP_LOCK_TTL="2")
    read_until(dying, "namespace ")
    dying.send_signal(signal.SIGKILL)
    dying.wait(timeout=30)
    left = [n for n in names if read_namespace(core_api, env_namespace(project, n)) is not None]
    assert left, "the killed gc finished before it died: the test proved nothing"
    time.sleep(2.5)  # a lock the dead gc held has expired
    ran = project.run("env", "gc")
    assert ran.code == 0, ran.stderr
    assert all(read_namespace(core_api, env_namespace(project, n)) is None for n in names)
    assert environments(project) == []


def test_two_gc_runs_at_once_do_not_fight(project, core_api):
    names = ["both-1", "both-2", "both-3"]
    make_expired(project, names)
    time.sleep(2.5)
    runs = [skycap_process(project, "env", "gc") for _ in range(2)]
    results = [(proc.wait(timeout=180), proc.stderr.read()) for proc in runs]
    assert [code for code, _ in results] == [0, 0], results
    for name in names:
        assert read_namespace(core_api, env_namespace(project, name)) is None
        assert any(f"destroyed environment {name}" in err for _, err in results)
    assert environments(project) == []


def test_destroy_names_the_finalizers_holding_the_namespace(project, core_api):
    make_expired(project, ["held"], ttl="1h")
    namespace = env_namespace(project, "held")
    core = client.CoreV1Api(core_api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    try:
        ran = project.run("env", "destroy", "held", "--timeout", "15")
        assert ran.code == 4, ran.stderr
        assert f"namespace {namespace} is still terminating" in ran.stderr and "example.com/hold" in ran.stderr
    finally:
        core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    ran = project.run("env", "gc")  # finishes the deletion the destroy began
    assert ran.code == 0, ran.stderr
    assert read_namespace(core_api, namespace) is None


def real_node(core_api) -> bool:
    nodes = client.CoreV1Api(core_api).list_node().items
    return bool(nodes) and all(n.status.node_info.container_runtime_version.startswith("containerd://")
                               for n in nodes)


def page_through_node_port(url: str, expect: str = "") -> str:
    """The page, once kube-proxy has caught up with the Service's endpoints (it lags a rollout by a
    moment: a Service without endpoints, or with the old ones, still has rules for a while)."""
    deadline, page = time.monotonic() + 15, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode()
            if expect in page:
                return page
        except OSError:
            pass
        time.sleep(0.2)
    return page


def test_on_a_real_node_the_web_page_answers_through_the_node_port(project, core_api):
    if not real_node(core_api):
        pytest.skip("the test cluster's node is simulated: no NodePort answers (needs containerd://)")
    first = project.commit("first")
    ran = project.run("env", "create", BRANCH, "--from", "test", f"rev={first}", "--ttl", "2s")
    assert ran.code == 0, ran.stderr
    [url] = [line.split("web: ", 1)[1].strip() for line in ran.stderr.splitlines() if " web: http://" in line]
    assert first[:12] in page_through_node_port(url)  # the node's address: ours
    second = project.commit("second")
    assert project.run("deploy", BRANCH, f"rev={second}").code == 0
    assert second[:12] in page_through_node_port(url, expect=second[:12])
    time.sleep(2.5)  # the deploy pushed the expiry out by its TTL, 2 s
    assert environments(project)[0]["state"] == "expired"
    gc = project.run("env", "gc")
    assert gc.code == 0 and f"destroyed environment {BRANCH}" in gc.stderr
    assert read_namespace(core_api, env_namespace(project)) is None
    assert environments(project) == []


def test_the_gc_cronjob_role_is_enough_for_gc(project, core_api, local_cluster):
    """The CronJob template's ServiceAccount and ClusterRole, applied for real; then the gc runs with
    exactly that account's rights (the API server impersonating it) and destroys an expired environment."""
    from skycap.cluster.kubectl import Kubectl
    from skycap.environments.commands import InCluster, gc_cluster

    make_expired(project, ["by-cron"])
    project.edit_stage(lambda data: data.update(services={"skycap-env-gc": {
        "image": "skytap/skycap", "template": "skycap-env-gc.yaml.j2"}}, vars={"cronjob_api_version": "batch/v1beta1"}))
    node = project.commit("cron", publish=False)  # render only: no image needed
    rendered = project.run("render", "test", f"rev={node}")
    assert rendered.code == 0, rendered.stderr
    kinds = {doc.split("kind: ", 1)[1].split("\n", 1)[0] for doc in rendered.stdout.split("\n---\n") if "kind: " in doc}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "CronJob"} <= kinds
    kubectl = Kubectl(namespace=project.namespace, log=_NoLog(), kubeconfig=str(local_cluster.kubeconfig))
    kubectl.run(["apply", "-f", "-"], stdin=rendered.stdout)
    account = f"system:serviceaccount:{project.namespace}:skycap-env-gc"
    _, answer = kubectl.run(["auth", "can-i", "--as", account, "list", "secrets", "-A"], ok_codes=(0, 1))
    assert answer.strip() == "no"  # least rights: no secrets, no workloads
    from kubernetes import client as kclient
    from kubernetes import config

    configuration = kclient.Configuration()
    config.load_kube_config(config_file=str(local_cluster.kubeconfig), client_configuration=configuration)
    impersonated = kclient.ApiClient(configuration)
    impersonated.set_default_header("Impersonate-User", account)
    time.sleep(2.5)
    try:
        from skycap.context import Screen

        assert gc_cluster(Screen(quiet=True), InCluster(_api=impersonated), timeout=60) == 0
        assert read_namespace(core_api, env_namespace(project, "by-cron")) is None
    finally:
        kubectl.run(["delete", "-f", "-", "--ignore-not-found"], stdin=rendered.stdout)


class _NoLog:
    def write(self, *_args):
        pass


def test_create_and_status_print_the_url_through_the_load_balancer(project, core_api):
    """The stage's pools may say where the balancer serves them (`frontend`); an environment, which
    copies the block, is given its own pool and frontend with --set."""
    project.edit_stage(lambda stage: stage.update(load_balancer={
        "kind": "haproxy", "api": "tcp://127.0.0.1:9",  # nothing listens: env create and status do not need it
        "pools": {"web": {"pool": "be_web", "frontend": "http://127.0.0.1:8081/"}}}))
    node = project.commit("behind the balancer")
    ran = project.run("env", "create", "pr-12", "--from", "test", f"rev={node}",
                      "--set", "load_balancer.pools.web.pool=be_web_pr12",
                      "--set", "load_balancer.pools.web.frontend=http://127.0.0.1:8112/")
    assert ran.code == 0, ran.stderr
    assert "web: http://127.0.0.1:8112/ (load balancer, pool be_web_pr12)" in ran.stderr
    assert "8081" not in ran.stderr
    status = project.run("status", "pr-12", "--output", "json")
    assert status.code == 0, status.stderr
    urls = json.loads(status.stdout)["environment"]["urls"]
    assert {"service": "web", "url": "http://127.0.0.1:8112/", "via": "load_balancer", "pool": "be_web_pr12"} in urls
    assert any(u["via"] == "nodeport" and u["service"] == "web" for u in urls)
    text = project.run("status", "pr-12")
    assert "web: http://127.0.0.1:8112/ (load balancer, pool be_web_pr12)" in text.stdout


def test_an_environment_whose_stage_file_was_deleted_is_destroyed_by_name(project, core_api):
    stages = project.root / "stages"
    (stages / "preview.yaml").write_text((stages / "test.yaml").read_text())  # same namespace: the fixture cleans up
    node = project.commit("preview")
    assert project.run("env", "create", "pr-7", "--from", "preview", f"rev={node}").code == 0
    (stages / "preview.yaml").unlink()
    ran = project.run("env", "destroy", "pr-7")
    assert ran.code == 0, ran.stderr
    assert "made from stage preview, which has no file here any more" in ran.stderr
    assert read_namespace(core_api, env_namespace(project, "pr-7")) is None
    again = project.run("env", "destroy", "pr-7")
    assert again.code == 2 and "unknown stage 'pr-7'" in again.stderr


def test_with_vm_deploys_the_vm_services_to_the_env_hosts(project, core_api, fake_vms):
    """--with-vm end to end: the Kubernetes services on the test cluster's node, the VM service over
    real sshd on the hosts the stage names under env_hosts (and on no other)."""
    from tests.test_deploy_vm import live_revision, with_vms

    with_vms(project, fake_vms)
    project.edit_stage(lambda stage: stage.update(env_hosts={"legacy-api": fake_vms.hosts[:2]}))
    node = project.commit("an environment with its VM service", only=("web",))
    ran = project.run("env", "create", "pr-vm", "--from", "test", f"rev={node}", "--with-vm")
    assert ran.code == 0, ran.stderr
    assert [live_revision(host) for host in fake_vms.vms[:2]] == [node, node]
    assert not (fake_vms[2].path("app") / "current").exists()  # vm3 is the stage's, not the environment's
    status = json.loads(project.run("status", "pr-vm", "--output", "json").stdout)
    legacy = status["vm"]["legacy-api"]
    assert legacy["in_step"] is True and [h["host"] for h in legacy["hosts"]] == fake_vms.hosts[:2]
    history = json.loads(project.run("history", "pr-vm", "--output", "json").stdout)["releases"]
    assert history[0]["status"] == "deployed" and list(history[0]["vm"]) == ["legacy-api"]
    if real_node(core_api):
        [url] = [line.split("web: ", 1)[1].strip() for line in ran.stderr.splitlines() if " web: http://" in line]
        assert node[:12] in page_through_node_port(url, expect=node[:12])
    assert project.run("env", "destroy", "pr-vm").code == 0
