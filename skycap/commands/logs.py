"""`skycap logs STAGE SERVICE`: the lines of every pod (or VM host) of a service, each after a short
prefix saying where it came from.

The lines are the service's own data: written to stdout byte for byte as they came, never
filtered, and never copied into Skycap's run log."""

from __future__ import annotations

import re
import threading

from skycap.cluster.errors import api_message
from skycap.commands.running.output import LinePrinter, sink
from skycap.commands.running.targets import find_service, list_pods, no_pods, source_name
from skycap.errors import BadInput, SkycapError
from skycap.record import Record
from skycap.session import open_stage

DEFAULT_VM_TAIL = 100  # log files on hosts are never rotated by Skycap: all of one can be huge
READERS = 8  # pod logs read at once without -f
DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class LogOptions(Record):
    tail: int | None = None
    since: float | None = None  # seconds
    follow: bool = False
    previous: bool = False


def parse_duration(text: str) -> float:
    """10m, 1h30m, 45s, 2d -> seconds."""
    match = DURATION_RE.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise BadInput(f"--since {text!r} is not a duration", "write it like 30s, 10m, 2h or 1h30m")
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def log_options(tail: int | None, since: str | None, follow: bool, previous: bool) -> LogOptions:
    """The options as the command line gives them (--since as text)."""
    return LogOptions(tail=tail, since=parse_duration(since) if since is not None else None, follow=follow,
                      previous=previous)


def logs(run, stage_name: str, service_name: str, options: LogOptions) -> int:
    if options.tail is not None and options.tail < 0:
        raise BadInput("--tail must be 0 or more")
    if options.previous and options.follow:
        raise BadInput("--previous shows instances that have ended, so it cannot be followed", "drop -f")
    session = open_stage(run, stage_name)
    target = find_service(session.stage, service_name)
    printer = LinePrinter()
    try:
        if target.vm is not None:
            return vm_logs(session, target.vm, options, printer)
        if options.follow:
            return PodFollower(session, service_name, options, printer).run()
        return read_pod_logs(session, service_name, options, printer)
    except KeyboardInterrupt:
        if options.follow:
            return 0  # -f runs until Ctrl-C: that is how it ends
        raise
    except BrokenPipeError:
        return 0  # | head has read what it wanted


def containers_with_logs(pod: dict, previous: bool) -> list[str]:
    """The containers of a pod that have a log to read: started at least once (ended once, for --previous)."""
    names = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        ended_before = bool((cs.get("lastState") or {}).get("terminated")) or cs.get("restartCount", 0) > 0
        if ended_before if previous else ("running" in state or "terminated" in state or ended_before):
            names.append(cs["name"])
    return names


def read_pod_logs(session, service: str, options: LogOptions, printer: LinePrinter) -> int:
    """Every container's log at once, merged in time order (the kubelet's timestamps, which are not shown)."""
    pods = list_pods(session, service)
    sources = [(pod, name) for pod in pods for name in containers_with_logs(pod, options.previous)]
    if not sources:
        if options.previous and any(containers_with_logs(pod, False) for pod in pods):
            raise BadInput(f"no container of service {service} has ended before, so there is no previous "
                           "instance to show", "drop --previous for the running ones")
        raise no_pods(session, service, pods, "running")
    from skycap.commands.running.rest import api_get

    def read(source):
        pod, container = source
        query = {"container": container, "tailLines": options.tail, "sinceSeconds": _seconds(options.since),
                 "previous": "true" if options.previous else None, "timestamps": "true"}
        return api_get(session, f"/api/v1/namespaces/{session.stage.namespace}/pods/{pod['metadata']['name']}/log",
                       query, timeout=60)

    stamped, failed = [], []
    for order, (source, body) in enumerate(zip(sources, read_each(read, sources))):
        prefix = source_name(source[0], service, source[1])
        if isinstance(body, Exception):  # one pod's log missing must not hide the others
            failed.append(f"{prefix}: {_reason(body)}")
            continue
        stamped += [(_time_key(line), order, prefix, line.partition(b" ")[2]) for line in body.split(b"\n") if line]
    for _, _, prefix, line in sorted(stamped, key=lambda item: item[:2]):
        printer.line(prefix, line)
    return _report_failures(session, failed, len(sources))


