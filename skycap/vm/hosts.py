"""SSH to VM hosts, with Fabric: ~/.ssh/config honoured, host keys verified, a timeout on everything.

Fabric's Connection resolves the host from ssh_config (HostName, Port, User,
IdentityFile, ProxyJump, ...). Skycap replaces its trust-anything host key policy
(fabric #2071) with known_hosts checking, and runs commands on its own channel
helper rather than Connection.run: Invoke feeds stdin one byte at a time and as
text, so it cannot stream the release archive, and one helper keeps one timeout
rule for every remote command.
"""

from __future__ import annotations

import os
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from skycap.errors import DeployFailed
from skycap.project.config import HOST_RE, is_host

GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
_record_lock = threading.Lock()


class VmHostError(DeployFailed):
    """Something went wrong on (or on the way to) one host."""

    def __init__(self, host: str, reason: str, hint: str | None = None):
        super().__init__(f"{host}: {reason}", hint)
        self.host = host
        self.reason = reason


class HostUnreachable(VmHostError):
    """No SSH session could be had (down, refused, timed out, login refused, connection lost)."""


class HostKeyRefused(VmHostError):
    """The host's key is unknown (and not accepted) or has changed."""

    def __init__(self, host: str, reason: str, hint: str, fingerprint: str):
        super().__init__(host, reason, hint)
        self.fingerprint = fingerprint


class RemoteCommandFailed(VmHostError):
    """A command on the host exited non-zero or ran out of time."""


@dataclass(frozen=True)
class SshOptions:
    connect_timeout: float
    command_timeout: float
    project_known_hosts: Path | None = None
    accept_new_host_keys: bool = False


@dataclass
class RemoteOutput:
    exit_code: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 5) -> str:
        """The last lines the command printed (stderr first), for error messages."""
        text = (self.stderr.strip() or self.stdout.strip())
        return " | ".join(text.splitlines()[-lines:])


def parse_host(spec: str) -> tuple[str | None, str, int | None]:
    """'user@host:port' (user and port optional, IPv6 in brackets) -> (user, host, port)."""
    match = HOST_RE.match(spec)
    if not match or not is_host(spec):
        raise HostUnreachable(spec, "not a host of the form user@host[:port] (port 1-65535)")
    port = int(match["port"]) if match["port"] else None
    return match["user"], match["host"].strip("[]"), port


def fingerprint(key) -> str:
    return key.fingerprint  # "SHA256:...", as ssh-keygen -lf prints it


def key_type(key) -> str:
    return key.get_name().removeprefix("ssh-").upper()


