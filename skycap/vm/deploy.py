"""Legacy VM services over SSH: Capistrano's releases/current/shared layout on each host, done safely.

What the deploy pipeline calls:

    plan(vm, node, release_name=None)                       -> list[HostPlan]   (--dry-run; no network)
    preflight(vm, accept_new_host_keys=False, ...)          -> VmStatus   (raises if a host is unreachable)
    build_archive(hg_repo, node, dest)                      -> Path
    deploy(vm, archive, node, release_name=None, ...)       -> VmResult   (raises VmDeployFailed, VmInterrupted)
    rollback(vm, target=None, ...)                          -> VmResult   (same errors; BadInput for a bad target)
    status(vm, ...)                                         -> VmStatus   (never raises for a host's failure)

A deploy runs in two passes over the hosts, `vm.parallel` at a time. Pass one
connects, uploads and unpacks the release on every host: nothing is live yet,
so any failure there changes nothing. Pass two switches `current`, restarts and
checks, host by host. On the first failure (or a cancel) no new host starts,
and every host already switched is switched back to the release it had and
restarted, so that all hosts end on the same release. `on_event(host, message)`
is called from worker threads.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from skycap.errors import BadInput, DeployFailed, Interrupted, SkycapError
from skycap.project.config import VmService
from skycap.vm import remote
from skycap.vm.hosts import (
    HostConnection,
    HostKeyRefused,
    HostUnreachable,
    RemoteCommandFailed,
    SshOptions,
    VmHostError,
)

EventCallback = Callable[[str, str], None]

# What happened on a host, as the result reports it.
NOT_STARTED = "not started"
PREPARED = "unpacked, not switched"
DONE = "done"
UNCHANGED = "unchanged"
FAILED = "failed"
NOT_SWITCHED = "not switched"
SWITCHED_BACK = "switched back"
STUCK = "LEFT ON THE NEW RELEASE"


class VmDeployFailed(DeployFailed):
    """A VM deploy or rollback failed; `result` says what happened on each host."""

    def __init__(self, message: str, result: "VmResult"):
        super().__init__(message, result.summary())
        self.result = result


class VmInterrupted(Interrupted):
    """Cancelled (Ctrl-C); hosts were left consistent where they could be; `result` says how."""

    def __init__(self, message: str, result: "VmResult"):
        super().__init__(message, result.summary())
        self.result = result


@dataclass
class HostPlan:
    host: str
    steps: list[str]


@dataclass
class HostOutcome:
    host: str
    state: str = NOT_STARTED
    previous: str | None = None        # the release current pointed to before
    failed_step: str | None = None
    error: str | None = None
    switched: bool = False             # current may point at the new release: switch back on failure
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{self.host}: {self.state}"
        if self.error:
            text += f" (failed at {self.failed_step}: {self.error})"
        return "; ".join([text, *self.notes])


@dataclass
class VmResult:
    service: str
    action: str                        # "deploy" or "rollback"
    release: str | None
    node: str | None
    hosts: list[HostOutcome]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(h.state in (DONE, UNCHANGED) for h in self.hosts)

    def summary(self) -> str:
        return "\n  ".join(outcome.describe() for outcome in self.hosts)


@dataclass
class HostStatus:
    host: str
    reachable: bool
    release: str | None = None
    node: str | None = None
    error: str | None = None
    out_of_step: bool = False


@dataclass
class VmStatus:
    service: str
    hosts: list[HostStatus]

    @property
    def in_step(self) -> bool:
        return all(h.reachable and not h.out_of_step for h in self.hosts)

    def summary(self) -> str:
        lines = []
        for h in self.hosts:
            if not h.reachable:
                lines.append(f"{h.host}: UNREACHABLE: {h.error}")
            else:
                flag = "  <- OUT OF STEP with the other hosts" if h.out_of_step else ""
                lines.append(f"{h.host}: {h.release or 'nothing deployed'} {h.node or ''}{flag}".rstrip())
        return "\n".join(lines)


def new_release_name(node: str, now: datetime | None = None) -> str:
    """<UTC timestamp>-<first 12 hex of the node>: names sort in deploy order."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d%H%M%S}-{node[:12]}"


