"""What the running-service commands act on: a stage's service by name, then its pods or its hosts.

Pods are found by Skycap's labels on the pod template (skycap.io/stage and skycap.io/service), never
by guessing from names."""

from __future__ import annotations

import json

from skycap.cluster.errors import call_api
from skycap.cluster.labels import DEPLOYMENT_REVISION, SERVICE_LABEL, STAGE_LABEL
from skycap.errors import BadInput, SkycapError
from skycap.record import Record



class ServiceRef(Record):
    name: str
    kubernetes: object = None  # project.Service, for a service of the cluster
    vm: object = None          # project.VmService, for a service on VM hosts


def find_service(stage, name: str) -> ServiceRef:
    if name in stage.services:
        return ServiceRef(name, kubernetes=stage.services[name])
    if name in stage.vm:
        return ServiceRef(name, vm=stage.vm[name])
    known = [*sorted(stage.services), *(f"{vm} (vm)" for vm in sorted(stage.vm))]
    raise BadInput(f"stage {stage.name} has no service {name!r}", f"its services: {', '.join(known)}")


def selector(stage, service: str) -> str:
    return f"{STAGE_LABEL}={stage.name},{SERVICE_LABEL}={service}"


def list_pods(session, service: str) -> list[dict]:
    """The service's pods, as the API returns them (plain dicts), sorted by name."""
    from skycap.commands.running.rest import api_get_json

    pods = api_get_json(session, "list pods", f"/api/v1/namespaces/{session.stage.namespace}/pods",
                        {"labelSelector": selector(session.stage, service)})
    return sorted(pods["items"], key=lambda pod: pod["metadata"]["name"])


def short_name(pod: dict, service: str) -> str:
    """web-5d8f7c9b4-x2k9p -> x2k9p: the pod's own part, without the service and the template hash."""
    name = pod["metadata"]["name"]
    template_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
    if template_hash:
        name = name.replace(f"-{template_hash}-", "-", 1)
    rest = name.removeprefix(f"{service}-")
    return rest if rest and not rest.isdigit() else name  # a StatefulSet's web-0 stays web-0


def source_name(pod: dict, service: str, container: str) -> str:
    """The prefix of a pod's lines: its short name, and the container when the pod has several."""
    containers = (pod.get("spec") or {}).get("containers") or []
    short = short_name(pod, service)
    return f"{short}/{container}" if len(containers) > 1 else short


def is_running(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")


def is_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return is_running(pod) and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def of_current_release(session, service: str, pods: list[dict]) -> list[dict]:
    """The pods of each Deployment's newest ReplicaSet (what the current release made); pods that no
    ReplicaSet owns (StatefulSet, DaemonSet) all count."""
    from kubernetes import client

    apps = client.AppsV1Api(session.api)
    response = call_api(session, "list replicasets", apps.list_namespaced_replica_set, session.stage.namespace,
                        label_selector=selector(session.stage, service), _preload_content=False)
    newest: dict[str, tuple[int, str]] = {}  # deployment uid -> (revision, replicaset name)
    for rs in json.loads(response.data)["items"]:
        owner = _controller(rs)
        revision = int((rs["metadata"].get("annotations") or {}).get(DEPLOYMENT_REVISION, "0") or 0)
        if owner and (owner not in newest or revision > newest[owner][0]):
            newest[owner] = (revision, rs["metadata"]["name"])
    current = {name for _, name in newest.values()}
    return [pod for pod in pods
            if (pod["metadata"].get("ownerReferences") or [{}])[0].get("kind") != "ReplicaSet"
            or _owner_name(pod) in current]


def _controller(obj: dict) -> str | None:
    return next((ref["uid"] for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")), None)


def _owner_name(obj: dict) -> str | None:
    return next((ref["name"] for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")), None)


def no_pods(session, service: str, pods: list[dict], wanted: str) -> BadInput:
    """The service has no pod of the kind wanted: say so, what pods it has, and the last release's state."""
    stage = session.stage
    found = "; ".join(describe_pod(pod, service) for pod in pods[:5]) or "none"
    return BadInput(f"service {service} of stage {stage.name} has no {wanted} pod (its pods: {found}); "
                    f"{last_release(session)}", f"see `skycap status {stage.name}` and `skycap history {stage.name}`")


def describe_pod(pod: dict, service: str) -> str:
    """"x2k9p Pending: ImagePullBackOff" - the pod's phase and the first reason a container gives."""
    status = pod.get("status") or {}
    words = status.get("phase") or "Unknown"
    if pod["metadata"].get("deletionTimestamp"):
        words = "Terminating"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
        if reason:
            words += f": {reason}"
            break
    return f"{short_name(pod, service)} {words}"


def last_release(session) -> str:
    try:
        releases = call_api(session, "ledger", session.ledger.releases)
    except SkycapError as exc:
        return f"the ledger could not be read ({exc.message})"
    if not releases:
        return f"stage {session.stage.name} has no release yet"
    release = releases[0]
    note = f": {release.note[:300]}" if release.note else ""
    return f"the last release, {release.number} ({release.kind} rev={release.rev}), is {release.status}{note}"