class HostConnection:
    """One open SSH connection to one host of a VM service."""

    def __init__(self, spec: str, options: SshOptions):
        self.spec = spec
        self.options = options
        self.connection = None
        self.sock: socket.socket | None = None
        self.known_hosts_files: list[Path] = []
        self.revoked: set[tuple[str, str]] = set()  # (type, base64) of keys on @revoked lines
        self.recorded_key: str | None = None  # "fingerprint in file" when --accept-new-host-keys recorded one

    @property
    def where(self) -> str:
        """How the host was reached, for messages: address and port after ssh_config."""
        if self.connection is None:
            return self.spec
        return f"{self.connection.host} port {self.connection.port}"

    def open(self) -> "HostConnection":
        import fabric

        user, host, port = parse_host(self.spec)
        timeout = self.options.connect_timeout
        # Banner and auth timeouts too: a host that accepts TCP and then stalls must not hang the deploy.
        self.connection = fabric.Connection(host, user=user, port=port, config=fabric.Config(),
                                            connect_kwargs={"banner_timeout": timeout, "auth_timeout": timeout})
        self._verify_host_keys(self.connection)
        if self.connection.gateway is None:
            self.sock = self._tcp_socket(self.connection.host, self.connection.port)
            self.connection.connect_kwargs["sock"] = self.sock
        try:
            self._connect()
        except BaseException:
            self.close()
            raise
        return self

    def _verify_host_keys(self, connection) -> None:
        """Known_hosts checking instead of Fabric's trust-anything, for the host and any ProxyJump hop."""
        import fabric

        connection.connect_timeout = self.options.connect_timeout  # after init: Fabric int()s it (0.5 -> never)
        user_files = self._load_known_hosts(connection)
        connection.client.set_missing_host_key_policy(
            _UnknownHostKeyPolicy(self, connection, user_files[0] if user_files else None))
        if isinstance(connection.gateway, fabric.Connection):
            self._verify_host_keys(connection.gateway)

    def _connect(self) -> None:
        import paramiko

        connection = self.connection
        try:
            connection.open()
        except paramiko.BadHostKeyException as exc:
            raise self._changed_key(exc) from None
        except paramiko.AuthenticationException:
            raise HostUnreachable(
                self.spec, f"login as {connection.user} on {self.where} was refused (no key was accepted)",
                f"is the deploy key in ~{connection.user}/.ssh/authorized_keys on the VM? Skycap offers the "
                "IdentityFile of ~/.ssh/config, your ssh-agent's keys and ~/.ssh/id_*") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(self.spec, f"SSH to {self.where} failed: {exc or type(exc).__name__}",
                                  "is sshd running on the VM? `ssh -v` to it from here shows more") from None

    def close(self) -> None:
        """Close the connection and any ProxyJump hops (Fabric's close leaves those open)."""
        connection = self.connection
        while connection is not None:
            connection.client.close()  # safe when never connected
            gateway = connection.gateway
            connection = gateway if hasattr(gateway, "client") else None
        if self.sock is not None:
            self.sock.close()

    def run(self, script: str, *, stdin: Path | None = None, timeout: float | None = None) -> RemoteOutput:
        """Run a POSIX sh script on the host (whatever the login shell); never raises on a non-zero exit."""
        import paramiko

        timeout = timeout or self.options.command_timeout
        deadline = time.monotonic() + timeout
        channel = None
        try:
            channel = self.connection.transport.open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(remote_command(script, timeout))
            if stdin is not None:
                _send_file(channel, stdin, deadline)
            channel.shutdown_write()
            stdout, stderr = _read_until_eof(channel, deadline)
            if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise socket.timeout()
            return RemoteOutput(channel.exit_status, stdout, stderr)
        except socket.timeout:
            raise RemoteCommandFailed(
                self.spec, f"a command did not finish within {timeout:g} s",
                "raise command_timeout in the stage file's vm block if that is normal for this step") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(self.spec, f"the connection to {self.where} was lost: {exc or type(exc).__name__}",
                                  "is the VM still up? Run `skycap status STAGE` to see where each host is") from None
        finally:
            if channel is not None:
                channel.close()

    def _tcp_socket(self, host: str, port: int) -> socket.socket:
        timeout = self.options.connect_timeout
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.gaierror:
            raise HostUnreachable(self.spec, f"unknown host name {host!r}",
                                  "check the hosts list in the stage file and HostName in ~/.ssh/config") from None
        except ConnectionRefusedError:
            raise HostUnreachable(self.spec, f"connection refused by {host} port {port}: no sshd listens there",
                                  "is the VM up and sshd running? Is the port right?") from None
        except (socket.timeout, TimeoutError):
            raise HostUnreachable(self.spec, f"no answer from {host} port {port} within {timeout:g} s",
                                  "is the VM up and reachable from here (firewall, VPN)? "
                                  "connect_timeout in the stage file sets how long to wait") from None
        except OSError as exc:
            raise HostUnreachable(self.spec, f"cannot connect to {host} port {port}: {exc.strerror or exc}") from None
        # Without TCP_NODELAY each small SSH request waits for a delayed ACK: about 40 ms per command.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _load_known_hosts(self, connection) -> list[Path]:
        """Load every known_hosts file that applies; return the user's files (new keys go to the first).

        A key on an `@revoked` line in any of them is trusted for no host, even where a plain line
        lists it: a host offering it reaches the policy, which refuses it. (OpenSSH scopes the line by
        its host pattern; this is stricter.)"""
        user_files = _user_known_hosts_files(connection.ssh_config)
        extra = [GLOBAL_KNOWN_HOSTS]
        if self.options.project_known_hosts:
            extra.append(self.options.project_known_hosts)
        self.known_hosts_files = [p for p in [*user_files, *extra] if p.is_file()]  # for messages
        files = []
        for path in self.known_hosts_files:
            try:
                files.append(path.read_text(errors="replace").splitlines())
            except OSError as exc:
                raise HostUnreachable(self.spec, f"cannot read {path}: {exc.strerror or exc}") from None
        self.revoked |= {key for lines in files for key in _revoked_keys(lines)}
        for lines in files:
            _add_known_hosts_lines(connection.client.get_host_keys(), lines, self.revoked)
        return user_files

    def _changed_key(self, exc) -> HostKeyRefused:
        offered, expected = exc.key, exc.expected_key
        name = _known_hosts_name(self.connection.host, self.connection.port)
        files = ", ".join(str(p) for p in self.known_hosts_files) or "known_hosts"
        return HostKeyRefused(
            self.spec,
            f"HOST KEY CHANGED for {self.where}: it offers {key_type(offered)} {fingerprint(offered)}, "
            f"but {files} has {key_type(expected)} {fingerprint(expected)}. Either the VM was rebuilt "
            "or someone is intercepting the connection; skycap refuses to connect "
            "(--accept-new-host-keys never overrides a changed key)",
            f"if the VM's owner confirms it was rebuilt with key {fingerprint(offered)}, remove the old key "
            f"with `ssh-keygen -R '{name}'` (add -f FILE for the project's known_hosts) and run again "
            "with --accept-new-host-keys",
            fingerprint(offered))


