"""The Kubernetes side: the API client (kube.py) and kubectl (kubectl.py, the only place it runs), the one
place API errors become Skycap's (errors.py), every label and annotation (labels.py), what Skycap knows
of each kind (kinds/), the stage's namespace (namespace.py), applying manifests in order (apply.py, plan.py,
prune.py), watching rollouts (rollout.py, watch.py, rollout_rules.py), the release ledger and the stage
lock (ledger.py, lock.py), and Secret values out of kubectl's output (redact.py)."""
