"""skycap.vm.deploy against real sshd hosts (tests/fixtures/sshd.py), asserting what ends up on each host's disk."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from skycap.errors import BadInput, DeployFailed, Interrupted
from skycap.project.config import VmService
from skycap.vm import deploy as vmdeploy
from skycap.vm import remote as vm_remote
from skycap.vm.hosts import HostKeyRefused, HostUnreachable

NODE1, NODE2, NODE3, NODE4 = (hashlib.sha1(f"v{i}".encode()).hexdigest() for i in range(1, 5))


def release(number: int, node: str) -> str:
    return f"2024010100000{number}-{node[:12]}"


R1, R2, R3, R4 = release(1, NODE1), release(2, NODE2), release(3, NODE3), release(4, NODE4)


def make_archive(folder: Path, files: dict[str, str], name: str = "release.tar.gz") -> Path:
    path = folder / name
    with tarfile.open(path, "w:gz") as tar:
        for file_name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./{file_name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_archive(tmp_path, {"app.py": "print('hello')\n", "log/.keep": ""})


def service(fleet, **overrides) -> VmService:
    # restart and check run in DEPLOY_TO/current; ../.. is DEPLOY_TO. A file break-restart-NODE (or
    # break-check-NODE) in a host's DEPLOY_TO makes that step fail there, for that release only.
    settings = dict(
        name="legacy-api", hosts=fleet.hosts, deploy_to=fleet.deploy_to,
        restart="cat REVISION >> ../../restarts.log && test ! -e ../../break-restart-$(cat REVISION)",
        check="test ! -e ../../break-check-$(cat REVISION)",
        parallel=3, keep_releases=5, check_retries=2, check_delay=0.05, connect_timeout=3, command_timeout=20,
    )
    settings.update(overrides)
    return VmService(**settings)


def app(host) -> Path:
    """A fake VM's deploy_to, seen from the test."""
    return host.path("app")


def live(host) -> str | None:
    link = app(host) / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def current_dir(host) -> Path:
    """The live release folder (current's absolute target only exists inside the host's mount namespace)."""
    return app(host) / "releases" / live(host)


def releases(host) -> list[str]:
    folder = app(host) / "releases"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def restarts(host) -> list[str]:
    log = app(host) / "restarts.log"
    return log.read_text().split() if log.exists() else []


def ssh_fingerprint(host) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(host.host_key.with_suffix(".pub"))], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


# --- deploys that go well ---


def test_three_hosts_deploy_and_all_switch(fake_vms, archive):
    events = []
    result = vmdeploy.deploy(service(fake_vms), archive, NODE1, release_name=R1,
                             on_event=lambda host, message: events.append((host, message)))
    assert result.ok
    assert [o.state for o in result.hosts] == ["done"] * 3
    for host in fake_vms:
        assert live(host) == R1
        assert (app(host) / "releases" / R1 / "REVISION").read_text() == NODE1 + "\n"
        assert (current_dir(host) / "app.py").read_text() == "print('hello')\n"
        assert restarts(host) == [NODE1]
        assert f"deployed {R1} ({NODE1}) by " in (app(host) / "revisions.log").read_text()
        assert not list((app(host) / "releases").glob(".*"))  # no partial unpack, no temporary symlink
    assert ("vm2", f"current -> {R1}") in events


def test_default_release_name_is_utc_timestamp_and_short_node(fake_vms, archive):
    result = vmdeploy.deploy(service(fake_vms, hosts=["vm1"]), archive, NODE1)
    assert result.release.endswith("-" + NODE1[:12]) and result.release[:14].isdigit()
    assert live(fake_vms[0]) == result.release


def test_linked_dirs_and_files_keep_their_content_across_releases(fake_vms, archive, tmp_path):
    vm = service(fake_vms, linked_dirs=["log"], linked_files=["config/app.env"])
    first = vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    assert "shared/config/app.env did not exist: created it empty" in first.summary()
    for host in fake_vms:
        (app(host) / "shared" / "log" / "app.log").write_text(f"{host.name} was here\n")
        (app(host) / "shared" / "config" / "app.env").write_text("SECRET=1\n")
    vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    for host in fake_vms:
        release_dir = app(host) / "releases" / R2
        assert os.readlink(release_dir / "log") == f"{fake_vms.deploy_to}/shared/log"
        assert (current_dir(host) / "log").is_symlink()
        assert (app(host) / "shared" / "log" / "app.log").read_text() == f"{host.name} was here\n"
        assert os.readlink(release_dir / "config" / "app.env") == f"{fake_vms.deploy_to}/shared/config/app.env"
        assert (app(host) / "shared" / "config" / "app.env").read_text() == "SECRET=1\n"


