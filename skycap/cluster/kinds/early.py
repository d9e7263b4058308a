"""The kinds applied before the rest: what the workloads read (configuration, credentials, RBAC, volume
claims) or need to exist (the namespace, custom resource definitions, quotas)."""

from __future__ import annotations

from skycap.cluster.kinds.base import Kind

RBAC = "rbac.authorization.k8s.io"

KINDS = (
    Kind("ConfigMap", ("", "configmaps"), applied_early=True, lister=("CoreV1Api", "list_namespaced_config_map")),
    Kind("Secret", ("", "secrets"), applied_early=True),
    Kind("ServiceAccount", ("", "serviceaccounts"), applied_early=True),
    Kind("Role", (RBAC, "roles"), applied_early=True),
    Kind("RoleBinding", (RBAC, "rolebindings"), applied_early=True),
    Kind("ResourceQuota", ("", "resourcequotas"), applied_early=True),
    Kind("LimitRange", ("", "limitranges"), applied_early=True),
    Kind("PersistentVolumeClaim", ("", "persistentvolumeclaims"), applied_early=True,
         kept_on_prune="a volume claim: its data stays; delete it yourself when it is no longer needed"),
    Kind("Namespace", ("", "namespaces"), applied_early=True, cluster_scoped=True),
    Kind("ClusterRole", (RBAC, "clusterroles"), applied_early=True, cluster_scoped=True),
    Kind("ClusterRoleBinding", (RBAC, "clusterrolebindings"), applied_early=True, cluster_scoped=True),
    Kind("CustomResourceDefinition", ("apiextensions.k8s.io", "customresourcedefinitions"), applied_early=True,
         cluster_scoped=True),
)
