"""Skycap: Capistrano-style deploys of Mercurial revisions to Kubernetes and VMs."""

__version__ = "0.1.0"

# The one latency trick kept (issue 11): the Kubernetes client's names imported on first use, which takes
# 0.27 s off the start of every command that talks to the cluster (0.20 s instead of 0.47 s to import
# what a deploy uses, 2026-12-03), more than a deploy's 0.2 s bar; cluster/lazy_kubernetes.py says how.
from skycap.cluster import lazy_kubernetes as _lazy_kubernetes

_lazy_kubernetes.install()
