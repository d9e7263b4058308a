"""`skycap status`: what runs now, per service, against what the current release applied.

A constant number of API calls whatever the number of services: one list per kind, by label."""

from __future__ import annotations

import json

from skycap.cluster import kinds
from skycap.cluster.labels import CONFIG_HASH_ANNOTATION, SERVICE_LABEL, STAGE_LABEL
from skycap.errors import SkycapError
from skycap.session import emit_json, open_stage

SHOWN = (*kinds.WORKLOADS, kinds.of("ConfigMap"))  # what status compares with the current release


def status(run, stage_name: str) -> int:
    session = open_stage(run, stage_name)
    report = collect_status(session)
    if session.stage.environment is not None:
        from skycap.environments.commands import print_environment, status_extra

        report["environment"] = status_extra(session)
    if run.output == "json":
        emit_json(report)
    else:
        print_status(run.screen, report)
        if "environment" in report:
            print_environment(report["environment"])
    return 0


def collect_status(session) -> dict:
    from kubernetes import client

    from skycap.cluster.errors import call_api
    from skycap.cluster.lock import read_lock
    from skycap.session import load_objects

    stage, api = session.stage, session.api
    ledger = session.ledger
    releases = call_api(session, "ledger", ledger.releases)
    current = next((r for r in releases if r.status == "deployed"), None)
    if current is not None:
        current = ledger.get(current.number)
    selector = f"{STAGE_LABEL}={stage.name}"
    live = {}
    for kind in SHOWN:
        api_class, method = kind.lister
        lister = getattr(getattr(client, api_class)(api), method)
        response = call_api(session, kind.name, lister, stage.namespace, label_selector=selector,
                            _preload_content=False)
        for item in json.loads(response.data)["items"]:
            live[(kind.name, item["metadata"]["name"])] = item
    recorded = load_objects(current.manifests) if current and current.manifests else []
    services = {name: service_row(name, current) for name in stage.services}
    for obj in recorded:
        kind, name = obj["kind"], obj["metadata"]["name"]
        service = (obj["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        if service not in services or kind not in (k.name for k in SHOWN):
            continue
        row = services[service]
        item = live.get((kind, name))
        if item is None:
            row["drift"].append(f"{kind}/{name} was deleted")
            continue
        if kind == "ConfigMap":
            if (item.get("data") or {}) != (obj.get("data") or {}):
                row["drift"].append(f"ConfigMap/{name} was edited")
            continue
        fill_workload(row, kind, name, obj, item)
    for (kind, name), item in live.items():
        service = (item["metadata"].get("labels") or {}).get(SERVICE_LABEL)
        if kinds.of(kind) in kinds.WORKLOADS and service in services and not services[service]["objects"]:
            fill_workload(services[service], kind, name, None, item)
    report = {"stage": stage.name, "namespace": stage.namespace,
              "release": release_summary(current), "services": list(services.values()),
              "lock": None, "problems": list(ledger.problems), "vm": {}}
    info = call_api(session, "lock", read_lock, api, stage.namespace, stage.name)
    if info is not None:
        report["lock"] = dict(info.__dict__)
    report["vm"] = vm_status(session)
    if stage.load_balancer is not None:
        from skycap.lb.sync import pool_report

        report["load_balancer"] = pool_report(stage, api)
    return report


def service_row(name: str, current) -> dict:
    return {"service": name, "release": current.number if current else None,
            "rev": current.rev if current else None, "tag": (current.tags or {}).get(name) if current else None,
            "ready": 0, "desired": 0, "objects": [], "drift": []}


def fill_workload(row: dict, kind_name: str, name: str, recorded: dict | None, item: dict) -> None:
    """The row of a service, with what one of its workloads runs (item, as listed) against the release."""
    kind = kinds.of(kind_name)
    row["desired"] += kind.read(item, kind.desired) or 0
    row["ready"] += kind.read(item, kind.ready) or 0
    row["objects"].append(f"{kind_name}/{name}")
    images = [c.get("image") for c in pod_spec(kind, item).get("containers") or []]
    if images and not row.get("image"):
        row["image"] = images[0]
        row["tag"] = images[0].rpartition(":")[2] if ":" in images[0].rsplit("/", 1)[-1] else row["tag"]
    if recorded is None:
        return
    if kind.replicas is not None:
        replicas, wanted = kind.read(item, kind.replicas), kind.read(recorded, kind.replicas, 1)
        if wanted != (replicas or 0):
            row["drift"].append(f"{kind_name}/{name} has {replicas} replicas; the release says {wanted} "
                                "(kubectl scale?)")
    want_images = [c.get("image") for c in pod_spec(kind, recorded).get("containers", [])]
    if want_images and want_images != images:
        row["drift"].append(f"{kind_name}/{name} runs {', '.join(images)}; the release says {', '.join(want_images)}")
    want_hash = config_hash(kind, recorded)
    if want_hash and config_hash(kind, item) != want_hash:
        row["drift"].append(f"{kind_name}/{name} pod template was edited (config hash differs)")


def pod_spec(kind, obj: dict) -> dict:
    return (kind.template_of(obj) or {}).get("spec") or {}


def config_hash(kind, obj: dict) -> str | None:
    return (((kind.template_of(obj) or {}).get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)


def release_summary(release) -> dict | None:
    if release is None:
        return None
    return {"number": release.number, "kind": release.kind, "rev": release.rev, "node": release.node,
            "who": release.who, "finished": release.finished, "note": release.note}


def vm_status(session) -> dict:
    if not session.stage.vm:
        return {}
    from skycap.vm import deploy as vm

    report = {}
    for name, service in session.stage.vm.items():
        try:
            result = vm.status(service, project_root=session.stage.project.root)
            report[name] = {"in_step": result.in_step, "hosts": [dict(h.__dict__) for h in result.hosts]}
        except SkycapError as exc:
            report[name] = {"error": exc.message}
    return report


def print_status(screen, report: dict) -> None:
    release = report["release"]
    if release:
        print(f"stage {report['stage']} (namespace {report['namespace']}): release {release['number']} "
              f"({release['kind']}), rev {release['rev']} ({(release['node'] or '')[:12]}) by {release['who']} "
              f"at {release['finished']}")
    else:
        print(f"stage {report['stage']} (namespace {report['namespace']}): no deployed release")
    rows = [("SERVICE", "READY", "TAG", "RELEASE", "DRIFT")]
    for row in report["services"]:
        rows.append((row["service"], f"{row['ready']}/{row['desired']}", str(row.get("tag") or "-"),
                     str(row["release"] or "-"), "; ".join(row["drift"]) or "none"))
    from skycap.session import print_table

    print_table(rows)
    for name, info in report["vm"].items():
        if "error" in info:
            print(f"vm {name}: {info['error']}")
            continue
        print(f"vm {name}:" + ("" if info["in_step"] else "  HOSTS OUT OF STEP OR UNREACHABLE"))
        for host in info["hosts"]:
            where = f"{host['release'] or 'nothing deployed'} {(host['node'] or '')[:12]}" if host["reachable"] \
                else f"UNREACHABLE: {host['error']}"
            flag = "  <- out of step" if host["out_of_step"] else ""
            print(f"    {host['host']:<30} {where}{flag}")
    if report.get("load_balancer"):
        from skycap.lb.sync import print_pools

        print("load balancer pools:")
        print_pools(report["load_balancer"])
    if report["lock"]:
        lock = report["lock"]
        print(f"LOCKED by {lock['holder']} since {lock['since']}, doing: {lock['purpose']}")
    for problem in report["problems"]:
        screen.warn(problem)
