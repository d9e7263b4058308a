"""`skycap exec STAGE SERVICE [--all] [-it] -- CMD ...`: a command in a pod of the service, or in
current/ on its VM hosts.

Pods are reached with `kubectl exec`, through the stage's kubectl (its kubeconfig, context and
namespace): it gives -it a real interactive terminal (raw mode, window size) for free, and passes
the command's exit code through. The command's output is its own data: passed on as it comes,
never copied into the run log; only kubectl's known noise is kept off the screen (into the log).

The exit code is the command's; with --all, 0 only if every target gave 0, else the first non-zero
code in target order, after a summary that names each target that failed."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from skycap.commands.running.output import LinePrinter, Lines, sink
from skycap.commands.running.remote import UNREACHABLE
from skycap.commands.running.targets import (
    find_service,
    is_ready,
    is_running,
    list_pods,
    no_pods,
    of_current_release,
    short_name,
)
from skycap.errors import BadInput, SkycapError
from skycap.session import open_stage

POD_PARALLEL = 8  # pods at a time with --all


@dataclass
class ExecOptions:
    all_targets: bool = False
    stdin: bool = False
    tty: bool = False
    container: str | None = None


@dataclass
class Outcome:
    target: str
    code: int
    error: str = ""  # why the command could not run there, or not to its end
    started: bool = True  # False: the host could not be reached, the command never began


def exec_command(run, stage_name: str, service_name: str, command: list[str], options: ExecOptions) -> int:
    if not command:
        raise BadInput("no command given", f"put it after --: skycap exec {stage_name} {service_name} -- CMD ...")
    if options.all_targets and (options.tty or options.stdin):
        raise BadInput("-i and -t need one target; --all runs the command on every target without input")
    if options.tty and not sys.stdin.isatty():
        raise BadInput("-t needs a terminal, and stdin is not one", "drop -t (and keep -i to pass stdin on)")
    session = open_stage(run, stage_name)
    target = find_service(session.stage, service_name)
    if target.vm is not None:
        if options.stdin or options.tty or options.container:
            raise BadInput(f"-i, -t and -c are for pods; {service_name} runs on VM hosts",
                           f"for a shell there, ssh to one of: {', '.join(target.vm.hosts)}")
        return exec_on_hosts(session, target.vm, command, options.all_targets)
    return exec_in_pods(session, service_name, command, options)


def finish(screen, outcomes: list[Outcome], what: str) -> int:
    """The exit code of a run on several targets, after a summary naming those that failed."""
    failed = [o for o in outcomes if o.code != 0]
    if not failed:
        screen.ok(f"exec: exit 0 on all {len(outcomes)} {what}")
        return 0
    screen.fail(f"exec: {len(failed)} of {len(outcomes)} {what} failed: " + "; ".join(
        f"{o.target} ({o.error or f'exit {o.code}'})" for o in failed))
    return failed[0].code


# ----- pods -----

def exec_in_pods(session, service: str, command: list[str], options: ExecOptions) -> int:
    pods = list_pods(session, service)
    kubectl = copy.copy(session.kubectl)
    kubectl.request_timeout = "0"  # a session lasts as long as the command does
    flags = [*(["-i"] if options.stdin else []), *(["-t"] if options.tty else []),
             *(["-c", options.container] if options.container else [])]
    if not options.all_targets:
        ready = [pod for pod in of_current_release(session, service, pods) if is_ready(pod)]
        if not ready:
            raise no_pods(session, service, pods, "ready")
        argv = kubectl.argv(["exec", *flags, ready[0]["metadata"]["name"], "--", *command])
        if options.tty:
            return subprocess.call(argv)  # the terminal is kubectl's alone
        return run_kubectl(argv, None, LinePrinter("stdout"), LinePrinter("stderr"), session.run.log, options.stdin)
    running = [pod for pod in pods if is_running(pod)]
    if not running:
        raise no_pods(session, service, pods, "running")
    out, err = LinePrinter("stdout"), LinePrinter("stderr")

    def one(pod: dict) -> Outcome:
        name = short_name(pod, service)
        argv = kubectl.argv(["exec", *flags, pod["metadata"]["name"], "--", *command])
        return Outcome(name, run_kubectl(argv, name, out, err, session.run.log))

    with ThreadPoolExecutor(max_workers=min(POD_PARALLEL, len(running))) as pool:
        outcomes = list(pool.map(one, running))
    return finish(session.run.screen, outcomes, "pods")


def run_kubectl(argv: list[str], prefix: str | None, out: LinePrinter, err: LinePrinter, log,
                stdin: bool = False) -> int:
    """kubectl's stdout as it comes (in lines after the prefix, if any), its stderr but for known
    noise (kept in the run log); the exit code it gives, which is the command's."""
    process = subprocess.Popen(argv, stdin=None if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    errors = threading.Thread(target=_copy_stderr, args=(process.stderr, prefix, err, log), daemon=True)
    errors.start()
    try:
        output = sink(out, prefix)
        while chunk := process.stdout.read1(1 << 16):
            output.feed(chunk)
        output.close()
        errors.join()
        return process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _copy_stderr(stream, prefix: str | None, err: LinePrinter, log) -> None:
    from skycap.cluster.kubectl import is_noise

    def emit(line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if is_noise(text):
            log.write("kubectl:err", text)
        else:
            err.line(prefix, line)

    lines = Lines(emit)
    while chunk := stream.read1(1 << 16):
        lines.feed(chunk)
    lines.close()


# ----- VM hosts -----

def exec_on_hosts(session, vm, command: list[str], all_hosts: bool) -> int:
    from skycap.vm import deploy as vms

    options = vms.ssh_options(vm, project_root=session.stage.project.root)
    folder = f"{vm.deploy_to}/current"
    screen = session.run.screen
    if not all_hosts:
        return _on_first_reachable_host(screen, vm, options, folder, command)
    out, err, stop = LinePrinter("stdout"), LinePrinter("stderr"), threading.Event()

    def one(host: str) -> Outcome:
        return _run_on_host(host, options, folder, command, out, err, stop, prefix=host)

    with ThreadPoolExecutor(max_workers=min(vm.parallel, len(vm.hosts))) as pool:
        try:
            outcomes = list(pool.map(one, vm.hosts))
        except KeyboardInterrupt:
            stop.set()
            raise
    return finish(screen, outcomes, "hosts")


def _on_first_reachable_host(screen, vm, options, folder: str, command: list[str]) -> int:
    out, err, stop = LinePrinter("stdout"), LinePrinter("stderr"), threading.Event()
    skipped = []
    for host in vm.hosts:
        try:
            outcome = _run_on_host(host, options, folder, command, out, err, stop, prefix=None)
        except KeyboardInterrupt:
            stop.set()
            raise
        if outcome.started:  # ran, or began and lost its host: never run it a second time elsewhere
            if outcome.error:
                raise SkycapError(f"{host}: {outcome.error}", "the command may or may not have finished there")
            return outcome.code
        skipped.append(outcome)
        screen.warn(f"{host}: {outcome.error}" + ("; trying the next host" if host != vm.hosts[-1] else ""))
    raise SkycapError(f"vm {vm.name}: no host could run the command: "
                      + "; ".join(f"{o.target} ({o.error})" for o in skipped))


def _run_on_host(host: str, options, folder: str, command: list[str], out: LinePrinter, err: LinePrinter,
                 stop: threading.Event, prefix: str | None) -> Outcome:
    from skycap.commands.running.remote import run_attached
    from skycap.vm.hosts import HostConnection, VmHostError

    try:
        connection = HostConnection(host, options).open()
    except VmHostError as exc:
        return Outcome(host, UNREACHABLE, exc.reason, started=False)
    try:
        code = run_attached(connection, folder, command, sink(out, prefix), sink(err, prefix), stop)
    except VmHostError as exc:
        return Outcome(host, UNREACHABLE, exc.reason)
    finally:
        connection.close()
    return Outcome(host, UNREACHABLE if code is None else code)
