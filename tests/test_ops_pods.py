"""logs and exec of pods: these need a real node (a kubelet that keeps logs and runs commands).
On the simulated node every test here is skipped.

The local cluster's images log a start line naming their tag, then serve HTTP on 8080."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from skycap.commands.running.targets import short_name
from tests.deployproject import make_project


@pytest.fixture(scope="session")
def real_node(core_api):
    nodes = client.CoreV1Api(core_api).list_node().items
    runtimes = [node.status.node_info.container_runtime_version for node in nodes]
    if not any(runtime.startswith("containerd://") for runtime in runtimes):
        pytest.skip(f"the node is simulated ({', '.join(runtimes) or 'no node'}): no logs, no exec")


@pytest.fixture
def deployed(real_node, tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    project = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)
    project.node = project.commit("running")
    ran = project.run("deploy", "test", f"rev={project.node}")
    assert ran.code == 0, ran.stderr
    return project


def web_pods(core_api, namespace) -> list:
    pods = client.CoreV1Api(core_api).list_namespaced_pod(namespace, label_selector="skycap.io/service=web").items
    return [pod for pod in pods if not pod.metadata.deletion_timestamp]


def short_names(core_api, namespace) -> set[str]:
    return {short_name(client.ApiClient().sanitize_for_serialization(pod), "web")
            for pod in web_pods(core_api, namespace)}


def test_logs_show_every_pod_prefixed_and_stay_out_of_the_run_log(deployed, core_api, namespace):
    ran = deployed.run("logs", "test", "web")
    assert ran.code == 0, ran.stderr
    tag = deployed.node[:12]
    prefixes = {line[1:line.index("]")] for line in ran.stdout.splitlines() if tag in line}
    assert prefixes == short_names(core_api, namespace)
    folder = Path(os.environ["XDG_STATE_HOME"]) / "skycap" / "logs"
    container_line = "serving http on :8080"  # the container's own words, printed above
    assert container_line in ran.stdout
    assert not any(container_line in path.read_text() for path in folder.glob("*.log"))


def test_logs_tail_limits_each_pod(deployed):
    ran = deployed.run("logs", "test", "web", "--tail", "1")
    assert ran.code == 0, ran.stderr
    assert len(ran.stdout.splitlines()) == 2


def test_logs_imports_neither_click_nor_the_kubernetes_client(deployed, kubeconfig):
    """The time to the first line is most of it Python's imports: these would be 0.05-0.3 s of it."""
    code = ("import sys\nfrom skycap.cli import main\n"
            f"try:\n    main(['--project', {str(deployed.root)!r}, 'logs', 'test', 'web', '--tail', '1'])\n"
            "except SystemExit as exc:\n    code = exc.code\n"
            "heavy = [m for m in ('click', 'kubernetes', 'urllib3', 'http.client', 'jinja2', 'concurrent.futures')\n"
            "         if m in sys.modules]\n"
            "print(code, heavy, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    assert len(done.stdout.splitlines()) == 2, done.stderr
    assert done.stderr.splitlines()[-1] == "0 []", done.stderr


def test_logs_follow_through_a_rollout_shows_new_pods_once_and_old_lines_once(deployed, kubeconfig):
    old_tag = deployed.node[:12]
    argv = [sys.executable, "-m", "skycap.cli", "--project", str(deployed.root), "logs", "test", "web", "-f"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: sum(old_tag in line for line in lines) >= 2, "the running pods' start lines")
        new = deployed.commit("replaces every pod")
        assert deployed.run("deploy", "test", f"rev={new}").code == 0
        wait_for(lambda: sum(new[:12] in line for line in lines) >= 2, "the new pods' start lines")
        time.sleep(2)  # any repeat of an old line would come now
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    old_lines = [line for line in lines if old_tag in line]
    assert len(old_lines) == len(set(old_lines)) == 2, lines
    assert len({line[1:line.index("]")] for line in lines if new[:12] in line}) == 2, lines


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_logs_previous_shows_the_crashed_instance(real_node, tmp_path, hg_repo, local_cluster, namespace,
                                                  kubeconfig, publish, core_api):
    project = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)
    node = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    assert project.run("deploy", "test", f"rev={node}", "--no-rollback", "--timeout", "20").code != 0

    def worker_crashed_once():  # the verdict comes at the first failed service: maybe web's
        pods = client.CoreV1Api(core_api).list_namespaced_pod(namespace, label_selector="app=worker").items
        return any(status.restart_count for pod in pods for status in pod.status.container_statuses or [])

    wait_for(worker_crashed_once, "a worker container to end once")
    ran = project.run("logs", "test", "worker", "--previous")
    assert ran.code == 0, ran.stderr
    assert node[:12] in ran.stdout


def test_exec_runs_in_one_ready_pod_with_the_command_exit_code(deployed, core_api, namespace):
    ran = deployed.run("exec", "test", "web", "--", "hostname")
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip() in {pod.metadata.name for pod in web_pods(core_api, namespace)}
    assert deployed.run("exec", "test", "web", "--", "sh", "-c", "exit 7").code == 7


def test_exec_of_a_command_missing_in_the_container_gives_its_error_and_code(deployed):
    ran = deployed.run("exec", "test", "web", "--", "no-such-command")
    assert ran.code not in (0, 2), ran.stderr
    assert "no-such-command" in ran.stderr and "not found" in ran.stderr.lower()
    if "exit code" in ran.stderr:
        assert f"exit code {ran.code}" in ran.stderr


def test_exec_all_prefixes_every_pod_and_names_the_failed_ones(deployed, core_api, namespace):
    ran = deployed.run("exec", "test", "web", "--all", "--", "hostname")
    assert ran.code == 0, ran.stderr
    assert {line[1:line.index("]")] for line in ran.stdout.splitlines()} == short_names(core_api, namespace)
    failed = deployed.run("exec", "test", "web", "--all", "--", "sh", "-c", "exit 3")
    assert failed.code == 3
    assert "2 of 2 pods failed" in failed.stderr


def test_exec_it_gives_an_interactive_shell_on_a_terminal(deployed):
    """`script` gives skycap a real pseudo-terminal, as a person's would be; what is typed reaches a
    shell in the pod, which has a terminal of its own there."""
    import shlex

    skycap = [sys.executable, "-m", "skycap.cli", "--project", str(deployed.root), "exec", "test", "web", "-it",
              "--", "sh"]
    typed = "tty; echo answer-$((40 + 2)); exit 7\n"
    done = subprocess.run(["script", "-qec", shlex.join(skycap), "/dev/null"], input=typed, capture_output=True,
                          text=True, timeout=60)
    assert "answer-42" in done.stdout, done.stdout + done.stderr
    assert "/dev/pts/" in done.stdout
    assert done.returncode == 7
