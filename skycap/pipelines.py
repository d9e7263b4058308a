"""The pipelines behind the commands. Each reads as a list of named phases; every check that
can fail runs before the first change to the cluster, and cleanup lives in try/finally."""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

from skycap.errors import BadInput, DeployFailed, Interrupted, RolloutTimeout, SkycapError

EARLY_KINDS = ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
               "ClusterRoleBinding", "ResourceQuota", "LimitRange", "PersistentVolumeClaim")


# ---------- the pieces every pipeline uses -----------------------------------------------------------

@dataclass
class StageSession:
    """One stage's loaded config and its connections, made once per run."""

    run: object
    stage: object
    _api = None
    _kubectl = None

    @property
    def api(self):
        if self._api is None:
            from skycap.kube import api_client

            self._api = api_client(self.stage)
        return self._api

    @property
    def kubectl(self):
        if self._kubectl is None:
            from skycap.kube import kubeconfig_path
            from skycap.kubectl import Kubectl

            self._kubectl = Kubectl(namespace=self.stage.namespace, log=self.run.log_for(self.stage.name),
                                    screen=self.run.screen, kubeconfig=kubeconfig_path(self.stage),
                                    context=self.stage.context, verbose=self.run.verbose)
        return self._kubectl

    _ledger = None

    @property
    def ledger(self):
        if self._ledger is None:
            from skycap.ledger import Ledger

            self._ledger = Ledger(self.api, self.stage.namespace, self.stage.name)
        return self._ledger


def open_stage(run, name: str) -> StageSession:
    stage = run.project.load_stage(name)
    run.log_for(name)
    return StageSession(run, stage)


def call_api(session: StageSession, what: str, func, *args, **kwargs):
    """A Kubernetes API call whose connection failure becomes a clear, typed error."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return func(*args, **kwargs)
    except HTTPError as exc:
        from skycap.kube import unreachable

        raise unreachable(session.stage, exc) from None
    except ApiException as exc:
        hint = ("the kubeconfig's user may lack RBAC rights in namespace " + session.stage.namespace
                if exc.status in (401, 403) else None)
        raise SkycapError(f"the Kubernetes API refused ({what}): {exc.status} {exc.reason}", hint) from None


class Phases:
    """Prints each phase as it starts and keeps its timing for the summary and the log."""

    def __init__(self, run, stage_name: str):
        self.run = run
        self.log = run.log_for(stage_name)
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def phase(self, name: str):
        self.run.screen.phase(name)
        self.log.write("skycap", f"phase: {name}")
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings.append((name, round(time.monotonic() - started, 3)))


@contextmanager
def interruptible():
    """SIGTERM behaves as Ctrl-C, so CI cancelling a job releases the lock too."""
    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def lock_ttl() -> float:
    """How long a dead deploy's lock outlives it (SKYCAP_LOCK_TTL seconds, default 30)."""
    import os

    try:
        return max(2.0, float(os.environ.get("SKYCAP_LOCK_TTL", "30")))
    except ValueError:
        raise BadInput("SKYCAP_LOCK_TTL must be a number of seconds") from None


def emit_json(document: dict) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


# ---------- deploy -----------------------------------------------------------------------------------

@dataclass
class DeployState:
    """What a deploy knows as it goes; read by the summary, the failure path and --output json."""

    stage: str
    rev: str
    revision: object = None
    release: object = None
    rendered: object = None
    applied: list[str] = field(default_factory=list)
    result: object = None
    status: str = "pending"
    rolled_back_to: int | None = None
    vm_results: dict = field(default_factory=dict)
    error: str = ""


