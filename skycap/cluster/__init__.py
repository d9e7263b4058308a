"""The Kubernetes side: the API client (kube.py) and kubectl (kubectl.py, the only place it runs), applying
manifests in order (apply.py, plan.py, prune.py), watching rollouts (rollout.py, watch.py, rollout_rules.py),
the release ledger and the stage lock (ledger.py, lock.py), and Secret values out of kubectl's output
(redact.py)."""
