"""Applying manifests and watching them roll out: ConfigMaps, Secrets and RBAC first, then the rest,
one kubectl call each; the server-side dry run; progress lines and the failure report."""

from __future__ import annotations

import threading

from skycap.cluster import kinds
from skycap.errors import BadInput, DeployFailed, RolloutTimeout
from skycap.session import load_objects



def split_phases(rendered, namespace: str) -> tuple[str, str]:
    """ConfigMaps, Secrets, ServiceAccounts and RBAC first; everything else second.

    The stage's own Namespace is left out: it exists by now (create_namespace made it, labelled,
    before the checks), and patching it would cost kubectl a download and parse of the API schema."""
    from skycap.yamlio import json_stream

    objects = [m for m in rendered.manifests if not (m.kind == "Namespace" and m.name == namespace)]
    early = [m.obj for m in objects if kinds.of(m.kind).applied_early]
    rest = [m.obj for m in objects if not kinds.of(m.kind).applied_early]
    return json_stream(early), json_stream(rest)


def server_dry_run(session, rendered) -> None:
    from skycap.errors import CommandFailed
    from skycap.yamlio import json_stream

    try:
        session.kubectl.apply(json_stream(m.obj for m in rendered.manifests), server_dry_run=True)
    except CommandFailed as exc:
        raise BadInput(f"the cluster rejected the rendered manifests (server-side dry run): "
                       f"{rejection_text(exc, rendered)}",
                       "nothing was applied; fix the template named above and see: skycap render STAGE rev=REV") \
            from None


def rejection_text(exc, rendered) -> str:
    """kubectl's complaint, with the template each named object came from."""
    from skycap.cluster.kubectl import filter_output

    lines = filter_output(exc.stderr).shown or [exc.stderr.strip()]
    text = "\n  ".join(lines)
    for manifest in rendered.manifests:
        needle = f'"{manifest.name}"'
        if needle in text and manifest.source != "(skycap)":
            text += f"\n  ({manifest.ref()} comes from templates/{manifest.source}, service {manifest.service})"
    return text


def apply_and_watch(session, state, phases, *, timeout: float, since) -> None:
    apply_manifests(session, state, phases)
    watch(session, state, phases, timeout=timeout, since=since)


def apply_manifests(session, state, phases) -> None:
    early, rest = split_phases(state.rendered, session.stage.namespace)
    with phases.phase("apply ConfigMaps, Secrets and RBAC"):
        if early:
            state.applied += apply_objects(session, early)
    with phases.phase("apply workloads and services"):
        if rest:
            state.applied += apply_objects(session, rest)


def apply_objects(session, manifests: str) -> list[str]:
    """Manifests that passed the server-side dry run, or that a release applied before: not schema-checked again."""
    from skycap.errors import CommandFailed

    session.require_lock()
    try:
        return session.kubectl.apply(manifests, validate=False)
    except CommandFailed as exc:
        from skycap.cluster.kubectl import filter_output

        shown = "\n  ".join(filter_output(exc.stderr).shown) or exc.stderr.strip()
        raise DeployFailed(f"kubectl apply failed: {shown}") from None
    except BadInput as exc:
        raise DeployFailed(f"applying failed: {exc.message}") from None


def targets_of(rendered):
    from skycap.cluster.rollout import Target

    return [Target(kind=m.kind, name=m.name, service=m.service or "") for m in rendered.manifests
            if kinds.of(m.kind).followed]


def watch(session, state, phases, *, timeout: float, since) -> None:
    from skycap.cluster.rollout import failure_report, wait_for_rollout

    screen = session.run.screen
    progress = ProgressPrinter(screen)
    cancel = threading.Event()
    with phases.phase(f"wait for the rollout (timeout {timeout:g} s)"):
        try:
            result = wait_for_rollout(session.api, session.stage.namespace, targets_of(state.rendered),
                                      timeout=timeout, since=since, on_change=progress.update, cancel=cancel,
                                      lock_lost=session.lock_lost)
        except KeyboardInterrupt:
            cancel.set()
            raise
        finally:
            progress.done()
    state.result = result
    session.require_lock()  # the watch stops early when the lock is lost
    session.run.log.write("skycap", f"rollout finished: {'succeeded' if result.succeeded else 'not succeeded'}")
    if result.succeeded:
        return
    screen.raw(failure_report(result))
    failing = "; ".join(sorted({f"{o.service or o.name} ({o.reason})" if o.reason else (o.service or o.name)
                                for o in result.outcomes if o.state in ("failed", "timeout")}))
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
        from skycap.cluster.rollout import render_progress

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


def rendered_from_manifests(text: str):
    from skycap.cluster.labels import SERVICE_LABEL
    from skycap.project.render import Manifest, Rendered

    return Rendered([Manifest(obj, "(release)", (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL))
                     for obj in load_objects(text)])
