"""`skycap env create | list | extend | destroy | gc`, and what a deploy into an environment adds."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from skycap.cluster.errors import call_api
from skycap.environments.lookup import (
    Cluster,
    find_environment,
    find_orphaned_environment,
    not_found,
    project_clusters,
    read_definition,
)
from skycap.environments.naming import check_name, human_duration, parse_duration, stage_name
from skycap.environments.stored import (
    DEFINITION,
    ENVIRONMENT_LABEL,
    SOURCE_LABEL,
    SOURCE_NAMESPACE_LABEL,
    Environment,
    environment_stage,
    parse_time,
    utc_iso,
)
from skycap.errors import BadInput, RolloutTimeout, SkycapError, StageLocked
from skycap.session import StageSession, emit_json, lock_ttl, print_table

ORPHAN_GRACE = 300  # seconds: an environment namespace without its definition, older than this, is an orphan
POLL = 0.5
GC_PARALLEL = 8  # deletions begun at once; each is a few API calls under its own stage lock


class DestroyTimeout(RolloutTimeout):
    """The namespace was still there when the wait ran out (exit 4, as every timeout)."""


# -- create ---------------------------------------------------------------------------------------------


def create(run, name: str, source: str, rev: str, *, ttl: str = "8h", sets=(), replace=False, with_vm=False,
           keep_on_failure=False, timeout=None, image_check=True, accept_new_host_keys=False) -> int:
    from skycap.cluster.ledger import who_am_i
    from skycap.flow.deploy import deploy

    check_name(name)
    seconds = parse_duration(ttl)
    project = run.project
    for taken in {name, stage_name(name)}:
        if project.has_stage_file(taken):
            raise BadInput(f"{name} is (or reads as) stage {taken} (stages/{taken}.yaml), so it cannot be an "
                           f"environment's name", "pick another name, e.g. the branch name")
    if not project.has_stage_file(source):
        raise project.unknown_stage(source, " (--from takes a stage with a file under stages/)")
    source_stage = project.load_stage(source)
    now = time.time()
    env = Environment(name=name, stage=source, source_namespace=source_stage.namespace, ttl=seconds,
                      owner=who_am_i(), created=utc_iso(now), expires=utc_iso(now + seconds),
                      overrides=list(sets), with_vm=with_vm)
    stage = environment_stage(project, env)  # every override and the stage file checked here: exit 2
    session = StageSession(run, stage)
    run.log_for(stage.name)
    existing, cluster, _problems = find_environment(project, name)
    if existing is not None:
        if not replace:
            raise BadInput(f"environment {name} exists (from stage {existing.stage}, namespace {existing.namespace}, "
                           f"owner {existing.owner})", f"--replace destroys and re-creates it; "
                           f"or skycap env extend {name} --ttl 8h; skycap deploy {name} rev=REV")
        run.screen.phase(f"--replace: destroy environment {name} (namespace {existing.namespace})")
        destroy_namespace(cluster.api, existing.namespace, existing.stage_name)
    run.screen.phase(f"create environment {name} from stage {source}: namespace {env.namespace}, "
                     f"expires in {human_duration(seconds)}")
    make_namespace(session, env)
    project.environments[name] = project.environments[stage.name] = stage
    try:
        code = deploy(run, stage.name, rev, timeout=timeout, rollback=False, image_check=image_check,
                      accept_new_host_keys=accept_new_host_keys)
    except BaseException:
        if keep_on_failure:
            run.screen.warn(f"--keep-on-failure: environment {name} stays; remove it with skycap env destroy {name}")
        else:
            remove_failed(session, env)
        raise
    for line in url_lines(url_rows(session.api, stage)):
        run.screen.line(line)
    run.screen.ok(f"environment {name} is ready: skycap deploy {name} rev=...; skycap env destroy {name}")
    return code


def make_namespace(session, env: Environment) -> None:
    """Create the namespace, then the definition in it. Of two creates of the same name at once, exactly
    one creates the namespace; the other is told it exists and changes nothing."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(session.api)
    try:
        core.create_namespace({"metadata": {"name": env.namespace, "labels": env.labels()}}, _preload_content=False)
    except ApiException as exc:
        if exc.status == 409:
            raise BadInput(f"environment {env.name} exists or is being created right now: namespace "
                           f"{env.namespace} exists", f"see skycap env list; --replace destroys and re-creates it")
        call_api(session, "create namespace", _raise, exc)
    try:
        call_api(session, "create the environment's definition", core.create_namespaced_config_map,
                 env.namespace, env.config_map(), _preload_content=False)
    except BaseException:
        remove_failed(session, env)
        raise


