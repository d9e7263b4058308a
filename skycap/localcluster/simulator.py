"""The node simulator (`skycap local-cluster up --nodes simulated`): stands in for kubelets on a
machine that cannot run containers, and for scale runs that need more pods than one real node holds.

It registers Node objects (`simulated-node-N`) and keeps them healthy, binds Pending pods, and
writes each pod's status as a kubelet would: Running and Ready for an image present in the local
registry, ErrImagePull / ImagePullBackOff for a missing one, and what the image's
`skycap.io/behaviour` label (or a container's SKYCAP_BEHAVIOUR env value, which may come from a
ConfigMap) asks for: `crash`, `never-ready`, `ready-after=N`, `fail` — what the real image's start
script does for real. Terminating pods are deleted for good, or old ReplicaSets would never drain.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import threading
import time
from datetime import datetime, timezone

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from skycap.localcluster.images import BEHAVIOUR_LABELS, image_labels

BEHAVIOUR_ENVS = ("SKYCAP_BEHAVIOUR", "SKYCAP_SIM_BEHAVIOUR")  # what the real image's start script reads
NODE_LABEL = "skycap.io/simulated"
BACKOFF_SECONDS = 2.0
log = logging.getLogger("simulator")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    """Runs callables at given times on one thread."""

    def __init__(self):
        self.queue: list = []
        self.counter = itertools.count()
        self.cond = threading.Condition()

    def at(self, delay: float, func, *args, retries: int = 20) -> None:
        with self.cond:
            heapq.heappush(self.queue, (time.monotonic() + delay, next(self.counter), func, args, retries))
            self.cond.notify()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.queue or self.queue[0][0] > time.monotonic():
                    self.cond.wait(None if not self.queue else self.queue[0][0] - time.monotonic())
                _, _, func, args, retries = heapq.heappop(self.queue)
            try:
                func(*args)
            except ApiException as exc:
                if exc.status == 404:
                    continue  # the object is gone: nothing left to do
                self.retry(func, args, retries, exc.reason)
            except Exception as exc:  # noqa: BLE001 - apiserver away: try again, as a kubelet would
                self.retry(func, args, retries, exc)

    def retry(self, func, args, retries: int, reason) -> None:
        if retries > 0:
            log.warning("%s failed (%s); retrying in 1 s", func.__name__, reason)
            self.at(1.0, func, *args, retries=retries - 1)
        else:
            log.error("%s failed for good: %s", func.__name__, reason)


class ImageCatalogue:
    """Which images exist, with their labels; positive answers cached, negative ones re-asked."""

    def __init__(self, registry: str):
        self.registry = registry
        self.known: dict[str, dict] = {}
        self.lock = threading.Lock()

    def labels(self, image: str) -> dict | None:
        with self.lock:
            if image in self.known:
                return self.known[image]
        host, _, rest = image.partition("/")
        if host != self.registry or not rest:
            return None
        repository, _, tag = rest.rpartition(":") if ":" in rest.rsplit("/", 1)[-1] else (rest, ":", "latest")
        try:
            labels = image_labels(self.registry, repository, tag)
        except Exception:  # noqa: BLE001 - registry down reads as image missing, as for a kubelet
            labels = None
        if labels is not None:
            with self.lock:
                self.known[image] = labels
        return labels


class Simulator:
    def __init__(self, api: client.ApiClient, registry: str, node_count: int = 2):
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.images = ImageCatalogue(registry)
        self.scheduler = Scheduler()
        self.nodes = [f"simulated-node-{i + 1}" for i in range(node_count)]
        self.next_node = itertools.cycle(self.nodes)
        self.ip_counter = itertools.count(2)
        self.handled: dict[str, str] = {}  # pod uid -> what we decided, so each pod is started once
        self.lock = threading.Lock()

    # ----- nodes -----
    def register_nodes(self) -> None:
        for name in self.nodes:
            body = {"metadata": {"name": name, "labels": {NODE_LABEL: "true", "kubernetes.io/hostname": name,
                                                          "kubernetes.io/os": "linux"}},
                    "spec": {}}
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self.heartbeat(name)

    def heartbeat(self, name: str) -> None:
        stamp = now()
        conditions = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "lastHeartbeatTime": stamp,
                       "lastTransitionTime": stamp} for t, r in
                      (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                       ("PIDPressure", "SufficientPID"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "simulated by skycap", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "500"}
        status = {"conditions": conditions, "capacity": capacity, "allocatable": capacity,
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                  "nodeInfo": {"kubeletVersion": "v1.20.2-sim", "kubeProxyVersion": "v1.20.2-sim",
                               "operatingSystem": "linux", "architecture": "amd64", "containerRuntimeVersion": "sim://1",
                               "machineID": name, "systemUUID": name, "bootID": name, "kernelVersion": "sim",
                               "osImage": "skycap simulator"}}
        self.core.patch_node_status(name, {"status": status})
        self._renew_lease(name)

    def _renew_lease(self, name: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": stamp}}
        try:
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def keep_nodes_healthy(self) -> None:
        while True:
            time.sleep(10)
            for name in self.nodes:
                try:
                    self.heartbeat(name)
                except Exception:  # noqa: BLE001
                    log.exception("heartbeat for %s failed", name)

    # ----- pods -----
    def watch_pods(self) -> None:
        while True:
            try:
                pods = self.core.list_pod_for_all_namespaces()
                for pod in pods.items:
                    self.handle(pod)
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces,
                                              resource_version=pods.metadata.resource_version,
                                              timeout_seconds=300)
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(event["object"])
                    elif event["type"] == "DELETED":
                        self.handled.pop(event["object"].metadata.uid, None)
            except Exception as exc:  # noqa: BLE001 - re-list after any watch failure (410 Gone included)
                log.warning("pod watch restarted: %s", exc)
                time.sleep(0.5)

    def handle(self, pod) -> None:
        meta, spec = pod.metadata, pod.spec
        if meta.deletion_timestamp:
            self.scheduler.at(0, self.finish_deletion, meta.namespace, meta.name, meta.uid)
            return
        if not spec.node_name:
            with self.lock:
                if self.handled.get(meta.uid) == "binding":
                    return
                self.handled[meta.uid] = "binding"
            self.scheduler.at(0, self.bind, meta.namespace, meta.name, next(self.next_node))
            return
        with self.lock:
            if self.handled.get(meta.uid) == "started":
                return
            self.handled[meta.uid] = "started"
        self.scheduler.at(0, self.start, pod)

    def finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                        preconditions={"uid": uid}))
        except ApiException as exc:
            if exc.status != 409:  # 409: a newer pod of that name; ours is gone already
                raise

    def bind(self, namespace: str, name: str, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def start(self, pod) -> None:
        plans = [self.plan_container(pod, c) for c in pod.spec.containers]
        number = next(self.ip_counter)
        ip = f"198.19.{128 + number // 250 % 128}.{number % 250 + 2}"  # the test range, as the real node's
        self.write_status(pod, plans, ip, step=0)

    def plan_container(self, pod, container) -> tuple[str, str]:
        """(behaviour, detail) for one container."""
        missing_config = self.missing_config(pod.metadata.namespace, container)
        if missing_config:
            return "config-error", missing_config
        labels = self.images.labels(container.image)
        if labels is None:
            return "missing-image", container.image
        from_label = next((labels[name] for name in BEHAVIOUR_LABELS if name in labels), None)
        behaviour = self.env_behaviour(pod.metadata.namespace, container) or from_label or "ok"
        return behaviour, ""

    def missing_config(self, namespace: str, container) -> str:
        for env in container.env or []:
            ref = env.value_from and env.value_from.config_map_key_ref
            if ref and not ref.optional and self.config_value(namespace, ref.name, ref.key) is None:
                return f'couldn\'t find key {ref.key} in ConfigMap {namespace}/{ref.name}'
        for source in container.env_from or []:
            ref = source.config_map_ref
            if ref and not ref.optional and self.config_map(namespace, ref.name) is None:
                return f'configmap "{ref.name}" not found'
        return ""

    def config_map(self, namespace: str, name: str) -> dict | None:
        try:
            return self.core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def config_value(self, namespace: str, name: str, key: str) -> str | None:
        data = self.config_map(namespace, name)
        return None if data is None else data.get(key)

    def env_behaviour(self, namespace: str, container) -> str | None:
        for env in container.env or []:
            if env.name in BEHAVIOUR_ENVS:
                if env.value is not None:
                    return env.value
                ref = env.value_from and env.value_from.config_map_key_ref
                if ref:
                    return self.config_value(namespace, ref.name, ref.key)
        for source in container.env_from or []:
            if source.config_map_ref:
                data = self.config_map(namespace, source.config_map_ref.name) or {}
                value = next((data[name] for name in BEHAVIOUR_ENVS if data.get(name)), None)
                if value:
                    return value
        return None

    def write_status(self, pod, plans, ip: str, step: int) -> None:
        """Write the pod's status for this step, and schedule the next step where behaviour moves on."""
        started = now()
        is_job = (pod.spec.restart_policy or "Always") != "Always"
        statuses, all_ready, phase, next_delay = [], True, "Running", None
        for container, (behaviour, detail) in zip(pod.spec.containers, plans):
            state, ready, restarts, delay, terminal = container_state(container, behaviour, detail, step, is_job)
            statuses.append({"name": container.name, "image": container.image, "imageID": "",
                             "ready": ready, "restartCount": restarts, "started": ready, **state})
            all_ready = all_ready and ready
            if terminal:
                phase = terminal
            if delay is not None:
                next_delay = delay if next_delay is None else min(next_delay, delay)
        if phase in ("Succeeded", "Failed"):
            all_ready = False
        elif any("waiting" in s["state"] for s in statuses):
            phase = "Pending" if step == 0 and plans[0][0] in ("missing-image", "config-error") else phase
        ready = "True" if all_ready else "False"
        body = {"status": {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "Ready", "status": ready, "lastTransitionTime": started},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": started},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started}],
            "containerStatuses": statuses}}
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, body)
        self.record_events(pod, plans, step)
        if next_delay is not None:
            self.scheduler.at(next_delay, self.write_status, pod, plans, ip, step + 1)

    def record_events(self, pod, plans, step: int) -> None:
        for behaviour, detail in plans:
            if behaviour == "missing-image" and step % 2 == 0:
                self.event(pod, "Warning", "Failed", f'Failed to pull image "{detail}": rpc error: code = NotFound '
                           f'desc = failed to pull and unpack image "{detail}": not found')
            elif behaviour == "crash":
                self.event(pod, "Warning", "BackOff", "Back-off restarting failed container")
            elif behaviour == "config-error" and step == 0:
                self.event(pod, "Warning", "Failed", f"Error: {detail}")

    def event(self, pod, kind: str, reason: str, message: str) -> None:
        stamp = now()
        body = {"metadata": {"generateName": f"{pod.metadata.name}.", "namespace": pod.metadata.namespace},
                "involvedObject": {"kind": "Pod", "name": pod.metadata.name, "namespace": pod.metadata.namespace,
                                   "uid": pod.metadata.uid, "apiVersion": "v1"},
                "type": kind, "reason": reason, "message": message, "count": 1,
                "firstTimestamp": stamp, "lastTimestamp": stamp, "source": {"component": "kubelet",
                                                                           "host": pod.spec.node_name}}
        self.core.create_namespaced_event(pod.metadata.namespace, body)


