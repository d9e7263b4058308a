"""The deploy pipeline, as named phases: every check that can fail runs before the first change to
the cluster; a failure after it rolls back to the last good release unless told not to."""

from __future__ import annotations

from datetime import datetime, timezone

from skycap.cluster import namespace as namespaces
from skycap.cluster.apply import apply_manifests, server_dry_run, watch
from skycap.cluster.errors import call_api
from skycap.errors import BadInput, DeployFailed, Interrupted, LockLost, SkycapError
from skycap.flow.rollback import Rollback, readable_good_before
from skycap.session import (
    DeployState,
    Phases,
    StageSession,
    as_failure,
    emit_json,
    host_printer,
    interruptible,
    lock_ttl,
    mark_dead_releases,
    open_stage,
    prefetch,
    record,
    record_failed,
    record_interrupted,
    vm_result_dict,
)


def deploy(run, stage_name: str, rev: str, *, dry_run=False, timeout=None, rollback=True, image_check=True,
           accept_new_host_keys=False) -> int:
    session = open_stage(run, stage_name)
    stage = session.stage
    phases = Phases(run, stage_name)
    state = DeployState(stage=stage_name, rev=rev)
    try:
        with interruptible():
            if dry_run:
                return planned_deploy(session, state, phases, image_check)
            from skycap.flow.hooks import ProjectTasks

            work = Deploy(session, state, phases, timeout=timeout or stage.rollout_timeout, rollback=rollback,
                          image_check=image_check, accept_new_host_keys=accept_new_host_keys)
            c = ProjectTasks.load(stage.project.tasks_file).context(session, rev=rev, flow=work)
            work.c = c
            try:
                return work.run()
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as exc:
                if state.release is not None:
                    raise  # the failure path has run
                raise nothing_changed(session, exc) from None
            finally:
                work.release_lock(nothing_changed=state.release is None)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(state)) from None
    except Interrupted as exc:
        raise Interrupted(interrupted_message(state), exc.hint) from None
    finally:
        summarise(run, session, state, phases)
        if stage.environment is not None and state.release is not None:
            from skycap.environments.commands import after_deploy

            after_deploy(session, state)  # an environment in use does not expire


