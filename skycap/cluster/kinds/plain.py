"""Kinds with nothing to wait for once applied, and nothing else Skycap treats specially: only where
they live (their API group, whether they have a namespace) is known."""

from __future__ import annotations

from skycap.cluster.kinds.base import Kind

KINDS = (
    Kind("Endpoints", ("", "endpoints"), lister=("CoreV1Api", "list_namespaced_endpoints")),
    Kind("Ingress", ("networking.k8s.io", "ingresses")),
    Kind("NetworkPolicy", ("networking.k8s.io", "networkpolicies")),
    Kind("HorizontalPodAutoscaler", ("autoscaling", "horizontalpodautoscalers")),
    Kind("PodDisruptionBudget", ("policy", "poddisruptionbudgets")),
    Kind("PersistentVolume", ("", "persistentvolumes"), cluster_scoped=True),
    Kind("StorageClass", ("storage.k8s.io", "storageclasses"), cluster_scoped=True),
    Kind("PriorityClass", ("scheduling.k8s.io", "priorityclasses"), cluster_scoped=True),
    Kind("MutatingWebhookConfiguration", ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
         cluster_scoped=True),
    Kind("ValidatingWebhookConfiguration", ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
         cluster_scoped=True),
    Kind("APIService", ("apiregistration.k8s.io", "apiservices"), cluster_scoped=True),
    Kind("IngressClass", ("networking.k8s.io", "ingressclasses"), cluster_scoped=True),
    Kind("RuntimeClass", ("node.k8s.io", "runtimeclasses"), cluster_scoped=True),
    Kind("PodSecurityPolicy", ("policy", "podsecuritypolicies"), cluster_scoped=True),
)
