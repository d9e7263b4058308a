"""The click app: every command and its options (skycap.cli runs it and turns errors into exit codes).

Heavy libraries (the Kubernetes client, Fabric, Jinja) are imported inside the commands that use
them, so that `skycap --help` stays fast.
"""

from __future__ import annotations

import sys

import click

from skycap import __version__
from skycap.errors import BadInput

EXIT_USAGE = 2


def parse_words(words: tuple[str, ...], allowed: set[str] | None = None) -> dict[str, str]:
    """KEY=VALUE words (Capistrano style) into a dict; anything else is bad usage."""
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise BadInput(f"unexpected argument {word!r}", "arguments after the stage are KEY=VALUE, like rev=abc123")
        if allowed is not None and key not in allowed:
            raise BadInput(f"unknown setting {key}=", f"this command takes: {', '.join(sorted(allowed))}")
        if key in values:
            raise BadInput(f"{key}= is given twice")
        values[key] = value
    return values


def required_rev(words: tuple[str, ...], command: str, stage: str) -> str:
    rev = parse_words(words, {"rev"}).get("rev")
    if not rev:
        raise BadInput("missing rev=", f"say which Mercurial revision to use: skycap {command} {stage} rev=REV")
    return rev


def _context(ctx: click.Context):
    from skycap.context import RunContext

    return RunContext.from_click(ctx)


output_option = click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
                             help="json prints one JSON document on stdout.")
verbose_option = click.option("-v", "--verbose", count=True, help="Show everything kubectl and ssh print.")


class SkycapGroup(click.Group):
    def format_epilog(self, ctx, formatter):
        formatter.write_paragraph()
        formatter.write_text("Exit codes: 0 done, 1 failed (rolled back), 2 bad input (nothing changed), "
                             "3 stage locked, 4 rollout timed out, 130 interrupted.")