class Deploy:
    """One deploy, step by step: the bodies of the deploy:* steps (skycap/flow/steps.py says their order)."""

    def __init__(self, session, state, phases, *, timeout, rollback, image_check, accept_new_host_keys):
        self.session, self.state, self.phases = session, state, phases
        self.timeout, self.rollback, self.image_check = timeout, rollback, image_check
        self.accept_new_host_keys = accept_new_host_keys
        self.c = None  # the stage context of the steps and hooks
        self.made_namespace = None  # the uid of the namespace this deploy made, if it made it
        self.lock = None  # the stage lock, once taken
        self.releases = []  # the ledger as listed under the lock, newest first
        self.next_number = None  # this release's number, read under the lock
        self.changing = False  # the release is recorded under the lock: a failure from here is a failed deploy
        self.previous = None  # a future: the last good release and what it applied that this one does not
        self.vm_work = None
        self.started = None

    def run(self) -> int:
        from skycap.flow.steps import run_step

        c, state = self.c, self.state
        run_step(c, "deploy:starting")
        run_step(c, "deploy:started")
        try:
            for name in ("deploy:updating", "deploy:updated", "deploy:publishing", "deploy:published",
                         "deploy:finishing"):
                run_step(c, name)
            run_step(c, "deploy:finished", tolerate=("after",))
        except (KeyboardInterrupt, Interrupted):
            if self.changing:
                record(self.session.ledger, state, "interrupted", "interrupted by the user (Ctrl-C or SIGTERM)")
            raise
        except LockLost as exc:  # no rollback: without the lock, this run must change nothing more
            if not self.changing:
                raise
            state.error = exc.message
            record_interrupted(self.session, state, exc.message)
            state.status = "interrupted"
            raise
        except Exception as exc:  # noqa: BLE001 - ours or a library's: after the first change, a failed deploy
            if not self.changing:
                raise
            error = as_failure(self.session, exc)
            self.failed(error)
            if error is exc:
                raise
            raise error from None
        finally:
            if self.vm_work is not None:
                self.vm_work.close()
        if c.hook_errors:
            state.error = "; ".join(c.hook_errors)
        return 0

    # ----- the steps -----

    def starting(self) -> None:
        """Everything that can fail before the first change; it ends with the stage lock held."""
        session, state, phases = self.session, self.state, self.phases
        stage, run = session.stage, session.run
        with phases.phase(f"resolve rev={state.rev} in {stage.hg}"):
            state.revision = resolve_revision(stage, state.rev)
            show_revision(run, state.revision)
        with phases.phase("take the stage lock"):
            self.take_lock()
        if not self.image_check and stage.services:
            run.screen.warn("image check skipped (--skip-image-check)")
        with phases.phase("render templates"):
            state.rendered = render(stage, state.revision, self.next_number)
        with phases.phase("check images, validate with a server-side dry run, reach VM hosts"):
            run_checks(session, state, self.image_check, self.accept_new_host_keys)
        c, revision = self.c, state.revision
        c.node, c.tag, c.release = revision.node, revision.tag, self.next_number

    def updating(self) -> None:
        self.begin()
        stage = self.session.stage
        if stage.vm:
            self.vm_work = VmWork(self.session, self.state, self.phases, self.accept_new_host_keys)
            self.vm_work.unpack()
            if stage.vm_order == "before":
                self.vm_work.go_live()
        if stage.services:
            apply_manifests(self.session, self.state, self.phases)

    def publishing(self) -> None:
        stage = self.session.stage
        if stage.services:
            watch(self.session, self.state, self.phases, timeout=self.timeout, since=self.started)
        if self.vm_work is not None and stage.vm_order == "after":
            self.vm_work.go_live()

    def finishing(self) -> None:
        session, state = self.session, self.state
        session.require_lock()
        record(session.ledger, state, "deployed", "")
        session.run.log.write("skycap", f"release {state.release.number} recorded as deployed")
        after_success(session, state, self.previous)
        session.run.log.write("skycap", "cleanup after the deploy done")

    # ----- in between -----

    def take_lock(self) -> None:
        """The namespace (made when the stage asks for it), the stage lock, and the ledger read under the
        lock: releases left pending by dead deploys marked, the next release number."""
        from skycap.cluster.lock import StageLock

        session, stage = self.session, self.session.stage
        self.made_namespace = namespaces.ensure_namespace(session)
        lock = StageLock(session.api, stage.namespace, stage.name, purpose=f"deploy rev={self.state.rev}",
                         ttl=lock_ttl(), notice=session.run.screen.line)
        call_api(session, "lock", lock.acquire)
        self.lock = lock
        self.releases = call_api(session, "ledger", session.ledger.releases)
        mark_dead_releases(session, self.releases)
        self.next_number = session.ledger.next_number

    def release_lock(self, *, nothing_changed: bool) -> None:
        """After a deploy that changed nothing, delete the namespace it made, while still holding the lock
        (so no other deploy is using it; one that lost the lock race leaves it to the winner); then
        release the lock."""
        if nothing_changed and self.made_namespace:
            if self.lock is not None and not self.lock.lost:
                namespaces.delete_namespace(self.session, self.made_namespace)
            else:
                self.session.run.screen.line(f"    left namespace {self.session.stage.namespace}, which this deploy "
                                             f"made: it does not hold the stage lock, and another deploy may be "
                                             f"using the namespace")
        if self.lock is not None:
            self.lock.release()

    def begin(self) -> None:
        """Record the release as pending, under the lock: the first change."""
        session, state = self.session, self.state
        stage, lock, number, ledger = session.stage, self.lock, self.next_number, session.ledger
        session.lock = lock
        session.require_lock()
        state.release = ledger.begin("deploy", rev=state.rev, node=state.revision.node,
                                     tags={name: state.revision.tag for name in stage.services},
                                     manifests=state.rendered.to_yaml(),
                                     services=sorted(stage.services) + sorted(stage.vm), number=number)
        lock.set_purpose(f"deploy rev={state.rev} (release {state.release.number})")
        if state.release.number != number:  # someone broke our lock and deployed meanwhile
            message = f"release number {number} was taken while this deploy held the lock"
            record(ledger, state, "failed", message + "; nothing was applied")
            raise DeployFailed(message, "someone ran `skycap unlock` during this deploy; nothing was applied, "
                               "try again")
        state.releases = [state.release, *self.releases]  # the lock keeps this listing true
        # The previous release, and what it applied that this one does not: read while the rollout runs.
        self.previous = prefetch(previous_and_gone, ledger, state, self.releases)
        self.started = datetime.now(timezone.utc)
        self.changing = True

    def failed(self, error) -> None:
        """The failure path, run to its end whatever fails on the way: record `failed` (retried), roll back
        unless told not to (even if that record could not be written), then the deploy:failed step."""
        from skycap.flow.steps import run_step

        session, state = self.session, self.state
        state.error = error.message
        record_failed(session, state, error.message)
        state.status = "failed"
        if self.vm_work is not None:
            self.vm_work.abandon()
        if self.rollback:
            auto_rollback(session, state, self.phases, self.accept_new_host_keys, self.previous, self.c)
        else:
            session.run.screen.warn("--no-rollback: the failed release stays in place")
        self.c.error = error.message
        run_step(self.c, "deploy:failed", tolerate=("before", "after"))
        if self.c.hook_errors:
            state.error += "; " + "; ".join(self.c.hook_errors)