def _raise(exc):
    raise exc


def remove_failed(session, env: Environment) -> None:
    """A create that failed leaves nothing: delete the namespace (with all it held) and wait until it is gone."""
    screen = session.run.screen
    try:
        destroy_namespace(session.api, env.namespace, env.stage_name, lock=False, timeout=120)
        screen.line(f"    environment {env.name} removed again (namespace {env.namespace} deleted): nothing is left")
    except SkycapError as exc:
        screen.warn(f"could not remove environment {env.name} after the failure: {exc.message}; "
                    f"skycap env destroy {env.name} (or skycap env gc) finishes it")


# -- destroy ----------------------------------------------------------------------------------------------


def destroy(run, name: str, timeout: float = 120) -> int:
    project = run.project
    if project.has_stage_file(name):
        raise BadInput(f"{name} is a stage (stages/{name}.yaml), not an environment: env destroy never deletes a "
                       f"stage", "skycap env list shows the environments")
    check_name(name)
    env, cluster = environment_to_destroy(project, name)
    run.log_for(env.stage_name)
    if not project.has_stage_file(env.stage):
        run.screen.warn(f"environment {name} was made from stage {env.stage}, which has no file here any more: "
                        f"destroying it as its definition in namespace {env.namespace} says")
    run.screen.phase(f"destroy environment {name}: take its lock, delete namespace {env.namespace}, wait until gone")
    started = time.monotonic()
    destroy_namespace(cluster.api, env.namespace, env.stage_name, timeout=timeout)
    run.screen.ok(f"environment {name} destroyed (namespace {env.namespace} gone in "
                  f"{time.monotonic() - started:.1f} s)")
    return 0


def environment_to_destroy(project, name: str) -> tuple[Environment, Cluster]:
    """Environment NAME and its cluster, from its definition in the cluster: its source stage's file is
    not needed (it may have been deleted, or broken, since)."""
    env, cluster, problems = find_environment(project, name)
    if env is not None:
        return env, cluster
    orphans = find_orphaned_environment(project, name)
    if len(orphans) > 1:
        where = "; ".join(f"namespace {env.namespace} on {cluster.describe()}" for env, cluster in orphans)
        raise BadInput(f"{len(orphans)} environments {name} were made from stages that have no file here any "
                       f"more ({where})", "delete the right one with kubectl delete namespace NAME")
    if orphans:
        return orphans[0]
    raise not_found(project, name, problems)


