"""The stage context `c` of every hook and task of tasks.py (an Invoke context that knows the stage),
and how a task runs: on a thread of its own, its prints on stderr, killed at the stage's hook_timeout."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import traceback

from invoke import Call, Config, Context, Local, Task

from skycap.errors import BadInput, SkycapError
from skycap.flow.hooks import FlowValues, HookFailed, ProjectTasks


class TaskKilled(BaseException):
    """Raised in a task's thread at its timeout; a BaseException, so that the task's `except Exception` lets it by."""


class KillableLocal(Local):
    """Invoke's local runner, known to its context while it runs, so that a task's timeout can kill it."""

    def start(self, command, shell, env):
        super().start(command, shell, env)
        runners = getattr(self.context, "runners", None)
        if runners is not None:
            runners.add(self)

    def stop(self):
        runners = getattr(self.context, "runners", None)
        if runners is not None:
            runners.discard(self)
        super().stop()


class StageContext(FlowValues, Context):
    """The `c` of a hook or task: an Invoke context with the stage's values (c.stage, c.release, ...,
    None where the step has none yet), its kubectl, API client and VM hosts."""

    runners = _connections = None

    def __init__(self, session, project_tasks: ProjectTasks, config: Config):
        Context.__init__(self, config=config)
        FlowValues.__init__(self, session, project_tasks)
        self.runners = set()
        self._connections = []

    def kubectl(self, *args: str) -> str:
        """kubectl with the stage's kubeconfig, context and namespace, its filter and run log; its stdout."""
        _, stdout = self.session.kubectl.run([str(arg) for arg in args], timeout=self.session.stage.hook_timeout)
        return stdout

    @property
    def kube(self):
        """The Kubernetes API client (kubernetes.client.ApiClient) of the stage."""
        return self.session.api

    def hosts(self, service: str):
        """A Fabric group of the VM service's hosts, connected with the stage's host key policy and timeouts."""
        import fabric

        from skycap.vm import deploy as vm
        from skycap.vm.hosts import HostConnection

        stage = self.session.stage
        if service not in stage.vm:
            raise BadInput(f"stage {stage.name} has no VM service {service!r}",
                           f"its VM services: {', '.join(sorted(stage.vm)) or 'none'}")
        options = vm.ssh_options(stage.vm[service], project_root=stage.project.root)
        opened = []
        for host in stage.vm[service].hosts:
            connection = HostConnection(host, options).open()
            self._connections.append(connection)
            connection.connection.config.timeouts.command = options.command_timeout
            connection.connection.config.run.in_stream = False
            opened.append(connection.connection)
        return fabric.ThreadingGroup.from_connections(opened)

    def close(self) -> None:
        """Kill what the task left running; close the SSH connections it opened."""
        for runner in list(self.runners):
            with contextlib.suppress(Exception):
                runner.kill()
        for connection in self._connections:
            connection.close()
        self._connections.clear()


def run_task(c: StageContext, name: str, task: Task, arguments: dict, *, what: str, where: str = "") -> None:
    """Run the task (with its Invoke pre and post tasks) on a thread, its prints on stderr, for at most
    the stage's hook_timeout; HookFailed when it raises or is killed at the timeout."""
    session = c.session
    timeout = session.stage.hook_timeout
    label = f"{what} ({where})" if where else what
    session.run.screen.phase(f"{label}, tasks.py")
    session.run.log.write("hook", f"{label} starts")
    outcome: dict = {}

    def work() -> None:
        try:
            call_with_pre_post(c, task, arguments)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"skycap {what}", daemon=True)
    try:
        # stdout is for --output json alone: what tasks print goes with the human output
        with contextlib.redirect_stdout(sys.stderr):
            thread.start()
            thread.join(timeout)
            if thread.is_alive():
                _kill(thread, c)
                raise HookFailed(f"{what} in {c.project_tasks.path.name} did not finish within {timeout:g} s "
                                 f"(hook_timeout) and was killed", "raise hook_timeout in the stage file if "
                                 "that is normal for it")
    except BaseException as exc:
        if thread.is_alive():
            _kill(thread, c)
        session.run.log.write("hook", f"{label} stopped: {exc}")
        raise
    finally:
        c.close()
    error = outcome.get("error")
    if error is None:
        session.run.log.write("hook", f"{label} done")
        return
    session.run.log.write("hook", f"{label} failed:\n" + "".join(traceback.format_exception(error)))
    raise HookFailed(f"{what} in {c.project_tasks.path.name} failed: {describe(error)}") from None


def call_with_pre_post(c: StageContext, task: Task, arguments: dict) -> None:
    for call in _calls(task.pre):
        call_with_pre_post(c, call.task, call.kwargs or {})
    task(c, **arguments)
    for call in _calls(task.post):
        call_with_pre_post(c, call.task, call.kwargs or {})


def _calls(items) -> list[Call]:
    return [item if isinstance(item, Call) else Call(item) for item in items or ()]


def describe(error: BaseException) -> str:
    from invoke.exceptions import UnexpectedExit

    failed_hosts = getattr(error, "result", None)
    if type(error).__name__ == "GroupException" and isinstance(failed_hosts, dict):  # fabric's, per host
        return "; ".join(f"{connection.host}: {describe(outcome)}" for connection, outcome in failed_hosts.items()
                         if isinstance(outcome, BaseException))
    if isinstance(error, UnexpectedExit):
        return f"command {error.result.command!r} exited with {error.result.exited}"
    if isinstance(error, SkycapError):
        return error.message
    return f"{type(error).__name__}: {str(error).strip()[:500]}"


def _kill(thread: threading.Thread, c: StageContext) -> None:
    """Stop a task that outlived its timeout: kill the commands it runs, close its SSH connections, and
    raise TaskKilled in its thread (at its next Python instruction; a C call it waits in ends first)."""
    c.close()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(TaskKilled))
    thread.join(5)