@click.group(cls=SkycapGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skycap")
@click.option("--project", metavar="DIR", help="The deploy project (default: $SKYCAP_PROJECT, else the nearest "
              "folder at or above here holding stages/).")
@verbose_option
@click.pass_context
def cli(ctx: click.Context, project: str | None, verbose: int) -> None:
    """Deploy Mercurial revisions to Kubernetes (and to VMs over SSH), with a release ledger
    kept in the cluster, so that rollback works when everything else is down."""
    ctx.obj = {"project": project, "verbose": verbose}


def _common(ctx: click.Context, verbose: int) -> None:
    ctx.obj["verbose"] = ctx.obj.get("verbose", 0) + verbose


@cli.command()
@click.argument("stage")
@click.argument("words", nargs=-1, metavar="rev=REV")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait for the rollout.")
@click.option("--no-rollback", is_flag=True, help="On failure, leave the failed release in place.")
@click.option("--skip-image-check", is_flag=True, help="Do not ask the registry whether the images exist.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record the key of an SSH host seen for the first time.")
@output_option
@verbose_option
@click.pass_context
def deploy(ctx, stage, words, dry_run, timeout, no_rollback, skip_image_check, accept_new_host_keys, output,
           verbose):
    """Deploy rev=REV of the project to STAGE and wait until it runs."""
    _common(ctx, verbose)
    rev = required_rev(words, "deploy", stage)
    from skycap.flow.deploy import deploy as run_deploy

    run = _context(ctx)
    run.output = output
    return run_deploy(run, stage, rev, dry_run=dry_run, timeout=timeout, rollback=not no_rollback,
                      image_check=not skip_image_check, accept_new_host_keys=accept_new_host_keys)


@cli.command()
@click.argument("stage")
@click.argument("words", nargs=-1, metavar="[release=N]")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait for the rollout.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record the key of an SSH host seen for the first time.")
@output_option
@verbose_option
@click.pass_context
def rollback(ctx, stage, words, timeout, accept_new_host_keys, output, verbose):
    """Re-apply the last good release before the current one (or release=N)."""
    _common(ctx, verbose)
    values = parse_words(words, {"release"})
    release = None
    if "release" in values:
        if not values["release"].isdigit():
            raise BadInput(f"release={values['release']} is not a release number", "see `skycap history STAGE`")
        release = int(values["release"])
    from skycap.flow.rollback import rollback as run_rollback

    run = _context(ctx)
    run.output = output
    return run_rollback(run, stage, release=release, timeout=timeout,
                        accept_new_host_keys=accept_new_host_keys)


@cli.command()
@click.argument("stage")
@output_option
@verbose_option
@click.pass_context
def status(ctx, stage, output, verbose):
    """What runs now: release, rev, image, ready/desired per service, drift, the lock."""
    _common(ctx, verbose)
    from skycap.commands.status import status as show_status

    run = _context(ctx)
    run.output = output
    return show_status(run, stage)


@cli.command()
@click.argument("stage")
@output_option
@click.pass_context
def history(ctx, stage, output):
    """The release ledger of STAGE, newest first."""
    from skycap.commands.history import history as show_history

    run = _context(ctx)
    run.output = output
    return show_history(run, stage)


@cli.command()
@click.argument("stage")
@click.argument("words", nargs=-1, metavar="rev=REV")
@verbose_option
@click.pass_context
def render(ctx, stage, words, verbose):
    """Print the rendered manifests of rev=REV; apply nothing."""
    _common(ctx, verbose)
    rev = required_rev(words, "render", stage)
    from skycap.commands.render import render_command

    return render_command(_context(ctx), stage, rev)


@cli.command()
@click.argument("stage")
@click.argument("words", nargs=-1, metavar="rev=REV")
@verbose_option
@click.pass_context
def diff(ctx, stage, words, verbose):
    """What a deploy of rev=REV would change (kubectl diff); exit 0 no change, 1 changes."""
    _common(ctx, verbose)
    rev = required_rev(words, "diff", stage)
    from skycap.commands.diff import diff as show_diff

    return show_diff(_context(ctx), stage, rev)


@cli.command()
@click.argument("stage")
@click.argument("words", nargs=-1, required=True, metavar="SERVICE=COUNT...")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait for the rollout.")
@verbose_option
@click.pass_context
def scale(ctx, stage, words, timeout, verbose):
    """Set the replica count of services, recorded as a release."""
    _common(ctx, verbose)
    counts = {}
    for key, value in parse_words(words).items():
        if not value.isdigit():
            raise BadInput(f"{key}={value}: the count must be a whole number, like {key}=3")
        counts[key] = int(value)
    from skycap.commands.scale import scale as scale_services

    return scale_services(_context(ctx), stage, counts, timeout=timeout)


@cli.command()
@click.argument("stage")
@click.option("--force", is_flag=True, help="Break the lock even if its holder renewed it within its TTL.")
@click.pass_context
def unlock(ctx, stage, force):
    """Break a stale deploy lock of STAGE (recorded in the ledger).

    Without --force, it watches the lock for its TTL first and refuses (exit 3) if the holder renews it."""
    from skycap.commands.unlock import unlock as unlock_stage

    return unlock_stage(_context(ctx), stage, force=force)


@cli.command("task")
@click.argument("stage")
@click.argument("name")
@click.argument("words", nargs=-1, metavar="[KEY=VALUE...]")
@verbose_option
@click.pass_context
def task_(ctx, stage, name, words, verbose):
    """Run task NAME of the project's tasks.py against STAGE (dotted names for namespaced tasks)."""
    _common(ctx, verbose)
    values = parse_words(words)
    from skycap.flow.commands import task as run_project_task

    return run_project_task(_context(ctx), stage, name, values)


@cli.command("tasks")
@click.argument("stage", required=False)
@click.pass_context
def tasks_(ctx, stage):
    """The flow's steps with the hooks tasks.py puts on them, and the project's tasks (like cap -T)."""
    from skycap.flow.commands import list_tasks

    return list_tasks(_context(ctx), stage)


@cli.command("lb-sync")
@click.argument("stage")
@click.option("--once", is_flag=True, help="Reconcile once and exit: 0 in step, 1 if not, 2 bad input.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--listen", default="127.0.0.1:9180", show_default=True, metavar="HOST:PORT",
              help="Where /healthz and /metrics answer (not with --once).")
@verbose_option
@click.pass_context
def lb_sync(ctx, stage, once, dry_run, listen, verbose):
    """Keep the load balancer's pools equal to the Services' ready endpoints (watches; runs until stopped)."""
    _common(ctx, verbose)
    from skycap.lb.server import parse_listen
    from skycap.lb.sync import lb_sync as run_lb_sync

    parse_listen(listen)
    return run_lb_sync(_context(ctx), stage, once=once, dry_run=dry_run, listen=listen)


@cli.command()
@click.argument("stage")
@click.argument("service")
@click.option("--tail", type=int, metavar="N", help="Only the last N lines of each pod (default: all; "
              "VM log files: the last 100).")
@click.option("--since", metavar="DURATION", help="Only lines newer than this, like 10m or 1h30m (pods only).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines, from new pods too, until Ctrl-C.")
@click.option("-p", "--previous", is_flag=True, help="The last instance of containers that ended (crashed).")
@click.pass_context
def logs(ctx, stage, service, tail, since, follow, previous):
    """The lines of every pod (or VM host) of SERVICE, each after a short name of where it came from."""
    from skycap.commands.logs import log_options, logs as show_logs

    return show_logs(_context(ctx), stage, service, log_options(tail, since, follow, previous))


@cli.command("exec")
@click.argument("stage")
@click.argument("service")
@click.argument("command", nargs=-1, metavar="-- CMD...")
@click.option("--all", "all_targets", is_flag=True, help="Run on every pod (or host), a few at a time.")
@click.option("-i", "--stdin", is_flag=True, help="Pass stdin to the command (one pod).")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal (one pod; -it for a shell).")
@click.option("-c", "--container", metavar="NAME", help="The pod's container to run in (default: kubectl's).")
@click.pass_context
def exec_(ctx, stage, service, command, all_targets, stdin, tty, container):
    """Run CMD in a ready pod of the current release of SERVICE (or in current/ on a VM host).

    The exit code is the command's; with --all, the first non-zero one, after a summary."""
    from skycap.commands.exec import ExecOptions, exec_command

    options = ExecOptions(all_targets=all_targets, stdin=stdin, tty=tty, container=container)
    return exec_command(_context(ctx), stage, service, list(command), options)


@cli.command()
@click.argument("stage")
@click.argument("services", nargs=-1, required=True, metavar="SERVICE...")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait for the rollout.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record the key of an SSH host seen for the first time.")
@verbose_option
@click.pass_context
def restart(ctx, stage, services, timeout, accept_new_host_keys, verbose):
    """Restart services (pods roll, VM hosts run restart and check), recorded as a release."""
    _common(ctx, verbose)
    from skycap.commands.restart import restart as restart_services

    return restart_services(_context(ctx), stage, list(services), timeout=timeout,
                            accept_new_host_keys=accept_new_host_keys)


@cli.command()
@click.argument("stage")
@output_option
@click.pass_context
def doctor(ctx, stage, output):
    """Check everything a deploy of STAGE needs, one line each; exit 0 all pass, 2 otherwise."""
    from skycap.commands.doctor import doctor as check_stage

    run = _context(ctx)
    run.output = output
    return check_stage(run, stage)


@cli.group("env")
def env():
    """Environments: stages made on demand from a stage, in a namespace of their own, that expire."""


@env.command("create")
@click.argument("name")
@click.argument("words", nargs=-1, metavar="rev=REV")
@click.option("--from", "source", required=True, metavar="STAGE", help="The stage (a file under stages/) to copy.")
@click.option("--ttl", default="8h", show_default=True, help="Lifetime; each deploy pushes the expiry out by it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a stage file value: config.web.LOG_LEVEL=debug, vars.queue=jobs-x, ...")
@click.option("--replace", is_flag=True, help="Destroy an environment of that name first.")
@click.option("--with-vm", is_flag=True, help="Deploy the VM services too, to the stage's env_hosts.")
@click.option("--keep-on-failure", is_flag=True, help="Keep the environment when its first deploy fails.")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait for the rollout.")
@click.option("--skip-image-check", is_flag=True, help="Do not ask the registry whether the images exist.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record the key of an SSH host seen for the first time.")
@verbose_option
@click.pass_context
def env_create(ctx, name, words, source, ttl, sets, replace, with_vm, keep_on_failure, timeout, skip_image_check,
               accept_new_host_keys, verbose):
    """Make environment NAME from a stage and deploy rev=REV into it."""
    _common(ctx, verbose)
    rev = required_rev(words, "env create", f"{name} --from {source}")
    from skycap.environments import commands

    return commands.create(_context(ctx), name, source, rev, ttl=ttl, sets=sets, replace=replace, with_vm=with_vm,
                           keep_on_failure=keep_on_failure, timeout=timeout, image_check=not skip_image_check,
                           accept_new_host_keys=accept_new_host_keys)


@env.command("list")
@output_option
@click.pass_context
def env_list(ctx, output):
    """Every environment made from this project's stages: rev, owner, age, expiry, state."""
    from skycap.environments import commands

    run = _context(ctx)
    run.output = output
    return commands.list_environments(run)


@env.command("extend")
@click.argument("name")
@click.option("--ttl", required=True, help="The new lifetime from now, like 8h.")
@click.pass_context
def env_extend(ctx, name, ttl):
    """Push environment NAME's expiry out to now + TTL."""
    from skycap.environments import commands

    return commands.extend(_context(ctx), name, ttl)


@env.command("destroy")
@click.argument("name")
@click.option("--timeout", type=float, default=120, show_default=True, metavar="SECONDS",
              help="How long to wait for the namespace to be gone.")
@click.pass_context
def env_destroy(ctx, name, timeout):
    """Delete environment NAME (its namespace and all in it) under its lock; wait until gone."""
    from skycap.environments import commands

    return commands.destroy(_context(ctx), name, timeout=timeout)


@env.command("gc")
@click.option("--timeout", type=float, default=120, show_default=True, metavar="SECONDS",
              help="How long to wait for the namespaces to be gone.")
@click.option("--in-cluster", is_flag=True, help="Use the pod's service account (the CronJob); every environment "
              "of the cluster.")
@click.pass_context
def env_gc(ctx, timeout, in_cluster):
    """Destroy every expired environment; safe to run from cron, several at once."""
    from skycap.environments import commands

    return commands.gc(_context(ctx), timeout=timeout, in_cluster=in_cluster)


@cli.group("local-cluster")
def local_cluster():
    """The embedded local control plane, for the demo and the tests."""


@local_cluster.command("up")
@click.option("--ports", type=click.Choice(["default", "auto"]), default="default",
              help="auto picks free ports instead of the fixed defaults.")
@click.option("--nodes", type=click.Choice(["real", "simulated"]), default=None,
              help="real (the default): kubelet and containerd run the pods; simulated: a simulator "
                   "writes pod statuses, for machines that cannot run containers.")
def local_cluster_up(ports, nodes):
    """Start it (idempotent); prints the shell exports to eval."""
    from skycap.localcluster import cluster

    chosen = None
    if ports == "auto":
        names = list(cluster.DEFAULT_PORTS)
        chosen = dict(zip(names, cluster.free_ports(len(names))))
    state = cluster.up(ports=chosen, nodes=nodes)
    click.echo(state.exports(), nl=False)
    click.echo(f"# kubectl: kubectl --context {cluster.CONTEXT} get pods -A   registry: {state.registry}", err=True)


@local_cluster.command("down")
@click.option("--purge", is_flag=True, help="Also delete its data (etcd, registry, certificates).")
def local_cluster_down(purge):
    """Stop exactly the processes `up` started."""
    from skycap.localcluster import cluster

    stopped = cluster.down(purge=purge)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", err=True)


@local_cluster.command("status")
def local_cluster_status():
    """Each part: running, healthy, pid (kubelet: healthy when its node is Ready). Exit 1 unless all are healthy."""
    from skycap.localcluster import cluster

    parts = cluster.status()
    for part, info in parts.items():
        state = "healthy" if info["healthy"] else ("running, not healthy" if info["running"] else "stopped")
        pid = f" (pid {info['pid']})" if info["running"] else ""
        click.echo(f"{part:<20} {state}{pid}")
    if not all(info["healthy"] for info in parts.values()):
        sys.exit(1)


@local_cluster.command("publish")
@click.argument("image", metavar="REPOSITORY:TAG")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="An image config label, e.g. skycap.io/behaviour=crash (crash, fail, never-ready, "
                   "ready-after=N, exit-after=N: the image's start script acts on it).")
def local_cluster_publish(image, labels):
    """Push a small image to the local registry, as CI would have."""
    from skycap.localcluster import cluster
    from skycap.localcluster.images import publish_image

    repository, sep, tag = image.rpartition(":")
    if not sep or not repository or "/" in tag:
        raise BadInput(f"{image!r} is not REPOSITORY:TAG")
    state = cluster.ClusterState.load(cluster.state_dir())
    if not state:
        raise BadInput("the local cluster is not set up", "run: skycap local-cluster up")
    digest = publish_image(state.registry, repository, tag, parse_words(tuple(labels)))
    click.echo(f"{state.registry}/{repository}:{tag} {digest}")


def run_click(argv: list[str] | None) -> int:
    """The command argv names, through click: its return code; click's usage errors print and give 2."""
    try:
        code = cli.main(args=argv, prog_name="skycap", standalone_mode=False)
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    return code if isinstance(code, int) else 0