class _UnknownHostKeyPolicy:
    """Refuse a host that no known_hosts file knows, unless told to record new keys."""

    def __init__(self, host: HostConnection, connection, record_to: Path | None):
        self.host = host
        self.connection = connection  # the host's, or a ProxyJump hop's on the way to it
        self.record_to = record_to

    def missing_host_key(self, client, hostname: str, key) -> None:
        if (key.get_name(), key.get_base64()) in self.host.revoked:
            files = ", ".join(str(p) for p in self.host.known_hosts_files)
            raise HostKeyRefused(
                self.host.spec,
                f"host key REVOKED: {self.connection.host} port {self.connection.port} offers "
                f"{key_type(key)} {fingerprint(key)}, which {files} marks @revoked; skycap refuses to connect "
                "(--accept-new-host-keys never accepts a revoked key)",
                "the VM needs a new host key; once its owner has made one, record it with "
                "--accept-new-host-keys or ssh-keyscan",
                fingerprint(key))
        if self.host.options.accept_new_host_keys and self.record_to is not None:
            _record_host_key(self.record_to, hostname, key)
            self.host.recorded_key = f"{key_type(key)} {fingerprint(key)} in {self.record_to}"
            return
        connection = self.connection
        port_flag = f"-p {connection.port} " if connection.port != 22 else ""
        raise HostKeyRefused(
            self.host.spec,
            f"unknown host key for {connection.host} port {connection.port}: {key_type(key)} {fingerprint(key)}; "
            "skycap does not connect to a host it cannot verify",
            "compare that fingerprint with the VM's own (on the VM: `ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub`), then run again with --accept-new-host-keys to record it in "
            f"~/.ssh/known_hosts, or add it yourself: `ssh-keyscan {port_flag}{connection.host} >> "
            "~/.ssh/known_hosts`",
            fingerprint(key))


def _record_host_key(path: Path, hostname: str, key) -> None:
    from paramiko.hostkeys import HostKeyEntry

    with _record_lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as out:
            out.write(HostKeyEntry([hostname], key).to_line())


def _revoked_keys(lines: list[str]) -> set[tuple[str, str]]:
    """(type, base64) of the key on each `@revoked HOSTS TYPE KEY` line."""
    return {(fields[2], fields[3]) for fields in map(str.split, lines)
            if len(fields) >= 4 and fields[0] == "@revoked"}


def _add_known_hosts_lines(keys, lines: list[str], revoked: set[tuple[str, str]]) -> None:
    """Give paramiko the plain lines of a known_hosts file whose key is not revoked. paramiko's own
    loader fails on marker lines, so one @revoked line used to stop every connection. A line that
    cannot be read is skipped, as OpenSSH does; so is @cert-authority (paramiko does not check host
    certificates, so such a line vouches for nothing here)."""
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
    from paramiko.ssh_exception import SSHException

    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@")) or (fields[1], fields[2]) in revoked:
            continue
        try:
            entry = HostKeyEntry.from_line(line.strip())
        except (InvalidHostKey, SSHException):
            continue
        for name in entry.hostnames if entry is not None else ():
            keys.add(name, entry.key.get_name(), entry.key)


def _user_known_hosts_files(ssh_config) -> list[Path]:
    configured = ssh_config.get("userknownhostsfile")
    names = configured.split() if configured else ["~/.ssh/known_hosts"]
    return [Path(os.path.expanduser(name)) for name in names if name.lower() != "none"]


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _send_file(channel, path: Path, deadline: float) -> None:
    with open(path, "rb") as data:
        while chunk := data.read(1 << 16):
            if time.monotonic() > deadline:
                raise socket.timeout()
            channel.sendall(chunk)


def _read_until_eof(channel, deadline: float) -> tuple[str, str]:
    """Read stdout and stderr together, so neither can fill up and stall the other."""
    stdout, stderr = bytearray(), bytearray()
    while True:
        finished = channel.eof_received or channel.closed  # looked at first: no data can follow it
        while channel.recv_ready():
            stdout += channel.recv(1 << 16)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(1 << 16)
        if finished:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        select.select([channel], [], [], remaining)
    return stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")


def remote_command(script: str, seconds: float) -> str:
    """`sh -c script` under the host's `timeout` where it has one, so a command we stop waiting for is
    killed on the host too, children included (timeout signals its process group). The script is one
    quoted argument, never spliced into the guard."""
    guard = (f'if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {seconds:.3f} sh -c "$1"; fi; '
             'exec sh -c "$1"')
    return "sh -c " + shlex.quote(guard) + " skycap " + shlex.quote(script)