def deploy(run, stage_name: str, rev: str, *, dry_run=False, timeout=None, rollback=True, image_check=True,
           accept_new_host_keys=False) -> int:
    session = open_stage(run, stage_name)
    stage = session.stage
    phases = Phases(run, stage_name)
    state = DeployState(stage=stage_name, rev=rev)
    timeout = timeout or stage.rollout_timeout
    from skycap.hooks import Hooks

    hooks = Hooks(stage.project.tasks_file, run.log, run.screen)
    try:
        with interruptible():
            # The cluster client is slow to import: read the ledger while hg resolves the revision.
            release_number = prefetch(next_release_number, session)
            with phases.phase(f"resolve rev={rev} in {stage.hg}"):
                state.revision = resolve_revision(stage, rev)
                run.screen.line(f"    {state.revision.node[:12]} ({state.revision.branch}) "
                                f"{state.revision.summary[:70]} -> tag {state.revision.tag}")
            if not image_check and stage.services:
                run.screen.warn("image check skipped (--skip-image-check)")
            with phases.phase("render templates"):
                state.rendered = render(stage, state.revision, release_number.result())
            if dry_run:
                if image_check and stage.services:
                    check_images(stage, state.revision.tag)
                return deploy_plan(session, state, phases)
            ensure_namespace(session)
            with phases.phase("check images, validate with a server-side dry run, reach VM hosts"):
                run_checks(session, state, image_check, accept_new_host_keys)
            from skycap.lock import StageLock

            lock = StageLock(session.api, stage.namespace, stage.name, purpose=f"deploy rev={rev}", ttl=lock_ttl())
            with phases.phase("take the stage lock"):
                call_api(session, "lock", lock.acquire)
            try:
                return locked_deploy(session, state, phases, hooks, lock, timeout=timeout, rollback=rollback,
                                     accept_new_host_keys=accept_new_host_keys)
            finally:
                lock.release()
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(state)) from None
    except Interrupted as exc:
        raise Interrupted(interrupted_message(state), exc.hint) from None
    finally:
        summarise(run, session, state, phases)


def run_checks(session, state, image_check: bool, accept_new_host_keys: bool) -> None:
    """The read-only checks side by side; the first failure in this order is the one reported."""
    from concurrent.futures import ThreadPoolExecutor

    stage = session.stage
    checks = []
    if image_check and stage.services:
        checks.append((check_images, stage, state.revision.tag))
    if stage.services:
        checks.append((server_dry_run, session, state.rendered))
    if stage.vm:
        checks.append((preflight_vms, stage, accept_new_host_keys))
    with ThreadPoolExecutor(max_workers=len(checks) or 1) as pool:
        futures = [pool.submit(func, *args) for func, *args in checks]
    for future in futures:
        future.result()


