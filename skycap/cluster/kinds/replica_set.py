"""ReplicaSet: what a Deployment rolls out through; one applied by itself is scaled, not waited for."""

from __future__ import annotations

from skycap.cluster.kinds.base import Kind

KIND = Kind("ReplicaSet", ("apps", "replicasets"), runs_pods=True, lister=("AppsV1Api", "list_namespaced_replica_set"),
            pod_template=("spec", "template"), replicas=("spec", "replicas"))