def container_state(container, behaviour: str, detail: str, step: int, is_job: bool):
    """(state fields, ready, restartCount, seconds to next step or None, terminal phase or None)."""
    running = {"state": {"running": {"startedAt": now()}}}
    if behaviour == "missing-image":
        reason = "ErrImagePull" if step % 2 == 0 else "ImagePullBackOff"
        message = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{detail}": not found'
                   if step % 2 == 0 else f'Back-off pulling image "{detail}"')
        return {"state": {"waiting": {"reason": reason, "message": message}}}, False, 0, BACKOFF_SECONDS, None
    if behaviour == "config-error":
        return ({"state": {"waiting": {"reason": "CreateContainerConfigError", "message": detail}}},
                False, 0, None, None)
    if behaviour in ("crash", "fail"):
        if is_job:
            terminated = {"exitCode": 1, "reason": "Error", "startedAt": now(), "finishedAt": now()}
            return {"state": {"terminated": terminated}}, False, 0, None, "Failed"
        terminated = {"exitCode": 1, "reason": "Error", "startedAt": now(), "finishedAt": now()}
        waiting = {"reason": "CrashLoopBackOff",
                   "message": f"back-off restarting failed container {container.name}"}
        return ({"state": {"waiting": waiting}, "lastState": {"terminated": terminated}},
                False, step + 1, 5.0, None)
    if behaviour == "never-ready":
        return running, False, 0, None, None
    if behaviour.startswith("ready-after="):
        seconds = float(behaviour.split("=", 1)[1] or 0)
        return running, step > 0, 0, (seconds if step == 0 else None), None
    if is_job:
        if step == 0:
            return running, True, 0, 1.0, None
        terminated = {"exitCode": 0, "reason": "Completed", "startedAt": now(), "finishedAt": now()}
        return {"state": {"terminated": terminated}}, False, 0, None, "Succeeded"
    return running, True, 0, None, None


def register_when_ready(simulator: Simulator, timeout: float = 60.0) -> None:
    """The simulator starts beside the apiserver, not after it: wait for it to answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            simulator.register_nodes()
            return
        except Exception:  # noqa: BLE001 - connection refused, or the apiserver not ready yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--registry", required=True, help="host:port of the local image registry")
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    configuration = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    simulator = Simulator(client.ApiClient(configuration), args.registry, args.nodes)
    register_when_ready(simulator)
    log.info("registered nodes %s", ", ".join(simulator.nodes))
    for target in (simulator.scheduler.run, simulator.keep_nodes_healthy):
        threading.Thread(target=target, daemon=True).start()
    simulator.watch_pods()


if __name__ == "__main__":
    main()
