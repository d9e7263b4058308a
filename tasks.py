"""The example deploy project's own Invoke tasks.

Skycap runs the hooks below on the steps of its flow (see the README, "Tasks and hooks"); every
task here also runs against a stage, with the stage's context: `skycap task demo migrate`.
`skycap tasks` lists the steps, the hooks on each, and these tasks.
"""

from invoke import task

from skycap.tasks import after, before, locked


@task
def migrate(c):
    """Run the database migrations of the release being deployed (here: show the ConfigMaps it brings)."""
    print(f"[tasks.py] migrating {c.stage} for rev {c.rev} ({(c.node or '')[:12]}):")
    print(c.kubectl("get", "configmaps", "-l", "skycap.io/stage=" + c.stage, "-o", "name"))


@task
def notify(c):
    """Announce a release that is live."""
    print(f"[tasks.py] release {c.release} of {c.stage} is live ({c.node[:12]})")


@task
def page(c):
    """Say a deploy failed (after the automatic rollback): page someone, open an incident..."""
    print(f"[tasks.py] release {c.release} of {c.stage} failed: {c.error}")


@locked
@task
def restart_legacy(c, pause=0):
    """Restart the legacy API on its hosts, one by one, under the stage lock."""
    for connection, result in c.hosts("legacy-api").run(f"sleep {int(pause)}; cd current && cat REVISION",
                                                        hide=True).items():
        print(f"{connection.host}: {result.stdout.strip()}")


before("deploy:publishing", migrate)
after("deploy:finished", notify)
after("deploy:failed", page)


@task
def demo(c):
    """Set up the local demo: the control plane, a Mercurial repository, its images, then deploy."""
    c.run("bash scripts/demo.sh", pty=False)