def nothing_changed(session, exc: Exception) -> SkycapError:
    """What stopped a deploy before its first change: exit 2 (bad input, nothing changed), unless it is
    an answer of its own (a locked stage, 3). A crash is said in one line, its traceback in the run's log."""
    if isinstance(exc, SkycapError) and exc.exit_code != 1:
        return exc
    error = as_failure(session, exc)
    message = error.message if error.message.rstrip(".").endswith("nothing was changed") \
        else f"{error.message}; nothing was changed"
    return BadInput(message, error.hint)


def show_revision(run, revision) -> None:
    run.screen.line(f"    {revision.node[:12]} ({revision.branch}) {revision.summary[:70]} -> tag {revision.tag}")


def planned_deploy(session, state, phases, image_check: bool) -> int:
    """--dry-run: resolve, render, check the images, then the plan; no lock, no namespace made."""
    stage = session.stage
    with phases.phase(f"resolve rev={state.rev} in {stage.hg}"):
        state.revision = resolve_revision(stage, state.rev)
        show_revision(session.run, state.revision)
    if not image_check and stage.services:
        session.run.screen.warn("image check skipped (--skip-image-check)")
    with phases.phase("render templates"):
        state.rendered = render(stage, state.revision, next_release_number(session))
    if image_check and stage.services:
        check_images(stage, state.revision.tag)
    return deploy_plan(session, state, phases)


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


def resolve_revision(stage, rev: str):
    from skycap.sources.mercurial import resolve

    return resolve(stage.hg_source, rev, stage.image_tag)


def check_images(stage, tag: str) -> None:
    from skycap.sources.registry import require_images

    require_images(stage.registry, [(s.name, s.image, tag) for s in stage.services.values()],
                   stage.registry_insecure)


def render(stage, revision, release_number: int):
    from skycap.project.render import RenderInput, render_stage

    return render_stage(stage, RenderInput(node=revision.node, tag=revision.tag, rev=revision.rev,
                                           release=release_number))


def next_release_number(session: StageSession) -> int:
    try:
        call_api(session, "ledger", session.ledger.releases)
    except BadInput as exc:
        if "does not exist" in str(exc):
            return 1
        raise
    return session.ledger.next_number


def preflight_vms(stage, accept_new_host_keys: bool) -> None:
    """Reach every host before the first change: an unknown key or a dead host stops us here."""
    from skycap.vm import deploy as vm

    for service in stage.vm.values():
        try:
            vm.preflight(service, accept_new_host_keys=accept_new_host_keys, project_root=stage.project.root)
        except DeployFailed as exc:  # nothing has changed yet: this is bad input, not a failed deploy
            raise BadInput(exc.message, exc.hint) from None


class VmWork:
    """The VM services' part of a deploy: the archive built once, every service unpacked on every host
    (deploy:updating), then each switched (deploy:publishing, or updating with vm_order: before)."""

    def __init__(self, session, state, phases, accept_new_host_keys: bool):
        self.session, self.state, self.phases = session, state, phases
        self.accept_new_host_keys = accept_new_host_keys
        self.deployments = {}  # service name -> vm.Deployment, unpacked and not yet live
        self.folder = None

    def unpack(self) -> None:
        import tempfile
        from pathlib import Path

        from skycap.sources.mercurial import archive
        from skycap.vm import deploy as vm

        session, state = self.session, self.state
        stage, node = session.stage, state.revision.node
        release_name = vm.new_release_name(node)
        self.folder = tempfile.TemporaryDirectory(prefix="skycap-archive-")
        with self.phases.phase("build the release archive once (hg archive)"):
            try:
                tarball = archive(stage.hg_source, node, Path(self.folder.name) / f"{node[:12]}.tar.gz")
            except SkycapError as exc:  # after the first change, not bad input: a failed deploy
                raise DeployFailed(f"building the VM release archive failed: {exc.message}", exc.hint) from None
        for name, service in stage.vm.items():
            session.require_lock()
            with self.phases.phase(f"deploy {name} to {len(service.hosts)} host(s), {service.parallel} at a time: "
                                   f"upload and unpack"):
                deployment = vm.Deployment(service, tarball, node, release_name=release_name,
                                           accept_new_host_keys=self.accept_new_host_keys,
                                           on_event=host_printer(session), project_root=stage.project.root)
                self.guarded(name, deployment.unpack)
                self.deployments[name] = deployment

    def go_live(self) -> None:
        for name, deployment in list(self.deployments.items()):
            self.session.require_lock()
            with self.phases.phase(f"switch {name} on {len(deployment.run.vm.hosts)} host(s), restart, check"):
                del self.deployments[name]
                self.state.vm_results[name] = vm_result_dict(self.guarded(name, deployment.go_live))

    def guarded(self, name: str, work):
        from skycap.vm import deploy as vm

        try:
            return work()
        except (vm.VmDeployFailed, vm.VmInterrupted) as exc:
            self.state.vm_results[name] = vm_result_dict(exc.result)
            raise

    def abandon(self) -> None:
        """The deploy failed with services unpacked and not switched: drop their new release on every host."""
        for name, deployment in list(self.deployments.items()):
            del self.deployments[name]
            try:
                deployment.abandon()
            except Exception as exc:  # noqa: BLE001 - a leftover folder, said; the failure path goes on
                self.session.run.screen.warn(f"could not remove the unpacked release of {name}: {exc}")

    def close(self) -> None:
        for deployment in self.deployments.values():
            deployment.run.close()
        if self.folder is not None:
            self.folder.cleanup()


