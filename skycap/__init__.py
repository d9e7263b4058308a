"""Skycap: Capistrano-style deploys of Mercurial revisions to Kubernetes and VMs."""

__version__ = "0.1.0"

from skycap.cluster import lazy_kubernetes as _lazy_kubernetes

_lazy_kubernetes.install()
