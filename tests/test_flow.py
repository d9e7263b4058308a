"""The flow's named steps with hooks from the project's tasks.py, and the project's tasks run against a
stage (`skycap task`, `skycap tasks`): real apiserver, node, hg, registry and, for c.hosts, sshd."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from skycap.flow.steps import DEPLOY_STEPS, ROLLBACK_STEPS
from tests.deployproject import deployed, history, make_project
from tests.test_deploy_vm import with_vms

RECORDER = """\
from invoke import task
from skycap.tasks import STEP_NAMES, after, before

LOG = {log!r}


def recorder(when, step):
    @task
    def record(c):
        print(f"hook says {{when}} {{step}}")  # on stderr, never in the JSON on stdout
        with open(LOG, "a") as out:
            out.write(f"{{when}} {{c.step}} release={{c.release}}\\n")
    return record


for name in STEP_NAMES:
    before(name, recorder("before", name))
    after(name, recorder("after", name))


@task
def before_deploy(c, stage, node):
    with open(LOG, "a") as out:
        out.write(f"alias before_deploy {{stage}} {{node}}\\n")
"""


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def steps_of(names, release) -> list[str]:
    return [f"{when} {name} release={release(name, when)}" for name in names for when in ("before", "after")]


def deployments(core_api, namespace) -> list[str]:
    return [d.metadata.name for d in client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items]


def take(log) -> list[str]:
    lines = log.read_text().splitlines()
    log.write_text("")
    return lines


def test_hooks_on_every_step_see_each_flow_in_order(project, tmp_path):
    log = tmp_path / "steps.log"
    (project.root / "tasks.py").write_text(RECORDER.format(log=str(log)))
    deploy_names = [step.name for step in DEPLOY_STEPS]
    rollback_names = [step.name for step in ROLLBACK_STEPS]

    good = project.commit("good")
    ran = deployed(project, good, "--output", "json")
    assert json.loads(ran.stdout)["status"] == "deployed"  # what hooks print stays off stdout
    assert "hook says before deploy:publishing" in ran.stderr
    lines = take(log)
    assert lines.pop(5) == f"alias before_deploy test {good}"  # before_deploy: before deploy:updating
    assert lines == steps_of(deploy_names, lambda name, when: None if (name, when) == ("deploy:starting", "before")
                             else 1)

    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    lines = take(log)
    assert lines.pop(5) == f"alias before_deploy test {bad}"
    until_publishing = deploy_names[:deploy_names.index("deploy:publishing")]
    assert lines == (steps_of(until_publishing, lambda name, when: None if (name, when) == ("deploy:starting",
                                                                                            "before") else 2)
                     + ["before deploy:publishing release=2"]
                     + steps_of(rollback_names, lambda name, when: None if name in rollback_names[:2]
                                and (name, when) != ("rollback:reverting", "after") else 3)
                     + steps_of(["deploy:failed"], lambda name, when: 2))
    assert history(project)[:2] == [(3, "rollback", "deployed"), (2, "deploy", "failed")]

    assert deployed(project, project.commit("again")).code == 0  # release 4
    take(log)
    ran = project.run("rollback", "test")
    assert ran.code == 0, ran.stderr
    assert take(log) == steps_of(rollback_names, lambda name, when: None if name in rollback_names[:2]
                                 and (name, when) != ("rollback:reverting", "after") else 5)


FAILING = """\
from invoke import task
from skycap.tasks import after, before

@task
def gate(c):
    if {where!r} == "gate":
        raise RuntimeError("change freeze")

@task
def hang(c):
    c.run("sleep 600")

@task
def migrate(c):
    if {where!r} == "migrate":
        c.run("exit 3")

@task
def notify(c):
    if {where!r} == "notify":
        raise RuntimeError("chat is down")

before("deploy:started", gate)
before("deploy:publishing", migrate)
after("deploy:finished", notify)
if {where!r} == "hang":
    before("deploy:updating", hang)
