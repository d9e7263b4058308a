"""Environments: stages made on demand from a stage file, each in a namespace of its own, with an expiry.

naming.py   an environment's name -> its stage name and namespace (valid DNS labels), durations
stored.py   the definition kept in the cluster (a ConfigMap in the environment's namespace), and the
            environment's stage derived from it and the source stage's file
lookup.py   finding an environment by name through the clusters of the project's stage files
commands.py env create, list, extend, destroy, gc
"""
