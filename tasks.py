"""The example deploy project's own Invoke tasks.

Skycap runs the hooks below around a deploy (see the README, "Hooks"); other tasks here are
ordinary Invoke tasks for people: `inv --list`.
"""

from invoke import task


@task
def before_deploy(c, stage, rev, node):
    """Runs after every check passed and before the first change: a last gate."""
    print(f"[tasks.py] about to deploy {rev} ({node[:12]}) to {stage}")


@task
def after_deploy(c, stage, release):
    """Runs once the rollout succeeded: announce it, warm caches, tag the release..."""
    print(f"[tasks.py] release {release} of {stage} is live")


@task
def deploy_failed(c, stage, release, error):
    """Runs when a deploy failed (after the automatic rollback): page someone, open an incident..."""
    print(f"[tasks.py] release {release} of {stage} failed: {error}")


@task
def demo(c):
    """Set up the local demo: the control plane, a Mercurial repository, its images, then deploy."""
    c.run("bash scripts/demo.sh", pty=False)