def after_success(session, state, previous) -> None:
    """Delete what the previous release (a future of it and its gone objects) applied and this one
    does not; trim the ledger."""
    screen = session.run.screen
    try:
        from skycap.cluster.prune import prune_removed

        _, gone, skipped = call_api(session, "ledger", previous.result)
        for problem in skipped:
            screen.warn(f"{problem}: what it applied is not pruned")
        session.require_lock()
        prune_removed(session, gone)
    except SkycapError as exc:
        screen.warn(f"pruning what the previous release applied failed (the deploy itself worked): {exc.message}")
    try:
        session.require_lock()
        call_api(session, "trim the ledger", session.ledger.prune, session.stage.keep_releases, state.releases)
    except SkycapError as exc:
        screen.warn(f"trimming the ledger failed (the deploy itself worked): {exc.message}"
                    + (f"\n    {exc.hint}" if exc.hint else ""))


def previous_and_gone(ledger, state, releases) -> tuple:
    """The last good release before this one that can be read, the (kind, name) of what it applied that
    this one does not, and the good releases skipped because they cannot be read (why, each)."""
    from skycap.cluster.prune import gone_objects

    previous, skipped = readable_good_before(ledger, state.release.number, releases)
    return previous, gone_objects(previous, state.rendered, ledger.namespace), skipped


def auto_rollback(session, state, phases, accept_new_host_keys: bool, previous, c) -> None:
    """Back to `previous` (a future of the last good release, read while the rollout ran), through the
    rollback:* steps and their hooks."""
    run = session.run
    try:
        target, _, skipped = call_api(session, "ledger", previous.result)
    except SkycapError as exc:
        run.screen.fail(f"no automatic rollback: the ledger could not be read ({exc.message})")
        state.error += f"; no automatic rollback: the ledger could not be read ({exc.message})"
        return
    for problem in skipped:
        run.screen.warn(f"{problem}: rolling back past it"
                        + (f", to release {target.number}, the good one before it" if target else ""))
    if target is None:
        run.screen.warn(f"release {state.release.number} is the first good one to be: there is no earlier "
                        f"release to roll back to; the failed release stays in place")
        return
    run.screen.phase(f"roll back to release {target.number} (rev {target.rev}, {str(target.node)[:12]})")
    try:
        work = Rollback(session, phases, timeout=session.stage.rollout_timeout,
                        accept_new_host_keys=accept_new_host_keys, target=target,
                        note=f"automatic rollback after release {state.release.number} failed",
                        failed_release=state.release)
        work.run(c.project_tasks.context(session, flow=work))
        state.rolled_back_to = target.number
    except Exception as exc:  # noqa: BLE001 - the failure path runs to its end: deploy_failed comes next
        exc = as_failure(session, exc)
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
    from skycap.cluster.plan import classify_diff, plan_lines

    plan = classify_diff(state.rendered, text)
    for line in plan_lines(plan):
        run.screen.line(line)
    if session.stage.vm:
        from skycap.vm import deploy as vm

        for service in session.stage.vm.values():
            run.screen.raw(vm.describe_plan(service, vm.plan(service, state.revision.node)))
    state.status = "planned"
    state.plan = plan
    return 0


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
