"""`skycap doctor STAGE`, as `cap doctor`: is the stage reachable, and may I deploy it?

One line per check, ok or what is wrong and how to fix it. The checks run side by side (the
API's, Mercurial's, the registry's and the hosts' are network round trips); the report keeps a
fixed order. A check that needs another one that failed (the API for the rights, say) is
skipped, not failed again. Exit 0 when nothing failed, 2 otherwise; warnings (a locked stage, a
kubectl far from the server's version) do not fail."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from skycap.cluster import kinds
from skycap.errors import SkycapError
from skycap.session import emit_json

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
MARKS = {OK: "ok", WARN: "warn", FAIL: "FAIL", SKIPPED: "skip"}
PLACEHOLDER_NODE = "0" * 40
ACCESS_REVIEWERS = 16

# What deploy, rollback and status do in the namespace besides applying the release's kinds:
# (group, resource, verb, why).
NEEDED = [
    *(("", "secrets", verb, "the ledger") for verb in ("get", "list", "create", "patch", "delete", "deletecollection")),
    *(("coordination.k8s.io", "leases", verb, "the stage lock") for verb in ("get", "create", "update", "delete")),
    *((group, resource, verb, "watching the rollout") for group, resource in (
        ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"),
        ("batch", "jobs"), ("", "pods"), ("", "services"), ("", "endpoints")) for verb in ("list", "watch")),
    ("", "events", "list", "the failure report"),
    ("", "pods/log", "get", "the failure report"),
    ("", "configmaps", "list", "status"),
]
APPLY_VERBS = ("get", "create", "patch", "delete")


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def doctor(run, stage_name: str) -> int:
    started = time.monotonic()
    checks = Doctor(run, stage_name).run()
    failed = any(check.status == FAIL for check in checks)
    if run.output == "json":
        emit_json({"stage": stage_name, "ok": not failed, "seconds": round(time.monotonic() - started, 3),
                   "checks": [asdict(check) for check in checks]})
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            print(f"{MARKS[check.status]:<4}  {check.name:<{width}}  {check.detail}")
            if check.fix:
                print(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    return 2 if failed else 0


def failed_check(name: str, exc: BaseException) -> Check:
    if isinstance(exc, SkycapError):
        return Check(name, FAIL, exc.message, exc.hint or "")
    return Check(name, FAIL, f"{type(exc).__name__}: {exc}")


class Doctor:
    def __init__(self, run, stage_name: str):
        self.run_context = run
        self.stage_name = stage_name
        self.stage = None
        self.api = None
        self.version: dict | None = None  # the API server's /version
        self.kubectl_minor: int | None = None
        self.rendered = None  # the templates rendered for a placeholder revision: the kinds a deploy applies
        self.rendered_ready = threading.Event()

    def run(self) -> list[Check]:
        try:
            self.stage = self.run_context.project.load_stage(self.stage_name)
        except SkycapError as exc:
            return [failed_check("stage file", exc)]
        stage = self.stage
        first = Check("stage file", OK, f"{stage.path} loads: {len(stage.services)} service(s), "
                                        f"{len(stage.vm)} VM service(s)")
        with ThreadPoolExecutor(max_workers=8) as pool:
            # Started first: subprocesses, which need none of the libraries imported below.
            kubectl, hg = pool.submit(self.kubectl_version), pool.submit(self.mercurial)
            import requests  # noqa: F401 - imported once here: two threads importing it at once can break it
            from kubernetes import client  # noqa: F401

            cluster, registry, hosts = (pool.submit(self.cluster_checks), pool.submit(self.registry),
                                        pool.submit(self.vm_hosts))
            try:
                files = [self.templates(), self.tasks_file()]
            finally:
                self.rendered_ready.set()
            api_checks = cluster.result()
            return [first, *files, *api_checks[:3], self.skew(kubectl.result()), *api_checks[3:], hg.result(),
                    registry.result(), *hosts.result()]

    def skew(self, kubectl: Check) -> Check:
        """The kubectl line, with how far kubectl is from the server. kubectl supports one minor version
        either side; Skycap uses it for apply, diff and exec only, which work further apart, so a
        bigger skew is a warning."""
        server, client = _minor(self.version or {}), self.kubectl_minor
        if kubectl.status != OK or server is None or client is None:
            return kubectl
        apart = abs(client - server)
        kubectl.detail += f"; server {self.version.get('gitVersion')}: {apart} minor version(s) apart"
        if apart > 1:
            kubectl.status = WARN
            kubectl.fix = ("kubectl supports one minor version either side of the server; if apply or exec "
                           "misbehave, install one that close and point SKYCAP_KUBECTL at it")
        return kubectl

    # ----- files -----

    def templates(self) -> Check:
        from skycap.project.render import RenderInput, render_stage

        stage = self.stage
        if not stage.services:
            return Check("templates", OK, "no Kubernetes services, no templates")
        try:
            self.rendered = render_stage(stage, RenderInput(node=PLACEHOLDER_NODE, tag="doctor", rev="doctor",
                                                            release=0))
        except SkycapError as exc:
            return failed_check("templates", exc)
        names = sorted({service.template for service in stage.services.values()})
        return Check("templates", OK, f"{len(names)} template(s) render: {len(self.rendered.manifests)} objects")

    def tasks_file(self) -> Check:
        from skycap.flow.hooks import ProjectTasks

        path = self.stage.project.tasks_file
        if not path.is_file():
            return Check("tasks.py", OK, "none (no hooks)")
        try:
            ProjectTasks.load(path)
        except SkycapError as exc:
            return Check("tasks.py", FAIL, exc.message, f"run `python {path}` to see the whole error")
        return Check("tasks.py", OK, f"{path} loads")

    # ----- the cluster -----

    def cluster_checks(self) -> list[Check]:
        """kubeconfig, context, API server; then namespace, rights and lock (or skipped)."""
        from skycap.cluster.kube import api_client, kubeconfig_path

        stage = self.stage
        path = kubeconfig_path(stage) or os.path.expanduser("~/.kube/config")
        names = ("namespace", "rights", "lock")
        if not Path(path).is_file():
            return [Check("kubeconfig", FAIL, f"no kubeconfig at {path}",
                          "set KUBECONFIG, or kubernetes.kubeconfig in the stage file"),
                    *self.skipped(("context", "api server", *names), "no kubeconfig")]
        checks = [Check("kubeconfig", OK, path)]
        try:
            self.api = api_client(stage)
        except SkycapError as exc:
            return [*checks, failed_check("context", exc), *self.skipped(("api server", *names), "no context")]
        checks.append(Check("context", OK, stage.context or "the kubeconfig's current context"))
        try:
            version = self.server_version()
        except SkycapError as exc:
            return [*checks, failed_check("api server", exc), *self.skipped(names, "the API server did not answer")]
        checks.append(Check("api server", OK, f"answers: Kubernetes {version}"))
        with ThreadPoolExecutor(max_workers=3) as pool:
            rest = [pool.submit(self.guarded, name, method) for name, method in
                    (("namespace", self.namespace), ("rights", self.rights), ("lock", self.lock))]
            for future in rest:
                checks += future.result()
        return checks

    def guarded(self, name: str, method) -> list[Check]:
        try:
            return method()
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            return [failed_check(name, exc)]

    @staticmethod
    def skipped(names, why: str) -> list[Check]:
        return [Check(name, SKIPPED, f"not checked: {why}") for name in names]

    def server_version(self) -> str:
        from kubernetes import client

        from skycap.cluster.errors import unreachable

        try:
            response = client.VersionApi(self.api).get_code(_preload_content=False, _request_timeout=(5, 10))
        except Exception as exc:  # noqa: BLE001 - refused, timed out, TLS: all say "cannot reach"
            raise unreachable(self.stage, exc) from None
        self.version = json.loads(response.data)
        return self.version.get("gitVersion", "?")

    def namespace(self) -> list[Check]:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        name = self.stage.namespace
        try:
            client.CoreV1Api(self.api).read_namespace(name, _preload_content=False).data
        except ApiException as exc:
            if exc.status == 404 and self.stage.create_namespace:
                return [Check("namespace", OK, f"{name} does not exist yet; the first deploy creates it")]
            if exc.status == 404:
                return [Check("namespace", FAIL, f"namespace {name} does not exist",
                              f"create it (kubectl create namespace {name}), or set kubernetes.create_namespace: "
                              "true in the stage file")]
            if exc.status == 403:
                return [Check("namespace", FAIL, f"may not read namespace {name} (403)",
                              "ask a cluster admin for get on namespaces")]
            raise
        return [Check("namespace", OK, f"{name} exists")]

    def rights(self) -> list[Check]:
        """One SelfSubjectAccessReview per verb and resource that deploy, rollback and status use."""
        namespace = self.stage.namespace
        asked = [(group, resource, verb, why) for group, resource, verb, why in NEEDED]
        for group, resource in self.applied_resources():
            asked += [(group, resource, verb, "applying the release") for verb in APPLY_VERBS]
        asked.append(("", "namespaces", "get", "finding the namespace"))
        if self.stage.create_namespace:
            asked.append(("", "namespaces", "create", "create_namespace"))
        asked = list(dict.fromkeys(asked))
        with ThreadPoolExecutor(max_workers=ACCESS_REVIEWERS) as pool:
            answers = list(pool.map(lambda item: self.allowed(*item[:3]), asked))
        denied: dict[tuple[str, str], list[str]] = {}
        why: dict[tuple[str, str], str] = {}
        for (group, resource, verb, reason), allowed in zip(asked, answers):
            if not allowed:
                denied.setdefault((group, resource), []).append(verb)
                why.setdefault((group, resource), reason)
        if not denied:
            return [Check("rights", OK, f"all {len(asked)} verbs on {len({a[:2] for a in asked})} resources that "
                                        f"deploy, rollback and status use are allowed in {namespace}")]
        user = self.user_name()
        return [Check("rights", FAIL, f"may not {', '.join(verbs)} {_resource(group, resource)} in {namespace} "
                                      f"(needed for {why[(group, resource)]})",
                      f"ask a cluster admin to grant it to {user}: kubectl create role skycap-{resource.replace('/', '-')}"
                      f" -n {namespace} --verb={','.join(verbs)} --resource={_resource(group, resource)} && "
                      f"kubectl create rolebinding skycap-{resource.replace('/', '-')} -n {namespace} "
                      f"--role=skycap-{resource.replace('/', '-')} --user=USER")
                for (group, resource), verbs in denied.items()]

    def applied_resources(self) -> list[tuple[str, str]]:
        """(group, resource) of each kind the templates make; a common set when they do not render."""
        self.rendered_ready.wait()
        applied = ({m.kind: m.obj.get("apiVersion", "") for m in self.rendered.manifests} if self.rendered
                   else {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1"})
        found = []
        for kind, api_version in applied.items():
            if kind == "Namespace":
                continue
            known = kinds.KINDS.get(kind)
            # a kind without a record: its group from its apiVersion, its resource guessed as kubectl's plural
            found.append(known.api if known else (api_version.rpartition("/")[0], kinds.of(kind).api[1]))
        return found

    def allowed(self, group: str, resource: str, verb: str) -> bool:
        from kubernetes import client

        resource, _, subresource = resource.partition("/")
        attributes = {"group": group, "resource": resource, "verb": verb, "subresource": subresource}
        if resource != "namespaces":
            attributes["namespace"] = self.stage.namespace
        else:
            attributes["name"] = self.stage.namespace
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": attributes}}
        response = client.AuthorizationV1Api(self.api).create_self_subject_access_review(
            review, _preload_content=False)
        return bool(json.loads(response.data).get("status", {}).get("allowed"))

    def user_name(self) -> str:
        """The kubeconfig's user of the stage's context, to name in a fix."""
        import yaml

        from skycap.cluster.kube import kubeconfig_path

        try:
            config = yaml.safe_load(Path(kubeconfig_path(self.stage) or os.path.expanduser("~/.kube/config"))
                                    .read_text()) or {}
            context = self.stage.context or config.get("current-context")
            entry = next(c for c in config.get("contexts") or [] if c.get("name") == context)
            return f"your account (kubeconfig user {entry['context'].get('user')!r})"
        except (OSError, StopIteration, KeyError, AttributeError, yaml.YAMLError):
            return "your account"

    def lock(self) -> list[Check]:
        from skycap.cluster.lock import read_lock

        info = read_lock(self.api, self.stage.namespace, self.stage.name)
        if info is None:
            return [Check("lock", OK, "free")]
        if info.expires_in < 0:
            return [Check("lock", OK, f"free (a lock left by {info.holder} has expired; the next deploy takes it)")]
        return [Check("lock", WARN, f"held by {info.holder} since {info.since}, doing: {info.purpose}; a deploy "
                                    "now would stop with exit 3",
                      f"wait for it to finish; if its holder is gone, skycap unlock {self.stage.name}")]

    def kubectl_version(self) -> Check:
        from skycap.cluster.kubectl import find_kubectl
        from skycap.proc import run

        try:
            binary = find_kubectl()
            result = run((binary, "version", "--client", "-o", "json"), timeout=15)
            client_version = json.loads(result.stdout)["clientVersion"]
        except (SkycapError, ValueError, KeyError) as exc:
            return failed_check("kubectl", exc)
        self.kubectl_minor = _minor(client_version)
        return Check("kubectl", OK, f"{binary}: {client_version.get('gitVersion', '?')}")

    # ----- the other sources -----

    def mercurial(self) -> Check:
        from skycap.sources.mercurial import reach

        try:
            return Check("mercurial", OK, reach(self.stage.hg_source))
        except SkycapError as exc:
            return failed_check("mercurial", exc)

    def registry(self) -> Check:
        from skycap.sources.registry import Registry, image_digests, registry_name

        stage = self.stage
        name = registry_name(stage.registry)
        try:
            if stage.services:
                image_digests(stage.registry, [(s.name, s.image, "skycap-doctor") for s in stage.services.values()],
                              stage.registry_insecure, timeout=5)
            else:
                Registry(stage.registry, insecure=stage.registry_insecure, timeout=5).request("GET", "/v2/")
        except SkycapError as exc:
            return failed_check("registry", exc)
        repositories = len({s.image for s in stage.services.values()})
        return Check("registry", OK, f"{name} answers" + (f"; pulling from its {repositories} repositories is "
                                                          "allowed" if repositories else ""))

    def vm_hosts(self) -> list[Check]:
        """Every host of every VM service, reached at once with its host key checked."""
        from skycap.vm import deploy as vms

        jobs = []
        for service in self.stage.vm.values():
            try:
                options = vms.ssh_options(service, project_root=self.stage.project.root)
            except SkycapError as exc:
                jobs.append((f"vm {service.name}", exc, None))
                continue
            jobs += [(f"vm {service.name} {host}", host, options) for host in service.hosts]
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
            return list(pool.map(lambda job: _reach_host(*job), jobs))


def _reach_host(name: str, host, options) -> Check:
    from skycap.vm.hosts import HostConnection, VmHostError

    if options is None:
        return failed_check(name, host)
    try:
        connection = HostConnection(host, options).open()
    except VmHostError as exc:
        return Check(name, FAIL, exc.reason, exc.hint or "")
    try:
        return Check(name, OK, f"reachable at {connection.where}, host key known")
    finally:
        connection.close()


def _resource(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def _minor(version: dict) -> int | None:
    try:
        return int(str(version.get("minor", "")).rstrip("+"))
    except ValueError:
        return None
