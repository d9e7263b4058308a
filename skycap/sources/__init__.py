"""Where a release comes from: the Mercurial revision (mercurial.py: revision -> node -> tag, archives) and
the container registry its images must be in (registry.py)."""