def test_keep_releases_removes_old_ones_but_never_current_nor_previous(fake_vms, archive):
    vm = service(fake_vms, keep_releases=2)
    for name, node in ((R1, NODE1), (R2, NODE2), (R3, NODE3)):
        vmdeploy.deploy(vm, archive, node, release_name=name)
    assert all(releases(host) == [R2, R3] for host in fake_vms)
    vmdeploy.rollback(vm)  # back to R2, so R2 is "previous" when R4 goes live
    vmdeploy.deploy(vm, archive, NODE4, release_name=R4)
    for host in fake_vms:
        assert releases(host) == [R2, R3, R4]
        assert live(host) == R4


# --- failures: nothing switched, or everything switched back ---


def test_host_down_from_the_start_fails_clearly_and_switches_nothing(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    fake_vms[1].stop()
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    message = str(failure.value)
    assert "vm2 failed at connect" in message and "nothing was switched on any host" in message
    assert "connection refused" in message and "no sshd listens there" in message
    assert failure.value.exit_code == 1
    states = {o.host: o.state for o in failure.value.result.hosts}
    assert states["vm2"] == "failed"
    for host in (fake_vms[0], fake_vms[2]):
        assert live(host) == R1
        assert releases(host) == [R1]  # the unpacked copies of R2 were removed again
        assert restarts(host) == [NODE1]


def test_restart_failing_midway_switches_the_switched_hosts_back(fake_vms, archive):
    vm = service(fake_vms, parallel=1)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    (app(fake_vms[1]) / f"break-restart-{NODE2}").touch()
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    assert "vm2 failed at restart" in str(failure.value)
    assert "every host that had switched was switched back" in str(failure.value)
    outcomes = {o.host: o for o in failure.value.result.hosts}
    assert outcomes["vm1"].state == outcomes["vm2"].state == "switched back"
    assert outcomes["vm2"].failed_step == "restart"
    assert outcomes["vm3"].state == "not switched"
    for host in fake_vms:
        assert live(host) == R1
        assert releases(host) == [R1]
    assert restarts(fake_vms[0]) == [NODE1, NODE2, NODE1]  # went live, then back, restarted each time
    assert restarts(fake_vms[1]) == [NODE1, NODE2, NODE1]
    assert restarts(fake_vms[2]) == [NODE1]  # never started
    assert f"switched back (from {R2}) to {R1}" in (app(fake_vms[0]) / "revisions.log").read_text()


def test_failing_check_is_retried_then_everything_switched_back(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    (app(fake_vms[2]) / f"break-check-{NODE2}").touch()
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    assert "vm3 failed at check" in str(failure.value)
    assert "check failed 3 times, 0.05 s apart" in failure.value.result.summary()
    assert all(live(host) == R1 and releases(host) == [R1] for host in fake_vms)


def test_first_deploy_failing_leaves_no_current_anywhere(fake_vms, archive):
    vm = service(fake_vms, parallel=1)
    (app(fake_vms[1]).mkdir(parents=True))
    (app(fake_vms[1]) / f"break-restart-{NODE1}").touch()
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    assert "current removed" in failure.value.result.summary()
    assert all(live(host) is None and releases(host) == [] for host in fake_vms)


def test_a_release_directory_that_already_exists_is_refused(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    leftover = app(fake_vms[1]) / "releases" / R2
    leftover.mkdir()
    (leftover / "mine").write_text("do not touch")
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    assert f"releases/{R2} already exists" in str(failure.value.result.summary())
    assert "nothing was switched on any host" in str(failure.value)
    assert (leftover / "mine").read_text() == "do not touch"
    assert [live(host) for host in fake_vms] == [R1] * 3
    assert releases(fake_vms[0]) == releases(fake_vms[2]) == [R1]


@pytest.mark.parametrize("how", ["cancel event", "KeyboardInterrupt"])
def test_cancel_in_the_middle_leaves_hosts_consistent_and_raises_interrupted(fake_vms, archive, how):
    vm = service(fake_vms, parallel=1)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    cancel = threading.Event()

    def on_event(host, message):
        if host == "vm2" and message.startswith("current ->"):  # vm2 is half-way
            if how == "cancel event":
                cancel.set()  # as a SIGINT handler of the CLI would
            else:  # Ctrl-C with Python's default handler: KeyboardInterrupt in the main thread
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                time.sleep(0.2)  # let the main thread take it before this host's next step

    with pytest.raises(Interrupted) as interrupted:
        vmdeploy.deploy(vm, archive, NODE2, release_name=R2, on_event=on_event, cancel=cancel)
    assert interrupted.value.exit_code == 130
    assert "every host that had switched was switched back" in str(interrupted.value)
    assert all(live(host) == R1 and releases(host) == [R1] for host in fake_vms)
    assert restarts(fake_vms[2]) == [NODE1]


def test_command_timeout_stops_a_hanging_restart_and_kills_it_on_the_host(fake_vms, archive):
    vm = service(fake_vms, hosts=["vm1"], restart="sleep 300.25 && echo never", command_timeout=0.5)
    try:
        with pytest.raises(vmdeploy.VmDeployFailed) as failure:
            vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
        assert "did not finish within 0.5 s" in failure.value.result.summary()
        assert live(fake_vms[0]) is None
        deadline = time.monotonic() + 30  # the sleep lasts 300 s: only a kill ends it before this
        while subprocess.run(["pgrep", "-f", "sleep 300.25"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "the timed-out restart still runs on the host"
            time.sleep(0.1)
    finally:
        subprocess.run(["pkill", "-f", "sleep 300.25"], capture_output=True)


def test_the_remote_command_is_one_quoted_argument():
    from skycap.vm.hosts import remote_command

    command = remote_command("echo 'a b' $HOME; touch x", 20)
    assert command.endswith(" skycap 'echo '\"'\"'a b'\"'\"' $HOME; touch x'")
    assert "timeout -k 5 20.000 sh -c" in command


def test_connect_timeout_when_a_host_never_answers(fake_vms, archive, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.9", 0))
    silent.listen()  # accepts TCP, never says a word: stuck before the SSH banner
    try:
        vm = service(fake_vms, hosts=[f"root@127.0.0.9:{silent.getsockname()[1]}"], connect_timeout=0.5)
        with pytest.raises(vmdeploy.VmDeployFailed) as failure:
            vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    finally:
        silent.close()
    assert "failed at connect" in str(failure.value)


# --- host keys ---


def test_unknown_host_key_is_refused_with_its_fingerprint(fake_vms, archive, isolated_home):
    known_hosts = isolated_home / ".ssh" / "known_hosts"
    known_hosts.write_text(fake_vms[0].known_hosts_line() + fake_vms[1].known_hosts_line())
    vm = service(fake_vms)
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    summary = failure.value.result.summary()
    assert f"unknown host key for 127.0.0.13 port {fake_vms[2].port}: ED25519 {ssh_fingerprint(fake_vms[2])}" \
        in summary
    assert "--accept-new-host-keys" in summary and f"ssh-keyscan -p {fake_vms[2].port} 127.0.0.13" in summary
    assert all(live(host) is None for host in fake_vms)

    result = vmdeploy.deploy(vm, archive, NODE1, release_name=R1, accept_new_host_keys=True)
    assert result.ok
    assert f"new host key recorded: ED25519 {ssh_fingerprint(fake_vms[2])}" in result.summary()
    assert fake_vms[2].known_hosts_line() in known_hosts.read_text()


def test_project_known_hosts_file_is_trusted_too(fake_vms, archive, isolated_home, tmp_path):
    (isolated_home / ".ssh" / "known_hosts").unlink()
    (tmp_path / "known_hosts").write_text(fake_vms.known_hosts())
    vm = service(fake_vms, known_hosts="known_hosts")
    assert vmdeploy.deploy(vm, archive, NODE1, release_name=R1, project_root=tmp_path).ok


def test_changed_host_key_is_refused_even_with_accept_new_host_keys(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    fake_vms[1].replace_host_key()
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE2, release_name=R2, accept_new_host_keys=True)
    summary = failure.value.result.summary()
    assert "HOST KEY CHANGED" in summary and ssh_fingerprint(fake_vms[1]) in summary
    assert "nothing was switched on any host" in str(failure.value)
    assert all(live(host) == R1 for host in fake_vms)


@pytest.mark.parametrize("also_listed", [False, True])
def test_a_revoked_host_key_is_refused_even_with_accept_new_host_keys(fake_vms, archive, isolated_home,
                                                                      also_listed):
    known_hosts = isolated_home / ".ssh" / "known_hosts"
    revoked_key = fake_vms[1].public_host_key()
    others = fake_vms[0].known_hosts_line() + fake_vms[2].known_hosts_line()
    listed = fake_vms[1].known_hosts_line() if also_listed else ""  # a plain line does not undo @revoked
    known_hosts.write_text(f"@revoked * {revoked_key}\n" + others + listed)
    vm = service(fake_vms)
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE1, release_name=R1, accept_new_host_keys=True)
    summary = failure.value.result.summary()
    assert "host key REVOKED" in summary and ssh_fingerprint(fake_vms[1]) in summary
    assert all(live(host) is None for host in fake_vms)
    assert known_hosts.read_text() == f"@revoked * {revoked_key}\n" + others + listed  # nothing recorded


def test_marker_and_unreadable_known_hosts_lines_do_not_stop_the_others(fake_vms, archive, isolated_home):
    ca_key = fake_vms[0].public_host_key()
    (isolated_home / ".ssh" / "known_hosts").write_text(
        f"@cert-authority *.example.com {ca_key}\nnot a known_hosts line\nhost ssh-ed25519 !!!\n"
        + fake_vms.known_hosts())
    assert vmdeploy.deploy(service(fake_vms), archive, NODE1, release_name=R1).ok


def test_host_key_errors_are_raised_as_such_by_the_connection(fake_vms, isolated_home):
    from skycap.vm.hosts import HostConnection, SshOptions

    (isolated_home / ".ssh" / "known_hosts").write_text("")
    with pytest.raises(HostKeyRefused) as refused:
        HostConnection("vm1", SshOptions(connect_timeout=3, command_timeout=3)).open()
    assert refused.value.fingerprint == ssh_fingerprint(fake_vms[0])
    fake_vms[0].stop()
    with pytest.raises(HostUnreachable):
        HostConnection("vm1", SshOptions(connect_timeout=3, command_timeout=3)).open()


# --- rollback and status ---


def test_rollback_to_previous_then_to_a_named_node(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    result = vmdeploy.rollback(vm)
    assert result.ok and result.release == R1 and result.node == NODE1
    for host in fake_vms:
        assert live(host) == R1
        assert restarts(host) == [NODE1, NODE2, NODE1]
        assert f"rolled back to {R1} ({NODE1})" in (app(host) / "revisions.log").read_text()
    assert vmdeploy.rollback(vm, NODE2[:12]).release == R2
    assert all(live(host) == R2 for host in fake_vms)
    with pytest.raises(BadInput, match="no release 'nope'"):
        vmdeploy.rollback(vm, "nope")


def test_rollback_refuses_to_guess_when_hosts_are_out_of_step(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    vmdeploy.rollback(service(fake_vms, hosts=["vm3"]))
    with pytest.raises(BadInput, match="out of step"):
        vmdeploy.rollback(vm)
    assert vmdeploy.rollback(vm, R1).ok  # a named release settles it; vm3 is already there
    assert all(live(host) == R1 for host in fake_vms)


def test_status_shows_releases_and_flags_out_of_step_and_unreachable_hosts(fake_vms, archive):
    vm = service(fake_vms)
    vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    vmdeploy.deploy(vm, archive, NODE2, release_name=R2)
    found = vmdeploy.status(vm)
    assert found.in_step and [(h.release, h.node) for h in found.hosts] == [(R2, NODE2)] * 3
    vmdeploy.rollback(service(fake_vms, hosts=["vm3"]))
    fake_vms[0].stop()
    found = vmdeploy.status(vm)
    assert not found.in_step
    # vm2 and vm3 disagree one to one: the newer release is taken as the reference.
    assert [(h.host, h.reachable, h.out_of_step) for h in found.hosts] == [
        ("vm1", False, False), ("vm2", True, False), ("vm3", True, True)]
    assert "UNREACHABLE" in found.summary() and "OUT OF STEP" in found.summary()
    with pytest.raises(DeployFailed, match="1 of 3 host"):
        vmdeploy.preflight(vm)


# --- the archive, and fast unit tests ---


def test_build_archive_from_mercurial(tmp_path, fake_vms):
    hg = str(Path(sys.executable).with_name("hg"))
    repo = tmp_path / "repo"
    subprocess.run([hg, "init", str(repo)], check=True)
    (repo / "app.py").write_text("v1\n")
    env = {**os.environ, "HGUSER": "test <t@example.com>", "HGPLAIN": "1"}
    subprocess.run([hg, "commit", "-R", str(repo), "-qAm", "one"], check=True, env=env, cwd=repo)
    node = subprocess.run([hg, "log", "-R", str(repo), "-r", ".", "-T", "{node}"], check=True, env=env,
                          capture_output=True, text=True).stdout
    built = vmdeploy.build_archive(repo, node, tmp_path / "out.tar.gz")
    with tarfile.open(built) as tar:
        assert sorted(tar.getnames()) == ["app.py"]
    vmdeploy.deploy(service(fake_vms, hosts=["vm1"]), built, node)
    assert (current_dir(fake_vms[0]) / "app.py").read_text() == "v1\n"


def test_plan_lists_each_hosts_steps_without_touching_them():
    vm = VmService(name="legacy-api", hosts=["a", "deploy@b:2222"], deploy_to="/srv/api", restart="systemctl restart x",
                   linked_dirs=["log"])
    plans = vmdeploy.plan(vm, NODE1, release_name=R1)
    assert [p.host for p in plans] == ["a", "deploy@b:2222"]
    text = vmdeploy.describe_plan(vm, plans)
    assert f"switch /srv/api/current -> releases/{R1} (atomic rename)" in text
    assert f"link releases/{R1}/log -> /srv/api/shared/log" in text
    assert "restart: systemctl restart x" in text and "no check command" in text


def test_inputs_are_validated_before_any_connection():
    vm = VmService(name="x", hosts=["a"], deploy_to="/srv/x")
    with pytest.raises(BadInput, match="40 hex"):
        vmdeploy.plan(vm, "tip")
    with pytest.raises(BadInput, match="release name"):
        vmdeploy.plan(vm, NODE1, release_name="../../etc")
    with pytest.raises(BadInput, match="linked path"):
        vmdeploy.deploy(VmService(name="x", hosts=["a"], deploy_to="/srv/x", linked_dirs=["$(reboot)"]),
                        Path(__file__), NODE1)


def test_releases_to_remove_keeps_newest_current_previous_and_unknown_names():
    names = [R1, R2, R3, R4, "hand-made"]
    assert vm_remote.releases_to_remove(names, 2, current=R4, previous=R1) == [R2]
    assert vm_remote.releases_to_remove(names, 5, current=R4, previous=R3) == []
    assert vm_remote.releases_to_remove([R2, R3, R4, R4], 2, current=R4, previous=R2) == []


def test_scripts_quote_what_they_are_given():
    script = vm_remote.command_in_current("/srv/x", "echo 'a b' ; exit 3")
    assert script == "cd /srv/x/current && sh -c 'echo '\"'\"'a b'\"'\"' ; exit 3'\n"
    state = vm_remote.parse_state("/srv/x", f"current\t/srv/x/releases/{R2}\nrelease\t{R1}\t{NODE1}\n"
                                            f"release\t{R2}\t\n")
    assert state.current == R2 and state.releases == {R1: NODE1, R2: ""}
    assert vm_remote.parse_state("/srv/x", "current\t/elsewhere\n").current is None


def test_proxyjump_of_ssh_config_is_followed_and_the_hops_key_checked_too(fake_vms, archive, isolated_home):
    ssh_dir = isolated_home / ".ssh"
    jumped = fake_vms[1]
    (ssh_dir / "config").write_text(f"Host jumped\n  HostName {jumped.address}\n  Port {jumped.port}\n  User root\n"
                                    f"  ProxyJump vm1\n\n" + (ssh_dir / "config").read_text())
    vm = service(fake_vms, hosts=["jumped"])
    (ssh_dir / "known_hosts").write_text(jumped.known_hosts_line())  # the hop, vm1, is unknown
    with pytest.raises(vmdeploy.VmDeployFailed) as failure:
        vmdeploy.deploy(vm, archive, NODE1, release_name=R1)
    assert f"unknown host key for 127.0.0.11 port {fake_vms[0].port}" in failure.value.result.summary()
    (ssh_dir / "known_hosts").write_text(fake_vms.known_hosts())
    assert vmdeploy.deploy(vm, archive, NODE1, release_name=R1).ok
    assert live(jumped) == R1 and live(fake_vms[0]) is None