def prefetch(func, *args):
    """Start func(*args) on a thread now; .result() later re-raises what it raised."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(func, *args)
    pool.shutdown(wait=False)
    return future


def resolve_revision(stage, rev: str):
    from skycap.revision import resolve

    return resolve(stage.hg_source, rev, stage.image_tag)


def check_images(stage, tag: str) -> None:
    from skycap.registry import require_images

    require_images(stage.registry, [(s.name, s.image, tag) for s in stage.services.values()],
                   stage.registry_insecure)


def render(stage, revision, release_number: int):
    from skycap.render import RenderInput, render_stage

    return render_stage(stage, RenderInput(node=revision.node, tag=revision.tag, rev=revision.rev,
                                           release=release_number))


def next_release_number(session: StageSession) -> int:
    try:
        releases = call_api(session, "ledger", session.ledger.releases)
    except BadInput as exc:
        if "does not exist" in str(exc):
            return 1
        raise
    return (releases[0].number + 1) if releases else 1


def namespace_exists(core, name: str) -> None:
    """LookupError when the namespace is missing; other API errors pass through."""
    from kubernetes.client.rest import ApiException

    try:
        core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(name) from None
        raise


def ensure_namespace(session: StageSession) -> None:
    from kubernetes import client

    stage = session.stage
    core = client.CoreV1Api(session.api)
    try:
        call_api(session, "namespace", namespace_exists, core, stage.namespace)
        return
    except LookupError:
        pass
    if not stage.create_namespace:
        raise BadInput(f"namespace {stage.namespace} does not exist",
                       "create it, or set kubernetes.create_namespace: true in the stage file")
    from skycap.render import MANAGED_BY, STAGE_LABEL

    call_api(session, "create namespace", core.create_namespace,
             {"metadata": {"name": stage.namespace, "labels": {MANAGED_BY: "skycap", STAGE_LABEL: stage.name}}})


def split_phases(rendered) -> tuple[str, str]:
    """ConfigMaps, Secrets, ServiceAccounts and RBAC first; everything else second."""
    from skycap.yamlio import dump_all

    early = [m.obj for m in rendered.manifests if m.kind in EARLY_KINDS]
    rest = [m.obj for m in rendered.manifests if m.kind not in EARLY_KINDS]
    return (dump_all(early) if early else ""), (dump_all(rest) if rest else "")


def locked_deploy(session, state, phases, hooks, lock, *, timeout, rollback, accept_new_host_keys) -> int:
    stage, run = session.stage, session.run
    mark_dead_releases(session)
    number = next_release_number(session)
    if number != _rendered_number(state.rendered):
        state.rendered = render(stage, state.revision, number)
    hooks.run("before_deploy", stage=stage.name, rev=state.rev, node=state.revision.node, tag=state.revision.tag,
              release=number, namespace=stage.namespace)
    ledger = session.ledger
    state.release = ledger.begin("deploy", rev=state.rev, node=state.revision.node,
                                 tags={name: state.revision.tag for name in stage.services},
                                 manifests=state.rendered.to_yaml(), services=sorted(stage.services) + sorted(stage.vm))
    lock.set_purpose(f"deploy rev={state.rev} (release {state.release.number})")
    if state.release.number != number:  # someone broke our lock and deployed meanwhile
        message = f"release number {number} was taken while this deploy held the lock"
        record(ledger, state, "failed", message + "; nothing was applied")
        raise DeployFailed(message, "someone ran `skycap unlock` during this deploy; nothing was applied, try again")
    started = datetime.now(timezone.utc)
    try:
        if stage.vm and stage.vm_order == "before":
            deploy_vms(session, state, phases, accept_new_host_keys)
        if stage.services:
            apply_and_watch(session, state, phases, timeout=timeout, since=started)
        if stage.vm and stage.vm_order == "after":
            deploy_vms(session, state, phases, accept_new_host_keys)
    except (KeyboardInterrupt, Interrupted):
        record(ledger, state, "interrupted", "interrupted by the user (Ctrl-C or SIGTERM)")
        raise
    except (DeployFailed, RolloutTimeout) as exc:
        state.error = exc.message
        record(ledger, state, "failed", exc.message)
        if rollback:
            auto_rollback(session, state, phases, accept_new_host_keys)
        else:
            run.screen.warn("--no-rollback: the failed release stays in place")
        hooks_failed(hooks, stage, state, exc)
        raise
    record(ledger, state, "deployed", "")
    run.log.write("skycap", f"release {state.release.number} recorded as deployed")
    after_success(session, state, phases)
    run.log.write("skycap", "cleanup after the deploy done")
    hooks.run("after_deploy", stage=stage.name, rev=state.rev, node=state.revision.node, tag=state.revision.tag,
              release=state.release.number, namespace=stage.namespace)
    return 0


def _rendered_number(rendered) -> int | None:
    from skycap.render import RELEASE_ANNOTATION

    for manifest in rendered.manifests:
        value = manifest.obj["metadata"].get("annotations", {}).get(RELEASE_ANNOTATION)
        if value:
            return int(value)
    return None


def hooks_failed(hooks, stage, state, exc) -> None:
    try:
        hooks.run("deploy_failed", stage=stage.name, rev=state.rev, node=state.revision.node,
                  tag=state.revision.tag, release=state.release.number, namespace=stage.namespace,
                  error=exc.message)
    except DeployFailed as hook_error:
        state.error += f"; {hook_error.message}"


def record(ledger, state, status: str, note: str) -> None:
    state.status = status
    release = state.release
    release.applied = list(state.applied)
    release.vm = {name: result.get("release") for name, result in state.vm_results.items()
                  if result.get("action") == "deploy" and result.get("hosts")}
    ledger.finish(release, status, note=note[:2000])


@contextmanager
def recorded(ledger, state, what: str):
    """Whatever stops the block, the release's ledger entry says so (interrupted or failed)."""
    try:
        yield
    except KeyboardInterrupt:
        record(ledger, state, "interrupted", f"{what} interrupted by the user")
        raise
    except SkycapError as exc:
        record(ledger, state, "failed", exc.message)
        raise


def server_dry_run(session, rendered) -> None:
    from skycap.errors import CommandFailed

    try:
        session.kubectl.apply(rendered.to_yaml(), server_dry_run=True)
    except CommandFailed as exc:
        raise BadInput(f"the cluster rejected the rendered manifests (server-side dry run): "
                       f"{rejection_text(exc, rendered)}",
                       "nothing was applied; fix the template named above and see: skycap render STAGE rev=REV") \
            from None


def rejection_text(exc, rendered) -> str:
    """kubectl's complaint, with the template each named object came from."""
    from skycap.kubectl import filter_output

    lines = filter_output(exc.stderr).shown or [exc.stderr.strip()]
    text = "\n  ".join(lines)
    for manifest in rendered.manifests:
        needle = f'"{manifest.name}"'
        if needle in text and manifest.source != "(skycap)":
            text += f"\n  ({manifest.ref()} comes from templates/{manifest.source}, service {manifest.service})"
    return text