def destroy_namespace(api, namespace: str, stage_name: str, *, lock=True, wait=True, timeout: float = 120) -> str:
    """Delete an environment's namespace under its stage lock (a deploy running there: StageLocked, exit 3),
    then wait until it is gone. Refuses a namespace not labelled as that environment's. Returns
    'deleted', 'terminating' (someone else's deletion was under way) or 'gone'."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    standing = read_namespace(core, namespace)
    if standing is None:
        return "gone"
    labels = standing["metadata"].get("labels") or {}
    if labels.get(ENVIRONMENT_LABEL) != stage_name:
        raise BadInput(f"namespace {namespace} is not labelled as environment {stage_name} "
                       f"({ENVIRONMENT_LABEL}); Skycap did not make it, and leaves it alone")
    if (standing.get("status") or {}).get("phase") == "Terminating":
        outcome = "terminating"
        _end_pods(core, namespace)  # whoever began it may have left the pods their grace period
    else:
        outcome = _locked_delete(api, core, standing, stage_name) if lock else _delete(core, standing)
    if wait:
        wait_gone(core, [namespace], timeout)
    return outcome


def _locked_delete(api, core, standing: dict, stage_name: str) -> str:
    from kubernetes.client.rest import ApiException

    from skycap.cluster.lock import StageLock

    namespace = standing["metadata"]["name"]
    lock = StageLock(api, namespace, stage_name, purpose="env destroy", ttl=lock_ttl())
    try:
        lock.acquire()
    except ApiException as exc:
        if exc.status == 403 and "terminat" in str(exc.body):
            return "terminating"  # another run's deletion began between our read and our lock
        raise
    try:
        return _delete(core, standing)
    finally:
        lock.release()


def _delete(core, standing: dict) -> str:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    metadata = standing["metadata"]
    try:
        core.delete_namespace(metadata["name"], _preload_content=False, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=metadata["uid"]), propagation_policy="Background"))
    except ApiException as exc:
        if exc.status in (404, 409):
            return "gone"
        raise
    _end_pods(core, metadata["name"])
    return "deleted"


def _end_pods(core, namespace: str) -> None:
    """An environment is disposable: its pods go now, not after their grace period. Otherwise the
    namespace controller, finding pods still terminating, looks again only after half the longest
    grace period (16 s for the default 30 s). The namespace is terminating: no new pod can start."""
    from kubernetes.client.rest import ApiException

    try:
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0, _preload_content=False)
    except ApiException:
        pass  # the namespace controller deletes them anyway, only later


def read_namespace(core, name: str) -> dict | None:
    from kubernetes.client.rest import ApiException

    try:
        return json.loads(core.read_namespace(name, _preload_content=False).data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_gone(core, namespaces: list[str], timeout: float) -> None:
    """Until every one of the namespaces is gone (one labelled listing per poll); DestroyTimeout naming
    what holds those that stay: the namespace's finalizers and its conditions (content with finalizers)."""
    waiting = set(namespaces)
    deadline = time.monotonic() + timeout
    while waiting:
        listed = json.loads(core.list_namespace(label_selector=ENVIRONMENT_LABEL, _preload_content=False).data)
        present = {item["metadata"]["name"]: item for item in listed.get("items", [])}
        waiting &= set(present)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise DestroyTimeout("; ".join(holding(present[name]) for name in sorted(waiting)),
                                 "the deletion goes on in the cluster; remove the finalizers' owners' blockers "
                                 "(or the finalizers), then run skycap env gc to see it finish")
        time.sleep(POLL)


def holding(namespace: dict) -> str:
    """What the namespace controller says still holds it (content with finalizers, say), else its finalizers."""
    name = namespace["metadata"]["name"]
    reasons = [condition.get("message") or condition.get("reason") or condition.get("type")
               for condition in (namespace.get("status") or {}).get("conditions") or []
               if condition.get("status") == "True"]
    if not reasons:
        finalizers = ", ".join((namespace.get("spec") or {}).get("finalizers") or []) or "none"
        reasons = [f"its content is still being deleted (namespace finalizers: {finalizers})"]
    return f"namespace {name} is still terminating; held by: {'; '.join(reasons)}"


# -- extend, and a deploy pushing the expiry out ----------------------------------------------------------


def extend(run, name: str, ttl: str) -> int:
    seconds = parse_duration(ttl)
    if run.project.has_stage_file(name):
        raise BadInput(f"{name} is a stage, not an environment: it does not expire")
    stage = run.project.load_stage(check_name(name))
    expires = utc_iso(time.time() + seconds)
    write_definition(StageSession(run, stage), stage.environment, {"expires": expires, "ttl": str(seconds)})
    run.screen.ok(f"environment {name} now expires in {human_duration(seconds)} ({expires}); each deploy "
                  f"pushes it out by {human_duration(seconds)}")
    return 0