"""


def test_a_failing_hook_before_the_first_change_after_it_and_after_the_end(project, core_api, namespace):
    tasks = project.root / "tasks.py"
    tasks.write_text(FAILING.format(where="gate"))
    ran = project.run("deploy", "test", f"rev={project.commit('gated')}")
    assert ran.code == 2, ran.stderr
    assert "hook gate in tasks.py failed: RuntimeError: change freeze; nothing was changed" in ran.stderr
    assert "before deploy:started" in ran.stderr
    assert not deployments(core_api, namespace) and history(project) == []

    tasks.write_text(FAILING.format(where="nowhere"))
    good = project.commit("good")
    deployed(project, good)
    tasks.write_text(FAILING.format(where="migrate"))
    ran = project.run("deploy", "test", f"rev={project.commit('migration fails')}")
    assert ran.code == 1, ran.stderr
    assert "hook migrate in tasks.py failed: command 'exit 3' exited with 3" in ran.stderr
    assert history(project)[:2] == [(3, "rollback", "deployed"), (2, "deploy", "failed")]

    tasks.write_text(FAILING.format(where="notify"))
    ran = project.run("deploy", "test", f"rev={project.commit('chat down')}", "--output", "json")
    assert ran.code == 0, ran.stderr
    assert "hook notify in tasks.py failed: RuntimeError: chat is down (reported" in ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["status"] == "deployed" and "chat is down" in summary["error"]
    assert history(project)[0] == (4, "deploy", "deployed")


def test_a_hook_that_hangs_is_killed_at_its_timeout(project):
    project.edit_stage(lambda s: s.update(hook_timeout=2))
    (project.root / "tasks.py").write_text(FAILING.format(where="hang"))
    ran = project.run("deploy", "test", f"rev={project.commit('hangs')}")
    assert ran.code == 2, ran.stderr
    assert ("hook hang in tasks.py did not finish within 2 s (hook_timeout) and was killed; nothing was changed"
            in ran.stderr)
    assert history(project) == []


@pytest.mark.parametrize("text, says", [
    ("from skycap.tasks import before\nbefore('deploy:migrating', 'x')\n",
     "there is no step 'deploy:migrating'"),
    ("from invoke import task\n\n@task\ndef broken(c):\n    pass\n\nimport no_such_module\n",
     "cannot be loaded, line 7: ModuleNotFoundError: No module named 'no_such_module'"),
    ("def broken(:\n", "cannot be loaded, line 1: SyntaxError"),
    ("from skycap.tasks import after\nafter('deploy:finished', 'nope')\n", "tasks.py has no task 'nope'"),
])
def test_a_tasks_py_that_cannot_be_used_is_bad_input(tmp_path, text, says):
    import shutil

    from tests.deployproject import ROOT, skycap

    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "test.yaml").write_text(
        "hg: .\nregistry: 127.0.0.1:5000\nkubernetes: {namespace: nowhere}\n"
        "services: {web: {image: web, template: web.yaml.j2}}\n")
    (tmp_path / "tasks.py").write_text(text)
    for args in (["deploy", "test", "rev=1"], ["rollback", "test"], ["tasks"], ["task", "test", "x"]):
        ran = skycap("--project", str(tmp_path), *args)
        assert ran.code == 2, (args, ran.stderr)
        assert str(tmp_path / "tasks.py") in ran.stderr and says in ran.stderr, ran.stderr
    if "no step" in says:
        assert "the steps are: deploy:starting, deploy:started" in ran.stderr


TASKS = """\
import json

from invoke import task, Collection
from kubernetes import client
from skycap.tasks import before, locked


@task
def probe(c, service="legacy-api", times=1):
    '''Show what the stage context reaches.'''
    print(c.config.greeting, c.stage, c.namespace, c.release)
    print("kubectl:", c.kubectl("get", "serviceaccount", "default", "-o", "name").strip())
    print("kube:", client.CoreV1Api(c.kube).read_namespace(c.namespace).metadata.name)
    for connection, result in sorted(c.hosts(service).run("echo $SSH_CONNECTION", hide=True).items(),
                                     key=lambda item: item[0].host):
        print("host:", connection.host, connection.port, result.stdout.split()[2] * times)


@task
def fail(c):
    '''Fails.'''
    c.run("false")


@locked
@task
def holder(c):
    '''Says who holds the stage lock.'''
    lease = client.CoordinationV1Api(c.kube).read_namespaced_lease("skycap-lock-test", c.namespace)
    print("lock:", lease.spec.holder_identity, lease.metadata.annotations["skycap.io/purpose"])


@task
def migrate(c):
    '''Migrate the database.'''


db = Collection("db")
db.add_task(migrate)
ns = Collection(probe, fail, holder, db)
before("deploy:publishing", "db.migrate")
"""


@pytest.fixture
def mixed(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish, fake_vms):
    project = with_vms(make_project(tmp_path, hg_repo, local_cluster, namespace, publish), fake_vms)
    (project.root / "tasks.py").write_text(TASKS)
    (project.root / "invoke.yaml").write_text("greeting: hello\n")
    return project


def test_skycap_task_runs_a_task_with_the_stage_context(mixed, namespace):
    ran = mixed.run("task", "test", "probe", "times=2")
    assert ran.code == 0, ran.stderr
    assert f"hello test {namespace} None" in ran.stderr
    assert "kubectl: serviceaccount/default" in ran.stderr
    assert f"kube: {namespace}" in ran.stderr
    hosts = [line.split() for line in ran.stderr.splitlines() if "host: " in line]
    assert [(words[-3], words[-1]) for words in hosts] == [(vm.address, vm.address * 2)
                                                           for vm in sorted(mixed.fleet, key=lambda vm: vm.address)]
    assert ran.stdout == ""

    ran = mixed.run("task", "test", "holder")
    assert ran.code == 0, ran.stderr
    assert "lock: " in ran.stderr and "task holder" in ran.stderr

    ran = mixed.run("tasks", "test")
    assert ran.code == 0, ran.stderr
    assert "before: db.migrate" in ran.stdout and "Show what the stage context reaches." in ran.stdout
    assert "Says who holds the stage lock.  (locked)" in ran.stdout and "deploy:failed" in ran.stdout


@pytest.mark.parametrize("args, code, says", [
    (["fail"], 1, "task fail in tasks.py failed: command 'false' exited with 1"),
    (["nope"], 2, "unknown task 'nope'"),
    (["probe", "colour=red"], 2, "task probe takes no argument colour="),
    (["probe", "times=many"], 2, "times=many is not a whole number"),
    (["db.migrate", "x"], 2, "unexpected argument 'x'"),
])
def test_skycap_task_bad_input_and_failure(mixed, args, code, says):
    ran = mixed.run("task", "test", *args)
    assert ran.code == code, ran.stderr
    assert says in ran.stderr
    if args == ["nope"]:
        assert "db.migrate, fail, holder, probe" in ran.stderr
