"""Finding environments: through the clusters the project's stage files point at.

An environment made from stage S lives in the namespace named from S's namespace and its name, on
S's cluster (S's kubeconfig and context). So `skycap deploy NAME` with no stages/NAME.yaml reads, for
each stage file, the ConfigMap `skycap-environment` in the namespace NAME would have if made from it:
one GET per stage, side by side, needing no right to list namespaces. `env list` and `env gc` list
by label once per distinct cluster. An environment belongs to this project when its source stage has
a file here whose namespace is the one it was made from.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from skycap.cluster.labels import ENVIRONMENT_LABEL
from skycap.environments.naming import ENV_NAME_RE, namespace_for
from skycap.environments.stored import DEFINITION, Environment, environment_stage
from skycap.errors import SkycapError


@dataclass
class Cluster:
    """One cluster (kubeconfig file and context) and the project's stages on it."""

    stages: list = field(default_factory=list)
    _api: object = None

    @property
    def api(self):
        if self._api is None:
            from skycap.cluster.kube import api_client

            self._api = api_client(self.stages[0])
        return self._api

    def describe(self) -> str:
        stage = self.stages[0]
        return f"context {stage.context}" if stage.context else f"the current context (stage {stage.name})"

    def owns(self, source_stage: str, source_namespace: str) -> bool:
        """Whether an environment made from this stage and namespace is one of this project's, on this cluster."""
        return any(s.name == source_stage and s.namespace == source_namespace for s in self.stages)


def project_clusters(project) -> tuple[list[Cluster], list[str]]:
    """The distinct clusters of the project's stage files; problems (a broken stage file) as text."""
    from skycap.cluster.kube import kubeconfig_path

    clusters: dict[tuple, Cluster] = {}
    problems = []
    for name in project.stage_names():
        try:
            stage = project.load_stage(name)
        except SkycapError as exc:
            problems.append(f"stage {name}: {exc.message}")
            continue
        key = (kubeconfig_path(stage), stage.context)
        clusters.setdefault(key, Cluster()).stages.append(stage)
    return list(clusters.values()), problems


def find_environment_stage(project, name: str):
    """The stage of environment NAME; BadInput `unknown stage` when no cluster of the project has it."""
    if not ENV_NAME_RE.match(name):
        raise project.unknown_stage(name)
    env, cluster, problems = find_environment(project, name)
    if env is None:
        raise not_found(project, name, problems)
    return environment_stage(project, env)


def not_found(project, name: str, problems: list[str]):
    note = f" (nor an environment; not looked up: {'; '.join(problems)})" if problems else ""
    return project.unknown_stage(name, note)


def find_environment(project, name: str) -> tuple[Environment | None, Cluster | None, list[str]]:
    clusters, problems = project_clusters(project)
    candidates = [(cluster, stage) for cluster in clusters for stage in cluster.stages]
    if not candidates:
        return None, None, problems
    with ThreadPoolExecutor(max_workers=min(8, len(candidates))) as pool:
        results = list(pool.map(lambda pair: _read_candidate(pair[0], pair[1], name), candidates))
    for (cluster, _stage), (env, problem) in zip(candidates, results):
        if env is not None:
            return env, cluster, problems
        if problem and problem not in problems:
            problems.append(problem)
    return None, None, problems


def _read_candidate(cluster: Cluster, stage, name: str) -> tuple[Environment | None, str | None]:
    """The environment NAME made from `stage`, if there is one; else (None, why it could not be read)."""
    try:
        env = read_definition(cluster.api, namespace_for(stage.namespace, name))
    except SkycapError as exc:
        return None, f"{cluster.describe()}: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - an unreachable cluster must not hide the others
        from skycap.cluster.errors import short_reason

        return None, f"{cluster.describe()}: {short_reason(exc)}"
    if env is None or env.name != name or not cluster.owns(env.stage, env.source_namespace):
        return None, None
    return env, None


def read_definition(api, namespace: str) -> Environment | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        response = client.CoreV1Api(api).read_namespaced_config_map(DEFINITION, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise SkycapError(f"cannot read environment definition in namespace {namespace}: {exc.status} "
                          f"{exc.reason}") from None
    config_map = json.loads(response.data)
    if ENVIRONMENT_LABEL not in (config_map["metadata"].get("labels") or {}):
        return None
    return Environment.from_config_map(config_map.get("data") or {})


def find_orphaned_environment(project, name: str) -> list[tuple[Environment, Cluster]]:
    """Environment NAME when its source stage has no file here any more (so find_environment cannot
    say where it is): the namespaces labelled as NAME on the clusters of the remaining stage files,
    whose definition names NAME and a source stage without a file. A label listing per cluster."""
    from kubernetes import client

    from skycap.environments.naming import stage_name

    found = []
    for cluster in project_clusters(project)[0]:
        try:
            listed = json.loads(client.CoreV1Api(cluster.api).list_namespace(
                label_selector=f"{ENVIRONMENT_LABEL}={stage_name(name)}", _preload_content=False).data)
        except Exception:  # noqa: BLE001 - unreachable, or no right to list namespaces: find_environment said so
            continue
        for item in listed.get("items", []):
            env = read_definition(cluster.api, item["metadata"]["name"])
            if env is not None and env.name == name and not project.has_stage_file(env.stage):
                found.append((env, cluster))
    return found