def plan(vm: VmService, node: str, *, release_name: str | None = None) -> list[HostPlan]:
    """What a deploy would do on each host, for --dry-run. Touches no host."""
    node = _checked_node(node)
    release = _checked_release_name(release_name or new_release_name(node))
    root = vm.deploy_to
    steps = [
        f"connect (timeout {vm.connect_timeout:g} s), host key checked against known_hosts",
        f"upload the archive, unpack it into {root}/releases/{release}, write REVISION {node}",
        *(f"link releases/{release}/{path} -> {root}/shared/{path}" for path in [*vm.linked_dirs, *vm.linked_files]),
        f"switch {root}/current -> releases/{release} (atomic rename)",
        f"restart: {vm.restart}" if vm.restart else "no restart command",
        f"check: {vm.check} (up to {vm.check_retries + 1} tries, {vm.check_delay:g} s apart)" if vm.check
        else "no check command",
        f"append to {root}/revisions.log; keep the newest {vm.keep_releases} releases (and current and previous)",
    ]
    return [HostPlan(host, list(steps)) for host in vm.hosts]


def describe_plan(vm: VmService, plans: list[HostPlan]) -> str:
    header = (f"vm {vm.name}: {len(plans)} host(s), {vm.parallel} at a time; all are unpacked before any "
              "is switched; on the first failure no new host starts and switched hosts go back")
    body = [f"  {p.host}:\n" + "\n".join(f"    {i}. {step}" for i, step in enumerate(p.steps, 1)) for p in plans]
    return "\n".join([header, *body])


def build_archive(hg_repo: str | Path, node: str, dest: Path) -> Path:
    """`hg archive` of one changeset as a tar.gz: built once, uploaded to every host (which needs no Mercurial)."""
    from skycap.proc import run

    node = _checked_node(node)
    hg = shutil.which("hg") or str(Path(sys.executable).with_name("hg"))
    run((hg, "--config", "ui.archivemeta=false", "archive", "-R", str(hg_repo), "-r", node, "-t", "tgz",
         "--prefix", ".", str(dest)), env={"HGPLAIN": "1"}, missing_hint="install Mercurial: pip install mercurial")
    return Path(dest)


def deploy(vm: VmService, archive: Path, node: str, *, release_name: str | None = None,
           accept_new_host_keys: bool = False, on_event: EventCallback | None = None,
           cancel: threading.Event | None = None, project_root: Path | None = None,
           who: str | None = None) -> VmResult:
    """Ship the archive to every host as release `release_name` and make it live everywhere, or nowhere."""
    deployment = Deployment(vm, archive, node, release_name=release_name, accept_new_host_keys=accept_new_host_keys,
                            on_event=on_event, cancel=cancel, project_root=project_root, who=who)
    deployment.unpack()
    return deployment.go_live()


class Deployment:
    """A deploy of one VM service in its two halves, which the flow runs in two steps: unpack() puts
    the release on every host and changes nothing live; go_live() switches every host, or none.
    Either raises VmDeployFailed (or VmInterrupted) with the hosts left as they were."""

    def __init__(self, vm: VmService, archive: Path, node: str, *, release_name: str | None = None,
                 accept_new_host_keys: bool = False, on_event: EventCallback | None = None,
                 cancel: threading.Event | None = None, project_root: Path | None = None, who: str | None = None):
        self.node = _checked_node(node)
        self.release = _checked_release_name(release_name or new_release_name(self.node))
        self.archive = Path(archive)
        if not self.archive.is_file():
            raise BadInput(f"the release archive {self.archive} does not exist")
        self.run = _Run(vm, _ssh_options(vm, accept_new_host_keys, project_root), on_event, cancel, who)
        self.result = VmResult(vm.name, "deploy", self.release, self.node, list(self.run.outcomes.values()))

    def unpack(self) -> None:
        run = self.run
        try:
            run.each_host(lambda host: run.prepare(host, self.archive, self.release, self.node))
        except BaseException:
            run.close()
            raise
        if run.stop.is_set():
            self.abandon()
            run.finish(self.result)

    def go_live(self) -> VmResult:
        run = self.run
        try:
            run.each_host(lambda host: run.go_live(host, self.release, self.node, "deployed"))
            if run.stop.is_set():
                run.undo(self.release, discard=True)
        finally:
            run.close()
        return run.finish(self.result)

    def abandon(self) -> None:
        """Drop the unpacked release on every host, never switched (the deploy stopped between the halves)."""
        try:
            self.run.undo(self.release, discard=True)
        finally:
            self.run.close()


