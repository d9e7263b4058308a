"""Skycap: Capistrano-style deploys of Mercurial revisions to Kubernetes and VMs."""

__version__ = "0.1.0"