def read_each(read, sources: list) -> list:
    """read(source) for every source, READERS at a time (this thread is one of them): what it returned,
    or the exception it raised. Plain threads: importing concurrent.futures is 10 ms of a 0.1 s command."""
    results: list = [None] * len(sources)
    indexes = iter(range(len(sources)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(indexes, None)
            if index is None:
                return
            try:
                results[index] = read(sources[index])
            except Exception as exc:  # noqa: BLE001 - the caller reports each one
                results[index] = exc

    helpers = [threading.Thread(target=work, daemon=True) for _ in range(min(READERS, len(sources)) - 1)]
    for helper in helpers:
        helper.start()
    work()
    for helper in helpers:
        helper.join()
    return results


def _seconds(since: float | None) -> int | None:
    return max(1, int(since)) if since is not None else None


def _time_key(line: bytes) -> tuple[bytes, bytes]:
    """RFC 3339 with nanoseconds, trailing zeros dropped by the kubelet: pad the fraction to compare."""
    stamp = line.partition(b" ")[0].rstrip(b"Z")
    whole, _, fraction = stamp.partition(b".")
    return whole, fraction.ljust(9, b"0")


def _reason(exc: BaseException) -> str:
    if getattr(exc, "status", None) and hasattr(exc, "body"):  # the API server's refusal (ApiRefused, ApiException)
        return api_message(exc)
    from skycap.cluster.errors import short_reason

    return short_reason(exc)


def _report_failures(session, failed: list[str], total: int) -> int:
    for line in failed:
        session.run.screen.warn(f"cannot read the log of {line}")
    if failed and len(failed) == total:
        raise SkycapError("no log could be read", "the API server reads logs from each node's kubelet: is the "
                          "node up, and may your account get pods/log?")
    return 1 if failed else 0


class PodFollower:
    """-f: every container instance of the service's pods streamed once, from the moment it is seen.

    A pod watch keeps the set current: a container of a pod that appears, or that starts again, is
    streamed from its first line (so nothing is missed and nothing repeats); a pod that goes away
    takes its streams with it. Containers running when we start honour --tail and --since."""

    def __init__(self, session, service: str, options: LogOptions, printer: LinePrinter):
        from kubernetes import client

        self.session, self.service, self.options, self.printer = session, service, options, printer
        self.core = client.CoreV1Api(session.api)
        self.seen: set[tuple[str, str, str]] = set()  # (pod uid, container, container id)
        self.streams: dict[str, list] = {}  # pod uid -> its open responses
        self.joined: dict[str, str] = {}  # pod uid -> its prefix, for the pods streamed so far
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> int:
        from skycap.cluster.watch import Feed

        pods = list_pods(self.session, self.service)
        if not any(containers_with_logs(pod, False) for pod in pods):
            raise no_pods(self.session, self.service, pods, "running")
        for pod in pods:
            self.join(pod, first=True)
        feed = Feed(self.session.api, self.session.stage.namespace, ["Pod"])
        feed.start()
        try:
            while True:
                feed.wait(0.25)
                if feed.ready:
                    self.follow_changes(feed.view.all("Pod"))
        finally:
            feed.stop()
            self.stop()

    def follow_changes(self, pods: list[dict]) -> None:
        stage = self.session.stage
        from skycap.cluster.labels import SERVICE_LABEL, STAGE_LABEL

        mine = [pod for pod in pods if (pod["metadata"].get("labels") or {}).get(STAGE_LABEL) == stage.name
                and pod["metadata"]["labels"].get(SERVICE_LABEL) == self.service]
        for pod in mine:
            self.join(pod, first=False)
        present = {pod["metadata"]["uid"] for pod in mine}
        for uid in [uid for uid in self.joined if uid not in present]:
            self.session.run.screen.line(f"- {self.joined.pop(uid)} left")
            with self.lock:
                for response in self.streams.pop(uid, []):
                    _shut(response)

    def join(self, pod: dict, first: bool) -> None:
        uid = pod["metadata"]["uid"]
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "running" not in state and not (first and "terminated" in state):
                continue
            key = (uid, cs["name"], cs.get("containerID") or "")
            if key in self.seen:
                continue
            self.seen.add(key)
            prefix = source_name(pod, self.service, cs["name"])
            self.joined[uid] = prefix.partition("/")[0]
            if not first:
                self.session.run.screen.line(f"+ {prefix} joined")
            threading.Thread(target=self.stream, args=(uid, pod["metadata"]["name"], cs["name"], prefix, first),
                             name=f"logs-{prefix}", daemon=True).start()

    def stream(self, uid: str, pod: str, container: str, prefix: str, first: bool) -> None:
        options = self.options
        try:
            response = self.core.read_namespaced_pod_log(
                pod, self.session.stage.namespace, container=container, follow=True,
                tail_lines=options.tail if first else None, since_seconds=_seconds(options.since) if first else None,
                _preload_content=False, _request_timeout=(10, None))
        except Exception as exc:  # noqa: BLE001 - say which pod, keep following the others
            if not self.stopped.is_set():
                self.session.run.screen.warn(f"cannot follow the log of {prefix}: {_reason(exc)}")
            return
        with self.lock:
            if self.stopped.is_set():
                _shut(response)
                return
            self.streams.setdefault(uid, []).append(response)
        lines = sink(self.printer, prefix)
        try:
            for chunk in response.stream(amt=None, decode_content=False):
                lines.feed(chunk)
            lines.close()
        except Exception:  # noqa: BLE001 - a stream shut because its pod went away or we stop
            pass
        finally:
            with self.lock:
                if response in self.streams.get(uid, []):
                    self.streams[uid].remove(response)
            _shut(response)

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            for responses in self.streams.values():
                for response in responses:
                    _shut(response)
            self.streams.clear()


def _shut(response) -> None:
    """End a streaming response now, from any thread (its reader's blocked read returns)."""
    try:
        response.shutdown()
    except (RuntimeError, ValueError, AttributeError, OSError):
        pass
    try:
        response.release_conn()
    except Exception:  # noqa: BLE001 - already released
        pass


# ----- VM services: the log_files of every host at once -----

def vm_logs(session, vm, options: LogOptions, printer: LinePrinter) -> int:
    """`tail` of each of the service's log_files on every host at once, each line after its host's name
    (and the file's, when there are several)."""
    if options.since is not None or options.previous:
        raise BadInput(f"--since and --previous are for pods; {vm.name} runs on VM hosts, whose log files "
                       "skycap reads with tail", "use --tail N")
    if not vm.log_files:
        raise BadInput(f"vm {vm.name} lists no log_files", "add them to its block in the stage file, like "
                       "log_files: [shared/log/app.log] (paths under current/ or shared/)")
    tail = str(options.tail if options.tail is not None else DEFAULT_VM_TAIL)
    stop, failed = threading.Event(), []
    errors = LinePrinter("stderr")
    jobs = [(host, path) for host in vm.hosts for path in vm.log_files]

    def tail_file(host: str, connection, path: str) -> None:
        from skycap.commands.running.remote import run_attached

        prefix = host if len(vm.log_files) == 1 else f"{host} {path}"
        argv = ["tail", "-n", tail, *(["-F"] if options.follow else []), "--", path]
        code = run_attached(connection, vm.deploy_to, argv, sink(printer, prefix), sink(errors, prefix), stop)
        if code:
            failed.append(f"{prefix}: tail exited with {code}")

    threads = [threading.Thread(target=_on_host, args=(session, vm, host, [path for h, path in jobs if h == host],
                                                        tail_file, failed), daemon=True) for host in vm.hosts]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    for line in failed:
        session.run.screen.warn(f"could not read {line}")
    return 1 if failed else 0


def _on_host(session, vm, host: str, paths: list[str], work, failed: list[str]) -> None:
    """One connection to the host; work(host, connection, path) for each path on threads of their own."""
    from skycap.vm import deploy as vms
    from skycap.vm.hosts import HostConnection, VmHostError

    try:
        connection = HostConnection(host, vms.ssh_options(vm, project_root=session.stage.project.root)).open()
    except VmHostError as exc:
        failed.append(f"{host}: {exc.reason}" + (f" ({exc.hint})" if exc.hint else ""))
        return
    except SkycapError as exc:
        failed.append(f"{host}: {exc.message}")
        return

    def guarded(path: str) -> None:
        try:
            work(host, connection, path)
        except VmHostError as exc:
            failed.append(f"{host}: {exc.reason}")

    threads = [threading.Thread(target=guarded, args=(path,), daemon=True) for path in paths]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        connection.close()