def rollback(vm: VmService, target: str | None = None, *, accept_new_host_keys: bool = False,
             on_event: EventCallback | None = None, cancel: threading.Event | None = None,
             project_root: Path | None = None, who: str | None = None) -> VmResult:
    """Switch every host to `target` (a release name or node), or to the release before the current one."""
    run = _Run(vm, _ssh_options(vm, accept_new_host_keys, project_root), on_event, cancel, who)
    result = VmResult(vm.name, "rollback", None, None, list(run.outcomes.values()))
    try:
        states = run.inspect_all()
        if not run.stop.is_set():
            release = _rollback_target(vm, states, target)
            result.release, result.node = release, states[vm.hosts[0]].releases.get(release) or None
            for host in vm.hosts:
                run.outcomes[host].previous = states[host].current
            run.each_host(lambda host: run.go_live(host, release, result.node, "rolled back to"))
            if run.stop.is_set():
                run.undo(release, discard=False)
    finally:
        run.close()
    return run.finish(result)


def require_release(vm: VmService, target: str, *, accept_new_host_keys: bool = False,
                    project_root: Path | None = None) -> str:
    """Before a rollback changes anything: the release folder `target` names (a name or node) on every
    host; BadInput naming each host that lacks it or cannot be reached. Touches nothing."""
    run = _Run(vm, _ssh_options(vm, accept_new_host_keys, project_root), None, None, None)
    try:
        states = run.inspect_all(stop_on_failure=False)
    finally:
        run.close()
    down = [outcome for host, outcome in run.outcomes.items() if host not in states]
    if down:
        raise BadInput(f"vm {vm.name}: {', '.join(o.host for o in down)} cannot be reached to check that release "
                       f"{target} is there; nothing was changed", "\n  ".join(o.describe() for o in down))
    return _rollback_target(vm, states, target)


def status(vm: VmService, *, accept_new_host_keys: bool = False, project_root: Path | None = None) -> VmStatus:
    """Each host's live release and node; hosts on another release than most are flagged out of step."""
    run = _Run(vm, _ssh_options(vm, accept_new_host_keys, project_root), None, None, None)
    try:
        states = run.inspect_all(stop_on_failure=False)
    finally:
        run.close()
    hosts = []
    for host in vm.hosts:
        outcome, state = run.outcomes[host], states.get(host)
        if state is None:
            hosts.append(HostStatus(host, False, error=outcome.error))
        else:
            hosts.append(HostStatus(host, True, state.current or state.current_target,
                                    state.releases.get(state.current or "")))
    _flag_out_of_step(hosts)
    return VmStatus(vm.name, hosts)


def restart(vm: VmService, *, accept_new_host_keys: bool = False, on_event: EventCallback | None = None,
            cancel: threading.Event | None = None, project_root: Path | None = None) -> VmResult:
    """The service's restart command, then its check, in current/ of each host, vm.parallel at a time;
    no host starts once one has failed (its check included). Nothing is switched."""
    if not vm.restart:
        raise BadInput(f"vm {vm.name} has no restart command to run", "add restart: to its block in the stage file")
    run = _Run(vm, _ssh_options(vm, accept_new_host_keys, project_root), on_event, cancel, None)
    result = VmResult(vm.name, "restart", None, None, list(run.outcomes.values()))

    def restart_host(host: str) -> None:
        run.step(host, "restart", remote.command_in_current(vm.deploy_to, vm.restart))
        run.event(host, "restarted")
        if vm.check:
            run.check(host, stoppable=False)  # a host that has restarted is checked whatever the others do
        run.outcomes[host].state = DONE

    try:
        run.each_host(restart_host)
    finally:
        run.close()
    result.interrupted = run.interrupted
    if result.ok:
        return result
    waiting = [o.host for o in result.hosts if o.state == NOT_STARTED]
    left = f"; not restarted: {', '.join(waiting)}" if waiting else ""
    if run.interrupted:
        raise VmInterrupted(f"vm {vm.name}: restart interrupted{left}", result)
    failure = run.first_failure
    raise VmDeployFailed(f"vm {vm.name}: restart failed: {failure.host} failed at {failure.failed_step}{left}",
                         result)


