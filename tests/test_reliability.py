"""Reliability under faults (issue 15): a crash after the first change still fails the deploy honestly,
the lock is held or the work stops, and the failure paths run to the end. Real apiserver, hg, registry."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client

from tests.deployproject import make_project, start_deploy


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def history(project) -> list[tuple]:
    ran = project.run("history", "test", "--output", "json")
    assert ran.code == 0, ran.stderr
    return [(r["number"], r["kind"], r["status"]) for r in json.loads(ran.stdout)["releases"]]


def web_image(core_api, namespace) -> str:
    return client.AppsV1Api(core_api).read_namespaced_deployment("web", namespace) \
        .spec.template.spec.containers[0].image


# -- the watch-stop race ------------------------------------------------------------------------------


def test_stopping_a_watch_whose_socket_just_closed_is_quiet(core_api, namespace):
    """The race seen in bench/releases.py: a stream's read broke (urllib3 closes the connection) just
    before stop() shut its socket; shutting a closed socket raises OSError EBADF."""
    from skycap.cluster.watch import Feed

    feed = Feed(core_api, namespace, ["Pod"])
    response = feed._lister("Pod")(namespace, watch=True, timeout_seconds=30, _preload_content=False,
                                   _request_timeout=(5, 40))
    feed.streams.append(response)
    response.connection.close()  # what urllib3 does to a connection whose read failed mid-stream
    feed.stop()
    assert feed.stopped.is_set()


# -- no crash turns into a lie ---------------------------------------------------------------------------


def hook_marker(project, tmp_path):
    """tasks.py with a deploy_failed hook that leaves a file behind."""
    marker = tmp_path / "deploy_failed.log"
    (project.root / "tasks.py").write_text(
        "from invoke import task\n"
        f"LOG = {str(marker)!r}\n"
        "@task\ndef deploy_failed(c, release, error):\n    open(LOG, 'a').write(f'{release}: {error}\\n')\n")
    return marker


def read_rest(proc, seen: str, until: str | None = None) -> str:
    """What the deploy prints from here: up to the line holding `until`, else to its end."""
    for line in proc.stderr:
        seen += line
        if until and until in line:
            return seen
    return seen


def test_a_ledger_entry_deleted_mid_deploy_fails_it_and_rolls_back(project, core_api, namespace, local_cluster,
                                                                   tmp_path):
    """Writing `deployed` finds the release's Secret gone: that was exit 2 ("nothing changed") after
    the stage had changed, with no rollback. Now a failed deploy: rolled back, deploy_failed run, exit 1."""
    marker = hook_marker(project, tmp_path)
    good = project.commit("good")
    assert project.run("deploy", "test", f"rev={good}").code == 0
    slow = project.commit("slow", labels={"skycap.sim/behaviour": "ready-after=4"})
    proc, seen = start_deploy(project, local_cluster.kubeconfig, slow)
    client.CoreV1Api(core_api).delete_namespaced_secret("skycap.test.v2", namespace)
    seen = read_rest(proc, seen)
    assert proc.wait(timeout=120) == 1, seen
    assert "release 2 of stage test is gone from the ledger" in seen
    assert "could not record release 2 as failed" in seen and "rolled back to release 1" in seen
    assert web_image(core_api, namespace).endswith(good[:12])
    assert history(project) == [(3, "rollback", "deployed"), (1, "deploy", "superseded")]
    assert marker.read_text().startswith("2: ")


def test_a_failing_before_hook_is_bad_input_and_changes_nothing(project, core_api, namespace):
    (project.root / "tasks.py").write_text(
        "from invoke import task\n@task\ndef before_deploy(c):\n    raise RuntimeError('change freeze')\n")
    ran = project.run("deploy", "test", f"rev={project.commit('frozen')}")
    assert ran.code == 2, ran.stderr
    assert "hook before_deploy in tasks.py failed: RuntimeError: change freeze; nothing was changed" in ran.stderr
    assert not client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items
    assert history(project) == []


# -- the lock is held, or the work stops -----------------------------------------------------------------


@pytest.fixture
def limited(core_api, local_cluster, namespace, tmp_path):
    """limited(deny): a kubeconfig for this namespace without the verbs in deny (resource -> verbs)."""
    from tests import rbac

    def make(deny):
        return rbac.limited_kubeconfig(core_api, local_cluster, namespace, tmp_path, deny)

    yield make
    rbac.forget(core_api, namespace)


def test_a_deploy_whose_lock_cannot_be_renewed_stops_and_says_so(project, limited, core_api, namespace,
                                                                 local_cluster):
    """Once the deploy waits for its rollout, its user may no longer update the lease (RBAC): renewals
    fail, and past the TTL the deploy stops waiting, changes nothing more, and records it interrupted."""
    from tests import rbac

    kubeconfig = limited({})
    project.edit_stage(lambda s: s["kubernetes"].update(kubeconfig=str(kubeconfig)))
    node = project.commit("never ready", labels={"skycap.sim/behaviour": "never-ready"})
    proc, seen = start_deploy(project, local_cluster.kubeconfig, node, SKYCAP_LOCK_TTL="3")
    rbac.allow(core_api, namespace, {"leases": ("update", "patch")})
    started = time.monotonic()
    seen = read_rest(proc, seen)
    assert proc.wait(timeout=120) == 1, seen
    assert time.monotonic() - started < 15, seen  # not the rollout's timeout (60 s)
    assert "this run lost the lock of stage test: it could not be renewed for longer than its TTL (3 s" in seen
    assert "forbidden" in seen.lower()
    assert history(project) == [(1, "deploy", "interrupted")]


def test_a_machine_whose_clock_runs_ahead_cannot_take_a_live_lock(core_api, local_cluster, namespace):
    """A live holder renews every ttl/3; another machine, its clock 90 s ahead, reads a renewTime that
    looks long expired. It watches the lease for its duration instead, sees it renewed, and is refused."""
    import os
    import shutil
    import subprocess
    import sys

    from skycap.cluster.lock import StageLock
    from tests.test_lock import HOLDER, REPO

    assert shutil.which("faketime"), "faketime is in scripts/setup.sh's packages"
    with StageLock(core_api, namespace, "production", "deploy rev=live", ttl=3) as live:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        ahead = subprocess.run(["faketime", "-m", "-f", "+90s", sys.executable, "-c", HOLDER,
                                str(local_cluster.kubeconfig), namespace, "3", "0"],
                               capture_output=True, text=True, env=env, timeout=60)
        assert ahead.stdout.strip() == "refused", ahead.stdout + ahead.stderr
        assert not live.lost


def test_unlock_refuses_a_live_lock_unless_forced(project, core_api, namespace):
    from skycap.cluster.lock import StageLock, read_lock

    live = StageLock(core_api, namespace, "test", "deploy rev=live", ttl=3)
    live.acquire()
    try:
        ran = project.run("unlock", "test")
        assert ran.code == 3, ran.stderr
        assert "lock is alive" in ran.stderr and "skycap unlock test --force" in ran.stderr
        assert read_lock(core_api, namespace, "test").holder == live.holder
        ran = project.run("unlock", "test", "--force")
        assert ran.code == 0, ran.stderr
        assert "unlocked" in ran.stderr and "deploy rev=live" in ran.stderr
        deadline = time.monotonic() + 5
        while not live.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live.lost
        with pytest.raises(Exception, match="lost the lock of stage test: it was deleted"):
            live.check()
    finally:
        live.release()


def test_a_stale_writer_cannot_overwrite_interrupted(core_api, namespace):
    from skycap.cluster.ledger import Ledger
    from skycap.errors import LockLost

    stale = Ledger(core_api, namespace, "test")
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  a: '1'\n"
    release = stale.begin("deploy", rev="abc", manifests=config_map)
    assert Ledger(core_api, namespace, "test").interrupt_pending("its lock was broken") == [release.number]
    with pytest.raises(LockLost, match="changed by someone else .*it says interrupted now"):
        stale.finish(release, "deployed")
    assert Ledger(core_api, namespace, "test").get(release.number).status == "interrupted"


# -- the failure paths are complete ------------------------------------------------------------------------


def test_hg_archive_failing_after_the_release_is_recorded_is_a_failed_deploy(tmp_path, hg_repo, local_cluster,
                                                                             namespace, kubeconfig, publish,
                                                                             fake_vms, core_api):
    """hg archive runs in deploy:updating, after the release is recorded pending: a hook before that
    step moves the repository away (hg resolved the revision already)."""
    from tests.test_deploy_vm import live_revision, with_vms

    project = with_vms(make_project(tmp_path, hg_repo, local_cluster, namespace, publish), fake_vms)
    good = project.commit("good", only=("web",))
    assert project.run("deploy", "test", f"rev={good}").code == 0
    (project.root / "tasks.py").write_text(
        "import shutil\nfrom invoke import task\nfrom skycap.tasks import before\n"
        f"@task\ndef move(c):\n    shutil.move({str(project.repo.path)!r}, {str(tmp_path / 'hg-moved-away')!r})\n"
        "before('deploy:updating', move)\n")
    ran = project.run("deploy", "test", f"rev={project.commit('moved', only=('web',))}")
    assert ran.code == 1, ran.stderr
    assert "building the VM release archive failed: no Mercurial repository at" in ran.stderr
    assert "rolled back to release 1" in ran.stderr
    assert web_image(core_api, namespace).endswith(good[:12])
    assert all(live_revision(host) == good for host in project.fleet)
    assert history(project) == [(3, "rollback", "deployed"), (2, "deploy", "failed"), (1, "deploy", "superseded")]


def test_an_unreadable_last_good_release_rolls_back_to_the_one_before(project, core_api, namespace):
    first, second = project.commit("one"), project.commit("two")
    for node in (first, second):
        assert project.run("deploy", "test", f"rev={node}").code == 0
    client.CoreV1Api(core_api).patch_namespaced_secret(  # release 2's manifests no longer match their checksum
        "skycap.test.v2", namespace, {"data": {"manifests.gz": "Z2FyYmFnZQ=="}})
    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    assert "release 2 of stage test cannot be read" in ran.stderr
    assert "rolling back past it, to release 1, the good one before it" in ran.stderr
    assert web_image(core_api, namespace).endswith(first[:12])
    assert history(project)[:2] == [(4, "rollback", "deployed"), (3, "deploy", "failed")]


def test_a_ledger_trim_the_server_refuses_is_reported_not_a_failure(project, limited, core_api, namespace):
    from skycap.cluster.ledger import Ledger

    ledger = Ledger(core_api, namespace, "test")
    for _ in range(3):
        ledger.finish(ledger.begin("deploy", rev="old"), "superseded")
    kubeconfig = limited({"secrets": ("delete", "deletecollection")})
    project.edit_stage(lambda s: s.update(keep_releases=3) or s["kubernetes"].update(kubeconfig=str(kubeconfig)))
    ran = project.run("deploy", "test", f"rev={project.commit('trim refused')}")
    assert ran.code == 0, ran.stderr
    assert "trimming the ledger failed (the deploy itself worked): the Kubernetes API refused (trim the ledger): " \
           "403 Forbidden" in ran.stderr
    assert history(project) == [(4, "deploy", "deployed"), (3, "deploy", "superseded"),
                                (2, "deploy", "superseded"), (1, "deploy", "superseded")]


def test_recording_failed_is_retried(project, limited, core_api, namespace, local_cluster):
    """The release's Secret may be created but not patched (RBAC) until the deploy has failed and been
    told no once: the second attempt, with the right restored, records it."""
    from tests import rbac

    kubeconfig = limited({"secrets": ("update", "patch")})
    project.edit_stage(lambda s: s["kubernetes"].update(kubeconfig=str(kubeconfig)))
    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    proc, seen = start_deploy(project, local_cluster.kubeconfig, bad)
    seen = read_rest(proc, seen, until="trying again in")
    rbac.allow(core_api, namespace, {})
    seen = read_rest(proc, seen)
    assert proc.wait(timeout=120) == 1, seen
    assert "recording release 1 as failed did not work" in seen and "could not record" not in seen
    assert history(project) == [(1, "deploy", "failed")]


# -- two first deploys with create_namespace ------------------------------------------------------------------


def test_a_deploy_that_made_the_namespace_and_lost_the_lock_race_leaves_it(project, core_api, namespace,
                                                                        monkeypatch):
    """It made the namespace, then another deploy took the lock first: the namespace is the winner's now."""
    from skycap.cluster import namespace as namespaces
    from skycap.cluster.lock import StageLock

    fresh = f"{namespace[:50]}-race"
    project.edit_stage(lambda s: s["kubernetes"].update(namespace=fresh, create_namespace=True))
    winner, real_ensure = [], namespaces.ensure_namespace

    def made_then_beaten(session):
        made = real_ensure(session)
        winner.append(StageLock(core_api, fresh, "test", "deploy rev=winner"))
        winner[0].acquire()  # the other deploy, a moment quicker to the lock
        return made

    monkeypatch.setattr(namespaces, "ensure_namespace", made_then_beaten)
    try:
        ran = project.run("deploy", "test", f"rev={project.commit('race')}")
        assert ran.code == 3, ran.stderr
        assert f"left namespace {fresh}, which this deploy made" in ran.stderr
        assert client.CoreV1Api(core_api).read_namespace(fresh).status.phase == "Active"
    finally:
        for lock in winner:
            lock.release()
        client.CoreV1Api(core_api).delete_namespace(fresh)


def test_two_first_deploys_with_create_namespace_exactly_one_deploys(project, core_api, namespace, local_cluster):
    import os
    import subprocess
    import sys

    fresh = f"{namespace[:50]}-two"
    project.edit_stage(lambda s: s["kubernetes"].update(namespace=fresh, create_namespace=True))
    node = project.commit("two at once")
    argv = [sys.executable, "-m", "skycap.cli", "--project", str(project.root), "deploy", "test", f"rev={node}"]
    env = {**os.environ, "KUBECONFIG": str(local_cluster.kubeconfig)}
    try:
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        assert sorted(code for code, _ in results) == [0, 3], results
        assert client.CoreV1Api(core_api).read_namespace(fresh).status.phase == "Active"
        assert client.AppsV1Api(core_api).read_namespaced_deployment("web", fresh).status.available_replicas == 2
    finally:
        client.CoreV1Api(core_api).delete_namespace(fresh)