def apply_and_watch(session, state, phases, *, timeout: float, since) -> None:
    early, rest = split_phases(state.rendered)
    with phases.phase("apply ConfigMaps, Secrets and RBAC"):
        if early:
            state.applied += apply_objects(session, early)
    with phases.phase("apply workloads and services"):
        if rest:
            state.applied += apply_objects(session, rest)
    watch(session, state, phases, timeout=timeout, since=since)


def apply_objects(session, manifests_yaml: str) -> list[str]:
    from skycap.errors import CommandFailed

    try:
        return session.kubectl.apply(manifests_yaml)
    except CommandFailed as exc:
        from skycap.kubectl import filter_output

        shown = "\n  ".join(filter_output(exc.stderr).shown) or exc.stderr.strip()
        raise DeployFailed(f"kubectl apply failed: {shown}") from None
    except BadInput as exc:
        raise DeployFailed(f"applying failed: {exc.message}") from None


def targets_of(rendered):
    from skycap.rollout import Target

    watched = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Service"}
    return [Target(kind=m.kind, name=m.name, service=m.service or "") for m in rendered.manifests
            if m.kind in watched]


def watch(session, state, phases, *, timeout: float, since) -> None:
    from skycap.rollout import failure_report, wait_for_rollout

    screen = session.run.screen
    progress = ProgressPrinter(screen)
    cancel = threading.Event()
    with phases.phase(f"wait for the rollout (timeout {timeout:g} s)"):
        try:
            result = wait_for_rollout(session.api, session.stage.namespace, targets_of(state.rendered),
                                      timeout=timeout, since=since, on_change=progress.update, cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()
            raise
        finally:
            progress.done()
    state.result = result
    session.run.log.write("skycap", f"rollout finished: {'succeeded' if result.succeeded else 'not succeeded'}")
    if result.succeeded:
        return
    screen.raw(failure_report(result))
    failing = ", ".join(sorted({o.service or o.name for o in result.outcomes if o.state in ("failed", "timeout")}))
    if result.timed_out and not result.failed:
        raise RolloutTimeout(f"the rollout did not finish within {timeout:g} s: {failing}")
    raise DeployFailed(f"the rollout failed: {failing}")


class ProgressPrinter:
    """A live line per service on a terminal; elsewhere a timestamped line when a service's state changes."""

    def __init__(self, screen):
        self.screen = screen
        self.previous = None
        self.drawn = 0

    def update(self, outcomes) -> None:
        from skycap.rollout import render_progress

        if self.screen.quiet:
            return
        if self.screen.is_terminal:
            lines = render_progress(outcomes, True)
            if self.drawn:
                self.screen.stream.write(f"\033[{self.drawn}F\033[J")
            self.screen.stream.write("\n".join(lines) + "\n")
            self.screen.stream.flush()
            self.drawn = len(lines)
        else:
            for line in render_progress(outcomes, False, previous=self.previous):
                self.screen.raw("    " + line)
        self.previous = list(outcomes)

    def done(self) -> None:
        self.drawn = 0


def preflight_vms(stage, accept_new_host_keys: bool) -> None:
    """Reach every host before the first change: an unknown key or a dead host stops us here."""
    from skycap import vm

    for service in stage.vm.values():
        try:
            vm.preflight(service, accept_new_host_keys=accept_new_host_keys, project_root=stage.project.root)
        except DeployFailed as exc:  # nothing has changed yet: this is bad input, not a failed deploy
            raise BadInput(exc.message, exc.hint) from None


def deploy_vms(session, state, phases, accept_new_host_keys: bool) -> None:
    """Build the archive once, ship it to every host of every VM service; all switch or none does."""
    import tempfile
    from pathlib import Path

    from skycap import vm
    from skycap.revision import archive

    stage, node = session.stage, state.revision.node
    release_name = vm.new_release_name(node)
    with tempfile.TemporaryDirectory(prefix="skycap-archive-") as folder:
        with phases.phase("build the release archive once (hg archive)"):
            tarball = archive(stage.hg_source, node, Path(folder) / f"{node[:12]}.tar.gz")
        for name, service in stage.vm.items():
            with phases.phase(f"deploy {name} to {len(service.hosts)} host(s), {service.parallel} at a time"):
                try:
                    result = vm.deploy(service, tarball, node, release_name=release_name,
                                       accept_new_host_keys=accept_new_host_keys, on_event=host_printer(session),
                                       project_root=stage.project.root)
                except (vm.VmDeployFailed, vm.VmInterrupted) as exc:
                    state.vm_results[name] = vm_result_dict(exc.result)
                    raise
                state.vm_results[name] = vm_result_dict(result)


def host_printer(session):
    lock = threading.Lock()

    def on_event(host: str, message: str) -> None:
        with lock:
            session.run.screen.line(f"    {host}: {message}")
    return on_event


def vm_result_dict(result) -> dict:
    from dataclasses import asdict

    return asdict(result)


def after_success(session, state, phases) -> None:
    """Delete what the previous release applied and this one does not; trim the ledger."""
    ledger = session.ledger
    try:
        prune_removed(session, state)
        ledger.prune(session.stage.keep_releases)
    except SkycapError as exc:
        session.run.screen.warn(f"cleanup after the deploy failed (the deploy itself worked): {exc.message}")


def prune_removed(session, state) -> None:
    from skycap.render import STAGE_LABEL

    if not state.rendered or not state.rendered.manifests:
        return  # never prune from an empty render
    previous = session.ledger.last_good_before(state.release.number)
    if previous is None or not previous.manifests:
        return
    current = {(m.kind, m.name) for m in state.rendered.manifests}
    gone = [(obj["kind"], obj["metadata"]["name"]) for obj in load_objects(previous.manifests)
            if (obj["kind"], obj["metadata"]["name"]) not in current and obj["kind"] != "Namespace"]
    if not gone:
        return
    refs = [f"{kind}/{name}" for kind, name in gone]
    _, stdout = session.kubectl.run(["get", "--ignore-not-found", "-o", "json", *refs])
    live = json.loads(stdout or '{"items": []}').get("items", []) if stdout.strip() else []
    ours = [f"{o['kind']}/{o['metadata']['name']}" for o in live
            if (o["metadata"].get("labels") or {}).get(STAGE_LABEL) == session.stage.name]
    if ours:
        session.run.screen.phase(f"prune objects no longer in the stage: {', '.join(ours)}")
        session.kubectl.delete(ours)


def load_objects(manifests_yaml: str) -> list[dict]:
    from skycap.yamlio import load_all

    return [doc for doc in load_all(manifests_yaml) if isinstance(doc, dict)]


def auto_rollback(session, state, phases, accept_new_host_keys: bool) -> None:
    run = session.run
    target = session.ledger.last_good_before(state.release.number)
    if target is None:
        run.screen.warn(f"release {state.release.number} is the first good one to be: there is no earlier "
                        f"release to roll back to; the failed release stays in place")
        return
    run.screen.phase(f"roll back to release {target.number} (rev {target.rev})")
    try:
        rollback_to(session, target, phases, timeout=session.stage.rollout_timeout,
                    accept_new_host_keys=accept_new_host_keys, note=f"automatic rollback after release "
                    f"{state.release.number} failed", failed_release=state.release)
        state.rolled_back_to = target.number
    except SkycapError as exc:
        run.screen.fail(f"the automatic rollback failed too: {exc.message}")
        state.error += f"; the automatic rollback to release {target.number} failed: {exc.message}"


def interrupted_message(state: DeployState) -> str:
    if not state.applied:
        return "interrupted before anything was applied; the lock was released"
    number = state.release.number if state.release else "?"
    return (f"interrupted; release {number} is recorded as interrupted after applying "
            f"{len(state.applied)} object(s): {', '.join(state.applied[:8])}"
            f"{' ...' if len(state.applied) > 8 else ''}; the lock was released. "
            f"See `skycap status {state.stage}`; `skycap rollback {state.stage}` goes back to the last good release")


def deploy_plan(session, state, phases) -> int:
    """--dry-run: what a deploy would create, change or leave alone, from one `kubectl diff`."""
    run = session.run
    with phases.phase("plan (kubectl diff, server-side)"):
        try:
            _, text = session.kubectl.diff(state.rendered.to_yaml())
        except BadInput:
            raise
        except SkycapError as exc:
            raise BadInput(f"the cluster rejected the rendered manifests: {exc.message}") from None
    plan = classify_diff(state.rendered, text)
    for action in ("create", "change", "unchanged"):
        for ref in plan[action]:
            run.screen.line(f"    {action:<9} {ref}")
    for name, service in session.stage.vm.items():
        from skycap import vm

        run.screen.raw(vm.describe_plan(service, vm.plan(service, state.revision.node)))
    state.status = "planned"
    state.plan = plan
    return 0


# Lines every deploy changes by itself: they do not make an object "changed" in the plan.
BOOKKEEPING = ("skycap.io/release:", "skycap.io/node:", "kubectl.kubernetes.io/last-applied-configuration",
               '{"apiVersion"', "generation:", "resourceVersion:", "time:", "f:skycap.io/")


def classify_diff(rendered, diff_text: str) -> dict[str, list[str]]:
    """kubectl diff names each differing object's file; all-new files are objects to create."""
    created, changed = set(), set()
    current = None
    for line in diff_text.splitlines():
        if line.startswith("diff "):
            current = line.split()[-1].rsplit("/", 1)[-1]
        elif current and line.startswith("@@ -0,0 "):
            created.add(current)
        elif current and line[:1] in "+-" and not line.startswith(("+++", "---")):
            if not line[1:].strip().startswith(BOOKKEEPING):
                changed.add(current)
    plan = {"create": [], "change": [], "unchanged": []}
    for manifest in rendered.manifests:
        api_version = manifest.obj["apiVersion"].replace("/", ".")
        namespace = manifest.obj["metadata"].get("namespace", "")
        key = ".".join(part for part in (api_version, manifest.kind, namespace, manifest.name) if part)
        action = "create" if key in created else "change" if key in changed else "unchanged"
        plan[action].append(manifest.ref())
    return plan


def summarise(run, session, state, phases) -> None:
    log = run.log
    if run.output == "json":
        release = state.release
        emit_json({
            "stage": state.stage, "rev": state.rev, "status": state.status,
            "node": state.revision.node if state.revision else None,
            "tag": state.revision.tag if state.revision else None,
            "release": release.number if release else None,
            "rolled_back_to": state.rolled_back_to, "applied": state.applied,
            "services": [o.__dict__ for o in state.result.outcomes] if state.result else [],
            "vm": state.vm_results, "plan": getattr(state, "plan", None),
            "warnings": session.kubectl.warnings if session._kubectl else [],
            "phases": dict(phases.timings), "log": str(log.path) if log.used else None, "error": state.error,
        })
    if session._kubectl and session._kubectl.warnings:
        run.screen.warn("the API server said (once each):")
        for warning in session._kubectl.warnings:
            run.screen.line(f"    {warning}")
    if state.status == "deployed":
        run.screen.ok(f"release {state.release.number}: {state.stage} runs rev {state.rev} "
                      f"({state.revision.node[:12]}), tag {state.revision.tag}")
    elif state.status == "failed":
        back = (f"; rolled back to release {state.rolled_back_to}" if state.rolled_back_to
                else "; not rolled back")
        run.screen.fail(f"release {state.release.number} of {state.stage} failed{back}")
    if log.used:
        run.screen.line(f"    log: {log.path}")


def mark_dead_releases(session) -> None:
    """Pending releases found while we hold the lock belong to deploys that died (their lease expired)."""
    marked = session.ledger.interrupt_pending("its deploy stopped without finishing (the holder died; the lock "
                                              "expired or was broken)")
    for number in marked:
        session.run.screen.warn(f"release {number} was left pending by a deploy that died; marked interrupted")


# ---------- rollback -----------------------------------------------------------------------------------

def rendered_from_manifests(text: str):
    from skycap.render import SERVICE_LABEL, Manifest, Rendered

    return Rendered([Manifest(obj, "(release)", (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL))
                     for obj in load_objects(text)])


def rollback(run, stage_name: str, *, release=None, timeout=None, accept_new_host_keys=False) -> int:
    session = open_stage(run, stage_name)
    stage = session.stage
    phases = Phases(run, stage_name)
    from skycap.lock import StageLock

    lock = StageLock(session.api, stage.namespace, stage.name, purpose="rollback", ttl=lock_ttl())
    with phases.phase("take the stage lock"):
        call_api(session, "lock", lock.acquire)
    outcome = {"stage": stage_name, "status": "failed", "release": None, "target": None}
    try:
        with interruptible():
            mark_dead_releases(session)
            ledger = session.ledger
            current = ledger.current()
            target = choose_rollback_target(ledger, current, release, stage_name)
            outcome["target"] = target.number
            lock.set_purpose(f"rollback to release {target.number}")
            from skycap.hooks import Hooks

            hooks = Hooks(stage.project.tasks_file, run.log, run.screen)
            hooks.run("before_rollback", stage=stage.name, rev=target.rev, node=target.node,
                      release=target.number, namespace=stage.namespace)
            new = rollback_to(session, target, phases, timeout=timeout or stage.rollout_timeout,
                              accept_new_host_keys=accept_new_host_keys, note=f"rollback to {target.number}",
                              replaced=current)
            outcome.update(status="deployed", release=new.number)
            hooks.run("after_rollback", stage=stage.name, rev=target.rev, node=target.node,
                      release=new.number, namespace=stage.namespace)
            run.screen.ok(f"release {new.number}: {stage_name} is back on release {target.number} "
                          f"(rev {target.rev}, {str(target.node)[:12]})")
            return 0
    except KeyboardInterrupt:
        raise Interrupted("rollback interrupted; the lock was released; see `skycap status "
                          f"{stage_name}` and run the rollback again") from None
    finally:
        lock.release()
        if run.output == "json":
            emit_json({**outcome, "log": str(run.log.path) if run.log.used else None})
        elif run.log.used:
            run.screen.line(f"    log: {run.log.path}")


def choose_rollback_target(ledger, current, number, stage_name: str):
    if number is not None:
        target = ledger.get(number)
        if not target.manifests and target.kind != "deploy":
            raise BadInput(f"release {number} has no recorded manifests to roll back to")
        if target.status not in ("deployed", "superseded", "rolled-back"):
            raise BadInput(f"release {number} never ran successfully (status {target.status})",
                           f"pick a good one from `skycap history {stage_name}`")
        return target
    if current is None:
        raise BadInput(f"stage {stage_name} has no deployed release, so there is nothing to roll back from",
                       f"see `skycap history {stage_name}`")
    target = ledger.last_good_before(current.number)
    if target is None:
        raise BadInput(f"there is no good release before release {current.number} to roll back to",
                       f"see `skycap history {stage_name}`; to go forward instead: skycap deploy {stage_name} rev=REV")
    return ledger.get(target.number)


def rollback_to(session, target, phases, *, timeout, accept_new_host_keys, note, replaced=None,
                failed_release=None):
    """Re-apply a recorded release's manifests and watch them: no Mercurial, registry or templates needed."""
    ledger = session.ledger
    if target.manifests is None:
        target = ledger.get(target.number)
    new = ledger.begin("rollback", rev=target.rev, node=target.node, tags=dict(target.tags),
                       manifests=target.manifests or "", services=list(target.services), note=note,
                       target=target.number)
    state = DeployState(stage=session.stage.name, rev=target.rev or "", release=new)
    state.rendered = rendered_from_manifests(target.manifests or "")
    with recorded(ledger, state, "rollback"):
        if state.rendered.manifests:
            apply_and_watch(session, state, phases, timeout=timeout, since=datetime.now(timezone.utc))
        rollback_vms(session, target, state, phases, accept_new_host_keys)
    record(ledger, state, "deployed", note)
    if replaced is not None and replaced.number != target.number:
        replaced.status = "rolled-back"
        ledger.update(replaced)
    return new


def rollback_vms(session, target, state, phases, accept_new_host_keys) -> None:
    """Switch every host back to the release's VM release (or each host's previous one)."""
    if not session.stage.vm:
        return
    from skycap import vm

    stage = session.stage
    for name, service in stage.vm.items():
        wanted = (target.vm or {}).get(name) or None
        with phases.phase(f"switch {name} back on {len(service.hosts)} host(s)"):
            try:
                result = vm.rollback(service, wanted, accept_new_host_keys=accept_new_host_keys,
                                     on_event=host_printer(session), project_root=stage.project.root)
            except (vm.VmDeployFailed, vm.VmInterrupted) as exc:
                state.vm_results[name] = vm_result_dict(exc.result)
                raise
            state.vm_results[name] = vm_result_dict(result)


# ---------- status and history -----------------------------------------------------------------------

def status(run, stage_name: str) -> int:
    from skycap.status import collect_status, print_status

    session = open_stage(run, stage_name)
    report = collect_status(session)
    if run.output == "json":
        emit_json(report)
    else:
        print_status(run.screen, report)
    return 0


def history(run, stage_name: str) -> int:
    session = open_stage(run, stage_name)
    releases = call_api(session, "ledger", session.ledger.releases)
    if run.output == "json":
        emit_json({"stage": stage_name, "releases": [release_dict(r) for r in releases],
                   "problems": session.ledger.problems})
        return 0
    rows = [("#", "STATUS", "KIND", "REV", "NODE", "WHO", "STARTED", "NOTE")]
    for r in releases:
        rows.append((str(r.number), r.status, r.kind, (r.rev or "")[:20], (r.node or "")[:12], r.who[:30],
                     r.started, r.note[:60]))
    print_table(rows)
    for problem in session.ledger.problems:
        run.screen.warn(problem)
    if not releases:
        run.screen.line(f"stage {stage_name} has no releases yet")
    return 0


def release_dict(release) -> dict:
    data = dict(release.__dict__)
    data.pop("manifests", None)
    return data


def print_table(rows) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# ---------- render and diff ------------------------------------------------------------------------------

def render_command(run, stage_name: str, rev: str) -> int:
    session = open_stage(run, stage_name)
    revision = resolve_revision(session.stage, rev)
    number = 0
    try:
        number = next_release_number(session)
    except SkycapError as exc:
        run.screen.warn(f"release number unknown ({exc.message}); rendering with release 0")
    print(render(session.stage, revision, number).to_yaml(), end="")
    return 0


def diff(run, stage_name: str, rev: str) -> int:
    session = open_stage(run, stage_name)
    revision = resolve_revision(session.stage, rev)
    rendered = render(session.stage, revision, next_release_number(session))
    code, text = session.kubectl.diff(rendered.to_yaml())
    print(text, end="")
    if code == 0:
        run.screen.ok(f"no change: {stage_name} already runs what rev={rev} renders")
    return code


# ---------- scale and unlock ----------------------------------------------------------------------------------

def scale(run, stage_name: str, counts: dict[str, int], *, timeout=None) -> int:
    from skycap.yamlio import dump_all

    session = open_stage(run, stage_name)
    stage = session.stage
    unknown = sorted(set(counts) - set(stage.services))
    if unknown:
        raise BadInput(f"no Kubernetes service {unknown[0]!r} in stage {stage_name}",
                       f"services: {', '.join(sorted(stage.services))}")
    phases = Phases(run, stage_name)
    from skycap.lock import StageLock

    lock = StageLock(session.api, stage.namespace, stage.name, purpose=f"scale {counts}", ttl=lock_ttl())
    with phases.phase("take the stage lock"):
        call_api(session, "lock", lock.acquire)
    try:
        with interruptible():
            ledger = session.ledger
            current = ledger.current()
            if current is None:
                raise BadInput(f"stage {stage_name} has no deployed release to scale", "deploy it first")
            current = ledger.get(current.number)
            objects = load_objects(current.manifests or "")
            scaled = scale_objects(objects, counts)
            note = "scale " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            release = ledger.begin("scale", rev=current.rev, node=current.node, tags=dict(current.tags),
                                   manifests=dump_all(objects),
                                   services=list(current.services), note=note, target=current.number)
            state = DeployState(stage=stage_name, rev=current.rev or "", release=release)
            state.rendered = rendered_from_manifests(dump_all(scaled))
            with recorded(ledger, state, "scale"):
                with phases.phase(note):
                    state.applied = apply_objects(session, dump_all(scaled))
                watch(session, state, phases, timeout=timeout or stage.rollout_timeout,
                      since=datetime.now(timezone.utc))
            record(ledger, state, "deployed", note)
            run.screen.ok(f"release {release.number}: {note}")
            return 0
    except KeyboardInterrupt:
        raise Interrupted("scale interrupted; the lock was released") from None
    finally:
        lock.release()


def scale_objects(objects: list[dict], counts: dict[str, int]) -> list[dict]:
    """Set spec.replicas on each named service's Deployments/StatefulSets (in place); return those."""
    from skycap.render import SERVICE_LABEL

    scaled, seen = [], set()
    for obj in objects:
        service = (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        if service in counts and obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet"):
            obj["spec"]["replicas"] = counts[service]
            scaled.append(obj)
            seen.add(service)
    missing = sorted(set(counts) - seen)
    if missing:
        raise BadInput(f"service {missing[0]} has no Deployment or StatefulSet in the current release to scale")
    return scaled


def unlock(run, stage_name: str) -> int:
    from skycap.lock import unlock as break_and_record

    session = open_stage(run, stage_name)
    stage = session.stage
    done = call_api(session, "lock", break_and_record, session.api, stage.namespace, stage.name)
    if done.broken is None and not done.interrupted:
        run.screen.ok(f"stage {stage_name} was not locked; nothing to do")
        return 0
    if done.broken is not None:
        run.screen.ok(f"stage {stage_name} unlocked: it was held by {done.broken.holder} since "
                      f"{done.broken.since}, doing: {done.broken.purpose}")
    for number in done.interrupted:
        run.screen.warn(f"release {number} was left pending by that deploy; marked interrupted")
    if done.release is not None:
        run.screen.line(f"    recorded as release {done.release.number}")
    return 0