def after_deploy(session, state) -> None:
    """A deploy into an environment pushes its expiry out by its TTL (an environment in use does not die)
    and records the rev it now runs. Never fails the deploy."""
    env = session.stage.environment
    changes = {"expires": utc_iso(time.time() + env.ttl)}
    if state.status == "deployed" and state.revision is not None:
        changes.update(rev=state.rev, node=state.revision.node)
    try:
        write_definition(session, env, changes)
    except SkycapError as exc:
        session.run.screen.warn(f"could not push out the expiry of environment {env.name}: {exc.message}")


def write_definition(session, env: Environment, changes: dict) -> None:
    from kubernetes import client

    call_api(session, "update the environment's definition", client.CoreV1Api(session.api).patch_namespaced_config_map,
             DEFINITION, env.namespace, {"data": changes}, _preload_content=False)


# -- list ---------------------------------------------------------------------------------------------


def list_environments(run) -> int:
    rows = []
    clusters, problems = project_clusters(run.project)
    for cluster in clusters:
        try:
            rows.extend(describe_cluster(cluster))
        except Exception as exc:  # noqa: BLE001 - one unreachable cluster must not hide the others
            problems.append(f"{cluster.describe()}: {reason(exc)}")
    rows.sort(key=lambda row: row["created"])
    if run.output == "json":
        emit_json(rows)  # type: ignore[arg-type] - a list: the contract's `env list --output json`
    elif rows:
        table = [("NAME", "STAGE", "NAMESPACE", "REV", "OWNER", "AGE", "EXPIRES IN", "STATE")]
        for row in rows:
            table.append((row["name"], row["stage"], row["namespace"], row["rev"] or "-", row["owner"],
                          human_duration(time.time() - parse_time(row["created"])),
                          human_duration(row["expires_in"]), row["state"]))
        print_table(table)
    else:
        run.screen.line("no environments (skycap env create NAME --from STAGE rev=REV)")
    for problem in problems:
        run.screen.warn(problem)
    return 0


def describe_cluster(cluster: Cluster) -> list[dict]:
    from kubernetes import client

    from skycap.cluster.labels import MANAGED_BY, NODE_ANNOTATION, STAGE_LABEL

    namespaces, definitions = environment_namespaces(cluster)
    apps = client.AppsV1Api(cluster.api)
    workloads: dict[str, list[dict]] = {}
    for lister in (apps.list_deployment_for_all_namespaces, apps.list_stateful_set_for_all_namespaces):
        listed = json.loads(lister(label_selector=f"{MANAGED_BY}=skycap,{STAGE_LABEL}",
                                   _preload_content=False).data)
        for item in listed.get("items", []):
            workloads.setdefault(item["metadata"]["namespace"], []).append(item)
    rows = []
    for name, namespace in namespaces.items():
        env = definitions.get(name)
        if env is None or not cluster.owns(env.stage, env.source_namespace):
            continue
        live = workloads.get(name, [])
        nodes = {(w["metadata"].get("annotations") or {}).get(NODE_ANNOTATION) for w in live} - {None}
        rev = env.rev if env.node and nodes == {env.node} else ", ".join(sorted(n[:12] for n in nodes))
        rows.append({"name": env.name, "stage": env.stage, "namespace": name, "rev": rev,
                     "node": env.node if nodes == {env.node} else (sorted(nodes)[0] if len(nodes) == 1 else None),
                     "owner": env.owner, "created": env.created, "expires": env.expires,
                     "expires_in": round(env.seconds_left), "ttl": env.ttl, "overrides": env.overrides,
                     "state": state_of(namespace, env, live)})
    return rows


def state_of(namespace: dict, env: Environment, workloads: list[dict]) -> str:
    if (namespace.get("status") or {}).get("phase") == "Terminating":
        return "destroying"
    if env.seconds_left <= 0:
        return "expired"
    ready = bool(workloads) and all((w.get("status") or {}).get("readyReplicas", 0) >= (w.get("spec") or {}).get(
        "replicas", 1) for w in workloads)
    return "ready" if ready else "failing"


