"""logs, exec and restart of a VM service, on real sshd hosts (and the real control plane for the
ledger and the lock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deployproject import make_project


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish, fake_vms):
    """A stage of one VM service on three hosts, deployed once."""
    project = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)

    def vm_only(stage):
        stage["services"] = {}
        stage["vm"] = {"legacy-api": {
            "hosts": fake_vms.hosts, "deploy_to": fake_vms.deploy_to,
            "restart": "cat REVISION >> ../../restarts.log",
            "check": "test ! -e ../../break-check", "parallel": 3, "linked_dirs": ["log"],
            "log_files": ["shared/log/app.log"], "check_retries": 0, "check_delay": 0.1,
            "connect_timeout": 3, "command_timeout": 20}}
    project.edit_stage(vm_only)
    project.fleet = fake_vms
    project.node = project.commit("vm release", publish=False)
    ran = project.run("deploy", "test", f"rev={project.node}")
    assert ran.code == 0, ran.stderr
    return project


def write_log(host, *lines: str) -> None:
    log = host.path("app/shared/log/app.log")
    with open(log, "a") as out:
        out.write("".join(f"{line}\n" for line in lines))


def run_log_texts() -> str:
    folder = Path(os.environ["XDG_STATE_HOME"]) / "skycap" / "logs"
    return "".join(path.read_text() for path in folder.glob("*.log")) if folder.is_dir() else ""


def test_logs_tail_every_host_prefixed_and_not_in_the_run_log(project):
    for index, host in enumerate(project.fleet):
        write_log(host, f"old line {index}", f"line one of {host.name} \t spaced", f"line two of {host.name}")
    ran = project.run("logs", "test", "legacy-api", "--tail", "2")
    assert ran.code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    for host in project.fleet:
        assert f"[{host.name}] line one of {host.name} \t spaced" in lines
        assert f"[{host.name}] line two of {host.name}" in lines
    assert "old line" not in ran.stdout
    assert "line one of" not in run_log_texts()


def test_logs_of_a_host_that_is_down_names_it_and_fails(project):
    write_log(project.fleet[0], "from vm1")
    project.fleet[1].stop()
    ran = project.run("logs", "test", "legacy-api")
    assert ran.code == 1
    assert "[vm1] from vm1" in ran.stdout
    assert "vm2" in ran.stderr and "connection refused" in ran.stderr


def test_logs_since_is_refused_for_vm_services(project):
    ran = project.run("logs", "test", "legacy-api", "--since", "10m")
    assert ran.code == 2
    assert "--since" in ran.stderr and "--tail" in ran.stderr


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def commands_on_hosts(fleet) -> list[str]:
    commands = []
    for host in fleet:
        for pid in descendants(host.process.pid):
            try:
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass
    return commands


def test_logs_follow_shows_new_lines_and_ctrl_c_exits_0_leaving_no_tail_behind(project, kubeconfig):
    write_log(project.fleet[0], "before follow")
    argv = [sys.executable, "-m", "skycap.cli", "--project", str(project.root), "logs", "test", "legacy-api", "-f"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    try:
        assert process.stdout.readline() == "[vm1] before follow\n"
        assert any("tail" in command for command in commands_on_hosts(project.fleet))
        write_log(project.fleet[2], "after follow")
        assert process.stdout.readline() == "[vm3] after follow\n"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 5
    while any("tail" in command for command in commands_on_hosts(project.fleet)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [command for command in commands_on_hosts(project.fleet) if "tail" in command]


def test_exec_runs_in_current_on_one_host(project):
    ran = project.run("exec", "test", "legacy-api", "--", "cat", "REVISION")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == project.node + "\n"


def test_exec_gives_the_command_exit_code_and_its_own_error(project):
    ran = project.run("exec", "test", "legacy-api", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (ran.code, ran.stdout) == (3, "out\n")
    assert "err" in ran.stderr
    missing = project.run("exec", "test", "legacy-api", "--", "no-such-command", "x")
    assert missing.code == 127
    assert "no-such-command" in missing.stderr and "not found" in missing.stderr


def test_exec_words_reach_the_command_as_words_not_shell(project):
    ran = project.run("exec", "test", "legacy-api", "--", "printf", "%s|", "a b", "$HOME", ";", "`id`")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "a b|$HOME|;|`id`|"


def test_exec_all_with_a_host_down_runs_on_the_others_and_names_it(project):
    project.fleet[1].stop()
    ran = project.run("exec", "test", "legacy-api", "--all", "--", "cat", "REVISION")
    assert ran.code == 255
    assert sorted(ran.stdout.splitlines()) == [f"[vm1] {project.node}", f"[vm3] {project.node}"]
    assert "1 of 3 hosts failed" in ran.stderr
    assert "vm2" in ran.stderr.split("failed:")[-1] and "connection refused" in ran.stderr


def test_exec_all_first_non_zero_code_in_host_order(project):
    for code, host in ((0, project.fleet[0]), (4, project.fleet[1]), (5, project.fleet[2])):
        (host.path("app") / "code").write_text(str(code))
    ran = project.run("exec", "test", "legacy-api", "--all", "--", "sh", "-c", "exit $(cat ../../code)")
    assert ran.code == 4
    assert "2 of 3 hosts failed: vm2 (exit 4); vm3 (exit 5)" in ran.stderr


def test_exec_falls_back_to_the_next_host_when_the_first_is_down(project):
    project.fleet[0].stop()
    ran = project.run("exec", "test", "legacy-api", "--", "cat", "REVISION")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == project.node + "\n"
    assert "vm1" in ran.stderr and "trying the next host" in ran.stderr


def restarts(host) -> list[str]:
    log = host.path("app/restarts.log")
    return log.read_text().split() if log.exists() else []


def test_restart_runs_restart_and_check_on_every_host_and_is_recorded(project):
    before = [len(restarts(host)) for host in project.fleet]
    ran = project.run("restart", "test", "legacy-api")
    assert ran.code == 0, ran.stderr
    assert [len(restarts(host)) for host in project.fleet] == [n + 1 for n in before]
    history = json.loads(project.run("history", "test", "--output", "json").stdout)["releases"]
    assert (history[0]["kind"], history[0]["status"], history[0]["note"]) == ("restart", "deployed",
                                                                              "restart legacy-api")
    assert history[0]["vm"] == history[1]["vm"] and history[0]["vm"]["legacy-api"]
    status = json.loads(project.run("status", "test", "--output", "json").stdout)
    assert status["release"]["kind"] == "restart" and status["vm"]["legacy-api"]["in_step"]


def test_restart_stops_at_the_first_failed_check(project):
    project.edit_stage(lambda stage: stage["vm"]["legacy-api"].update(parallel=1))
    (project.fleet[1].path("app") / "break-check").write_text("")
    before = [len(restarts(host)) for host in project.fleet]
    ran = project.run("restart", "test", "legacy-api")
    assert ran.code == 1
    assert [len(restarts(host)) for host in project.fleet] == [before[0] + 1, before[1] + 1, before[2]]
    assert "vm2 failed at check" in ran.stderr and "not restarted: vm3" in ran.stderr
    history = json.loads(project.run("history", "test", "--output", "json").stdout)["releases"]
    assert (history[0]["kind"], history[0]["status"]) == ("restart", "failed")


def test_log_files_must_be_under_current_or_shared(project):
    project.edit_stage(lambda stage: stage["vm"]["legacy-api"].update(log_files=["/var/log/syslog"]))
    ran = project.run("logs", "test", "legacy-api")
    assert ran.code == 2
    assert "log_files" in ran.stderr and "shared/" in ran.stderr
