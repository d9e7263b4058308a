"""The deploy project: finding it and loading its stage files (config.py), rendering a stage's Jinja
templates into Kubernetes objects (render.py)."""