def environment_namespaces(cluster: Cluster) -> tuple[dict[str, dict], dict[str, Environment]]:
    """The cluster's environment namespaces by name, and the definitions found in them: one GET each, side
    by side, so the gc CronJob's role reads no ConfigMap but the definitions (list ConfigMaps could not
    be limited to them)."""
    from kubernetes import client

    core = client.CoreV1Api(cluster.api)
    listed = json.loads(core.list_namespace(label_selector=ENVIRONMENT_LABEL, _preload_content=False).data)
    namespaces = {item["metadata"]["name"]: item for item in listed.get("items", [])}

    def definition(name):
        try:
            return read_definition(cluster.api, name)
        except (KeyError, ValueError):
            return None  # edited by hand into something unreadable: gc treats the namespace as an orphan
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = dict(zip(namespaces, pool.map(definition, namespaces)))
    return namespaces, {name: env for name, env in found.items() if env is not None}


def reason(exc: BaseException) -> str:
    if isinstance(exc, SkycapError):
        return exc.message
    from skycap.cluster.errors import short_reason

    return short_reason(exc)


# -- gc -----------------------------------------------------------------------------------------------


def gc(run, *, timeout: float = 120, in_cluster: bool = False) -> int:
    """Destroy every expired environment of the project (with --in-cluster: of the cluster), and finish
    deletions an earlier run began. Each environment is destroyed under its stage lock, so runs at the
    same time, and deploys, do not fight: a locked one is skipped and the next run retries it."""
    if in_cluster:
        clusters, problems = [in_cluster_cluster()], []
    else:
        clusters, problems = project_clusters(run.project)
    failed = 0
    for cluster in clusters:
        try:
            failed += gc_cluster(run.screen, cluster, timeout)
        except DestroyTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - one unreachable cluster must not stop the others
            run.screen.fail(f"{cluster.describe()}: {reason(exc)}")
            failed += 1
    for problem in problems:
        run.screen.warn(problem)
    return 1 if failed else 0  # a gc that could not do its job must not look like one that did


def gc_cluster(screen, cluster: Cluster, timeout: float) -> int:
    from kubernetes import client

    namespaces, definitions = environment_namespaces(cluster)
    doomed = []
    for name, namespace in sorted(namespaces.items()):
        verdict = gc_verdict(cluster, namespace, definitions.get(name))
        if verdict is not None:
            doomed.append((name, namespace["metadata"]["labels"][ENVIRONMENT_LABEL], *verdict))
    # Each deletion is a handful of round trips (read, lock, delete, release); started side by side,
    # twenty expired environments reach the namespace controller at once, not one after another.
    with ThreadPoolExecutor(max_workers=GC_PARALLEL) as pool:
        outcomes = list(pool.map(lambda item: _begin_deletion(cluster, item[0], item[1]), doomed))
    waiting, failed = [], 0
    for (name, _, label, why), (outcome, problem) in zip(doomed, outcomes):
        if isinstance(problem, StageLocked):
            screen.warn(f"skipped {label}: {problem.message}; the next gc retries it")
        elif problem is not None:
            screen.fail(f"{label}: {reason(problem)}")
            failed += 1
        else:
            action = "deleting" if outcome == "deleted" else "already being deleted"
            screen.line(f"    {label} ({why}): namespace {name} {action}")
            waiting.append((label, name))
    if waiting:
        wait_gone(client.CoreV1Api(cluster.api), [name for _, name in waiting], timeout)
        for label, name in waiting:
            screen.ok(f"destroyed {label} (namespace {name} gone)")
    return failed


def _begin_deletion(cluster: Cluster, namespace: str, stage_name: str) -> tuple[str | None, Exception | None]:
    """(outcome, None) once the namespace's deletion is under way, or (None, why it could not be)."""
    try:
        return destroy_namespace(cluster.api, namespace, stage_name, wait=False), None
    except Exception as exc:  # noqa: BLE001 - reported by the caller, the others go on
        return None, exc