def ssh_options(vm: VmService, accept_new_host_keys: bool = False, project_root: Path | None = None) -> SshOptions:
    """How to reach a VM service's hosts, for the commands besides deploys that run there (logs, exec)."""
    return _ssh_options(vm, accept_new_host_keys, project_root)


def preflight(vm: VmService, *, accept_new_host_keys: bool = False, project_root: Path | None = None) -> VmStatus:
    """Reach every host before anything changes anywhere; raise naming each host that cannot be reached."""
    found = status(vm, accept_new_host_keys=accept_new_host_keys, project_root=project_root)
    down = [h for h in found.hosts if not h.reachable]
    if down:
        raise DeployFailed(f"vm {vm.name}: {len(down)} of {len(found.hosts)} host(s) cannot be reached; "
                           "nothing was changed", "\n  ".join(f"{h.host}: {h.error}" for h in down))
    return found


def _flag_out_of_step(hosts: list[HostStatus]) -> None:
    releases = Counter(h.release for h in hosts if h.reachable)
    if len(releases) > 1:
        # The release most hosts run is the reference; on a tie, the newest.
        reference = max(releases, key=lambda name: (releases[name], name or ""))
        for h in hosts:
            h.out_of_step = h.reachable and h.release != reference


def _rollback_target(vm: VmService, states: dict[str, remote.HostState], target: str | None) -> str:
    if target is None:
        return _previous_release(vm, states)
    found = {host: _find_release(state, target) for host, state in states.items()}
    missing = [host for host, name in found.items() if name is None]
    if missing:
        raise BadInput(f"vm {vm.name}: no release {target!r} on {', '.join(missing)}; nothing was changed",
                       "`skycap status STAGE` shows what each host has")
    names = set(found.values())
    if len(names) > 1:
        raise BadInput(f"vm {vm.name}: {target!r} names different releases on different hosts "
                       f"({', '.join(sorted(names))}); nothing was changed", "name the release folder itself")
    return names.pop()


def _previous_release(vm: VmService, states: dict[str, remote.HostState]) -> str:
    currents = {host: state.current for host, state in states.items()}
    if len(set(currents.values())) > 1:
        where = ", ".join(f"{host} on {name or 'nothing'}" for host, name in currents.items())
        raise BadInput(f"vm {vm.name}: the hosts are out of step ({where}); nothing was changed",
                       "say which release to roll back to (a release folder name or a node)")
    current = next(iter(currents.values()))
    if current is None:
        raise BadInput(f"vm {vm.name}: nothing is deployed on the hosts, so there is nothing to roll back to")
    older = {host: [n for n in sorted(s.releases) if remote.RELEASE_NAME_RE.match(n) and n < current]
             for host, s in states.items()}
    previous = {names[-1] if names else None for names in older.values()}
    if None in previous or len(previous) > 1:
        raise BadInput(f"vm {vm.name}: no single release before {current} on every host; nothing was changed",
                       "say which release to roll back to (a release folder name or a node)")
    return previous.pop()


def _find_release(state: remote.HostState, target: str) -> str | None:
    """A release folder name, or the newest release whose REVISION starts with the given node."""
    if target in state.releases:
        return target
    if len(target) >= 6 and all(c in "0123456789abcdef" for c in target):
        matches = sorted(name for name, node in state.releases.items() if node.startswith(target))
        if matches:
            return matches[-1]
    return None


def _checked_node(node: str) -> str:
    if not isinstance(node, str) or not remote.NODE_RE.match(node):
        raise BadInput(f"{node!r} is not a full Mercurial node (40 hex digits)")
    return node


def _checked_release_name(name: str) -> str:
    if not remote.RELEASE_NAME_RE.match(name):
        raise BadInput(f"release name {name!r} must be a UTC timestamp YYYYmmddHHMMSS, a dash, then letters, "
                       "digits, . _ - (names sort in deploy order)")
    return name


