"""Skycap: Capistrano-style deploys of Mercurial revisions to Kubernetes and VMs."""

__version__ = "0.1.0"

# The one latency trick kept (issue 11): the Kubernetes client's names imported on first use; a real-node
# deploy took 2.3 s longer without it (bench/deploy.py; see cluster/lazy_kubernetes.py for how).
from skycap.cluster import lazy_kubernetes as _lazy_kubernetes

_lazy_kubernetes.install()