def gc_verdict(cluster: Cluster, namespace: dict, env: Environment | None) -> tuple[str, str] | None:
    """(label, why) when gc must destroy or finish destroying the namespace; None to leave it."""
    metadata = namespace["metadata"]
    labels = metadata.get("labels") or {}
    if not cluster.owns(labels.get(SOURCE_LABEL, ""), labels.get(SOURCE_NAMESPACE_LABEL, "")):
        return None
    label = f"environment {env.name if env else labels[ENVIRONMENT_LABEL]}"
    if (namespace.get("status") or {}).get("phase") == "Terminating":
        return label, "its deletion was begun by an earlier run"
    if env is None:
        age = time.time() - parse_time(metadata.get("creationTimestamp", ""))
        return (label, f"no definition, made {human_duration(age)} ago by a create that died") \
            if age > ORPHAN_GRACE else None
    if env.seconds_left <= 0:
        return label, f"expired {human_duration(env.seconds_left)}"
    return None


def in_cluster_cluster() -> Cluster:
    """The cluster the gc CronJob runs in, through its service account; every environment there is its job."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise BadInput(f"--in-cluster: not running in a pod with a service account: {exc}") from None
    return InCluster(_api=client.ApiClient(configuration))


class InCluster(Cluster):
    def describe(self) -> str:
        return "this cluster (in-cluster service account)"

    def owns(self, source_stage: str, source_namespace: str) -> bool:
        return bool(source_stage)


# -- URLs ---------------------------------------------------------------------------------------------


def service_urls(api, namespace: str) -> list[tuple[str, str]]:
    """(service, URL) for every NodePort of the namespace's Services, at the first Ready node's InternalIP."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    services = json.loads(core.list_namespaced_service(namespace, _preload_content=False).data).get("items", [])
    ports = [(svc["metadata"]["name"], port) for svc in services for port in (svc.get("spec") or {}).get("ports", [])
             if port.get("nodePort")]
    if not ports:
        return []
    address = node_address(core)
    if address is None:
        return []
    urls = []
    for name, port in ports:
        scheme = "https" if port.get("port") == 443 or str(port.get("name", "")).startswith("https") else "http"
        urls.append((name, f"{scheme}://{address}:{port['nodePort']}/"))
    return urls


def node_address(core) -> str | None:
    nodes = json.loads(core.list_node(_preload_content=False).data).get("items", [])

    def ready(node):
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (node.get("status") or {}).get("conditions") or [])
    for node in sorted(nodes, key=lambda n: not ready(n)):
        for address in (node.get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return address["address"]
    return None


def url_rows(api, stage) -> list[dict]:
    """Each Service port's URL through its NodePort, then each pool's through the load balancer, where
    the stage file gives the pool a `frontend`."""
    rows = [{"service": s, "url": u, "via": "nodeport"} for s, u in service_urls(api, stage.namespace)]
    balancer = stage.load_balancer
    rows += [{"service": spec.service, "url": spec.frontend, "via": "load_balancer", "pool": spec.pool}
             for spec in (balancer.pools.values() if balancer else []) if spec.frontend]
    return rows


def url_lines(rows: list[dict]) -> list[str]:
    return [f"    {row['service']}: {row['url']}"
            + (f" (load balancer, pool {row['pool']})" if row.get("via") == "load_balancer" else "") for row in rows]


def status_extra(session) -> dict:
    """What `skycap status` adds for an environment: where it came from, when it expires, its URLs."""
    env = session.stage.environment
    return {"name": env.name, "stage": env.stage, "owner": env.owner, "created": env.created,
            "expires": env.expires, "expires_in": round(env.seconds_left), "urls": url_rows(session.api, session.stage)}


def print_environment(info: dict) -> None:
    print(f"environment {info['name']} from stage {info['stage']}, owner {info['owner']}, expires in "
          f"{human_duration(info['expires_in'])} ({info['expires']})")
    for line in url_lines(info["urls"]):
        print(line)