def _ssh_options(vm: VmService, accept_new_host_keys: bool, project_root: Path | None) -> SshOptions:
    try:
        remote.check_layout_values(vm.deploy_to, vm.linked_dirs, vm.linked_files)
    except ValueError as exc:
        raise BadInput(f"vm {vm.name}: {exc}") from None
    known_hosts = None
    if vm.known_hosts:
        known_hosts = Path(os.path.expanduser(vm.known_hosts))
        if not known_hosts.is_absolute():
            known_hosts = (project_root or Path.cwd()) / known_hosts
        if not known_hosts.is_file():
            raise BadInput(f"vm {vm.name}: known_hosts file {known_hosts} does not exist")
    return SshOptions(connect_timeout=vm.connect_timeout, command_timeout=vm.command_timeout,
                      project_known_hosts=known_hosts, accept_new_host_keys=accept_new_host_keys)


def _default_who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _Run:
    """One deploy, rollback or status over a service's hosts: connections, the pool, per-host outcomes."""

    def __init__(self, vm: VmService, options: SshOptions, on_event: EventCallback | None,
                 cancel: threading.Event | None, who: str | None):
        self.vm = vm
        self.options = options
        self.on_event = on_event
        self.cancel = cancel
        self.who = "".join(c if c.isprintable() else "?" for c in (who or _default_who()))
        self.stop = threading.Event()  # the first failure or a cancel: no host starts a new step
        self.interrupted = False
        self.outcomes = {host: HostOutcome(host) for host in vm.hosts}
        self.connections: dict[str, HostConnection] = {}
        self.current_step: dict[str, str] = {}  # what each host is doing, to name the step that failed
        self.states: dict[str, remote.HostState] = {}
        self.first_failure: HostOutcome | None = None
        self.lock = threading.Lock()

    # --- the pool ---

    def each_host(self, work: Callable[[str], None], stop_on_failure: bool = True) -> None:
        """Run work(host) for each host, vm.parallel at a time; once stopping, hosts not yet begun are skipped."""
        hosts = self.vm.hosts

        def guarded(host: str) -> None:
            if stop_on_failure and self.stopping():
                return
            try:
                work(host)
            except Exception as exc:  # noqa: BLE001 - any failure on one host must stop the others
                self._failed(host, exc, stop_on_failure)

        with ThreadPoolExecutor(max_workers=max(1, min(self.vm.parallel, len(hosts))), thread_name_prefix="vm") as pool:
            self._wait([pool.submit(guarded, host) for host in hosts], stoppable=stop_on_failure)

    def _wait(self, futures, stoppable: bool) -> None:
        pending = set(futures)
        while pending:
            try:
                _, pending = wait(pending, timeout=0.1)
            except KeyboardInterrupt:
                self._interrupt()
            if stoppable:
                self.stopping()  # notices a cancel even while every worker is busy in a long step

    def stopping(self) -> bool:
        """Whether to give way: a host failed, or the caller cancelled (which is recorded as an interrupt)."""
        if self.cancel is not None and self.cancel.is_set() and not self.stop.is_set():
            self._interrupt()
        return self.stop.is_set()

    def _interrupt(self) -> None:
        self.interrupted = True
        self.stop.set()

    def _failed(self, host: str, exc: Exception, stop_others: bool) -> None:
        outcome = self.outcomes[host]
        outcome.error = _reason(exc)
        outcome.failed_step = self.current_step.get(host, "connect")
        outcome.state = FAILED
        self.event(host, f"FAILED at {outcome.failed_step}: {outcome.error}")
        with self.lock:
            if stop_others and self.first_failure is None:
                self.first_failure = outcome
        if stop_others:
            self.stop.set()

    def event(self, host: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(host, message)

    # --- connections and steps ---

    def connection(self, host: str) -> HostConnection:
        existing = self.connections.get(host)
        if existing is not None and existing.connection.is_connected:
            return existing
        self.current_step[host] = "connect"
        opened = HostConnection(host, self.options).open()
        self.connections[host] = opened
        if opened.recorded_key:
            self.outcomes[host].notes.append(f"new host key recorded: {opened.recorded_key}")
            self.event(host, f"new host key recorded: {opened.recorded_key}")
        return opened

    def step(self, host: str, name: str, script: str, **kwargs):
        """Run one named step's script; a non-zero exit becomes a RemoteCommandFailed naming the step."""
        self.current_step[host] = name
        output = self.connection(host).run(script, **kwargs)
        if output.exit_code != 0:
            raise RemoteCommandFailed(host, f"{name} exited with {output.exit_code}: {output.tail()}",
                                      _STEP_HINTS.get(name))
        return output

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()

    # --- pass one: nothing is live yet ---

    def inspect_all(self, stop_on_failure: bool = True) -> dict[str, remote.HostState]:
        def inspect(host: str) -> None:
            output = self.step(host, "inspect", remote.inspect_script(self.vm.deploy_to))
            self.states[host] = remote.parse_state(self.vm.deploy_to, output.stdout)

        self.each_host(inspect, stop_on_failure=stop_on_failure)
        return self.states

    def prepare(self, host: str, archive: Path, release: str, node: str) -> None:
        vm, outcome = self.vm, self.outcomes[host]
        self.connection(host)
        self.event(host, "connected")
        self.current_step[host] = "upload and unpack"
        script = remote.prepare_script(vm.deploy_to, release, node, vm.linked_dirs, vm.linked_files)
        output = self.connection(host).run(script, stdin=archive)
        if output.exit_code != 0:
            raise self._prepare_error(host, release, output)
        state = self.states[host] = remote.parse_state(vm.deploy_to, output.stdout)
        outcome.previous, outcome.state = state.current, PREPARED
        outcome.notes += state.notes
        self.event(host, f"unpacked releases/{release} (live now: {state.current or 'nothing'})")

    def _prepare_error(self, host: str, release: str, output) -> RemoteCommandFailed:
        root = self.vm.deploy_to
        if output.exit_code == remote.RELEASE_EXISTS:
            return RemoteCommandFailed(
                host, f"release folder {root}/releases/{release} already exists; skycap never overwrites a release",
                "a deploy of the same revision ran within the same second, or this machine's clock is behind "
                "the last deploy's: deploy again in a moment; if the folder is a leftover, remove it by hand")
        if output.exit_code == remote.CURRENT_NOT_A_SYMLINK:
            return RemoteCommandFailed(
                host, f"{root}/current exists but is not a symlink, so skycap cannot switch it safely",
                f"move it out of the way (for example into {root}/releases/) and deploy again")
        return RemoteCommandFailed(host, f"upload and unpack into {root} failed (exit {output.exit_code}): "
                                         f"{output.tail()}",
                                   f"can {host}'s SSH user write to {root}? Is the disk full?")

    # --- pass two: going live, host by host ---

    def go_live(self, host: str, release: str, node: str | None, action: str) -> None:
        vm, outcome = self.vm, self.outcomes[host]
        if outcome.previous == release:
            outcome.state = UNCHANGED
            self.event(host, f"already on {release}")
            return
        outcome.switched = True  # from here a failure, even a lost connection, means: switch back
        self.step(host, "switch", remote.switch_script(vm.deploy_to, release))
        self.event(host, f"current -> {release}")
        # Between steps, give way to a failure elsewhere: this host will be switched back anyway.
        if vm.restart and not self.stopping():
            self.step(host, "restart", remote.command_in_current(vm.deploy_to, vm.restart))
            self.event(host, "restarted")
        if vm.check and not self.stopping():
            self.check(host, stoppable=True)
        if self.stopping():
            return
        remove = []
        if action == "deployed":
            state = self.states[host]
            remove = remote.releases_to_remove({*state.releases, release}, vm.keep_releases, release,
                                               outcome.previous)
        self.step(host, "record", remote.record_script(vm.deploy_to, self._log_line(action, release, node), remove))
        outcome.state = DONE
        outcome.notes.append(f"was on {outcome.previous or 'nothing'}")
        if remove:
            self.event(host, f"removed {len(remove)} old release(s)")

    def check(self, host: str, stoppable: bool) -> None:
        script = remote.command_in_current(self.vm.deploy_to, self.vm.check)
        self.current_step[host] = "check"
        tries = self.vm.check_retries + 1
        for attempt in range(1, tries + 1):
            output = self.connection(host).run(script)
            if output.exit_code == 0:
                self.event(host, f"check passed (try {attempt})")
                return
            if attempt == tries:
                break
            if stoppable and self.stop.wait(self.vm.check_delay):
                return  # another host failed: this one is switched back anyway
            if not stoppable:
                time.sleep(self.vm.check_delay)
        raise RemoteCommandFailed(host, f"check failed {tries} times, {self.vm.check_delay:g} s apart; last: "
                                        f"exit {output.exit_code}: {output.tail()}", _STEP_HINTS["check"])

    def _log_line(self, action: str, release: str, node: str | None) -> str:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{now} {action} {release} ({node or 'unknown node'}) by {self.who}"

    # --- after a failure or a cancel ---

    def undo(self, release: str, discard: bool) -> None:
        """Switch back every switched host; drop the unswitched copies of the new release."""
        def restore(host: str) -> None:
            outcome = self.outcomes[host]
            try:
                if outcome.switched:
                    self._switch_back(host, release)
                    outcome.state = SWITCHED_BACK
                elif outcome.state == PREPARED:
                    outcome.state = NOT_SWITCHED
                if discard and outcome.state in (SWITCHED_BACK, NOT_SWITCHED):
                    self.connection(host).run(remote.discard_script(self.vm.deploy_to, release))
            except Exception as exc:  # noqa: BLE001 - report it, and go on with the other hosts
                if outcome.switched:
                    outcome.state = STUCK
                outcome.notes.append(f"could not be switched back ({self.current_step.get(host)} failed): "
                                     f"{_reason(exc)}")
                self.event(host, f"could NOT be switched back: {_reason(exc)}")

        self.each_host(restore, stop_on_failure=False)

    def _switch_back(self, host: str, release: str) -> None:
        vm, previous = self.vm, self.outcomes[host].previous
        self.event(host, f"switching back to {previous or 'nothing'}")
        if previous is None:
            self.connection(host).run(remote.remove_current_script(vm.deploy_to))
            self.outcomes[host].notes.append("it had no release before: current removed, no restart")
            return
        self.step(host, "switch back", remote.switch_script(vm.deploy_to, previous))
        if vm.restart:
            self.step(host, "restart", remote.command_in_current(vm.deploy_to, vm.restart))
        if vm.check:
            self.check(host, stoppable=False)
        node = self.states[host].releases.get(previous) if host in self.states else None
        self.step(host, "record", remote.record_script(
            vm.deploy_to, self._log_line(f"switched back (from {release}) to", previous, node)))
        self.outcomes[host].notes.append(f"back on {previous}")

    def finish(self, result: VmResult) -> VmResult:
        result.interrupted = self.interrupted
        if result.ok:
            return result
        stuck = [o.host for o in result.hosts if o.state == STUCK]
        what = f"vm {self.vm.name}: {result.action}" + (f" of {result.release}" if result.release else "")
        if stuck:
            consistency = (f"DANGER: {', '.join(stuck)} could not be switched back and run(s) a different release "
                           "than the other hosts; fix them by hand or run `skycap rollback STAGE`")
        elif any(o.state == SWITCHED_BACK for o in result.hosts):
            consistency = "every host that had switched was switched back"
        else:
            consistency = "nothing was switched on any host"
        if self.interrupted:
            raise VmInterrupted(f"{what} was interrupted; {consistency}", result)
        failure = self.first_failure
        first = f"{failure.host} failed at {failure.failed_step}" if failure else "a host failed"
        raise VmDeployFailed(f"{what} failed: {first}; {consistency}", result)


_STEP_HINTS = {
    "restart": "the restart command (the stage file's vm block) failed here; its last output lines are shown",
    "check": "the service did not pass its check after the restart; look at its logs on the host",
    "switch": "could the SSH user replace the current symlink under deploy_to?",
    "record": "could the SSH user write revisions.log and remove old releases under deploy_to?",
    "inspect": "could the SSH user read deploy_to?",
}


def _reason(exc: Exception) -> str:
    if isinstance(exc, VmHostError):
        return exc.reason + (f" ({exc.hint})" if exc.hint else "")
    if isinstance(exc, SkycapError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["plan", "describe_plan", "build_archive", "deploy", "Deployment", "rollback", "restart", "status",
           "preflight", "require_release", "ssh_options", "new_release_name",
           "VmResult", "HostOutcome", "VmStatus", "HostStatus", "HostPlan", "VmDeployFailed", "VmInterrupted",
           "HostKeyRefused", "HostUnreachable", "RemoteCommandFailed"]
