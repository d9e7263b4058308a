"""HAProxy through its runtime API (the `stats socket ... level admin`), one command per connection.

Members are dynamic servers named ADDRESS:PORT (`add server`, `set server ... state`, `del server`).
HAProxy forgets dynamic servers when it restarts; the periodic resync sees the empty backend and adds
them again."""

from __future__ import annotations

import csv
import io
import socket
from urllib.parse import urlsplit

from skycap.lb.backends import (DISABLED, DRAINING, ENABLED, Backend, BalancerUnavailable, Member, MemberState,
                                PoolMissing)

TIMEOUT = 5.0
NO_BACKEND = ("Can't find backend", "No such backend", "No such proxy")


class HAProxyError(BalancerUnavailable):
    """HAProxy answered a command with an error."""


class HAProxy(Backend):
    def __init__(self, api: str, timeout: float = TIMEOUT):
        self.api = api
        self.describe = f"HAProxy runtime API {api}"
        self.timeout = timeout
        parts = urlsplit(api)
        if parts.scheme == "unix":
            self.family, self.address = socket.AF_UNIX, parts.path
        else:
            self.family, self.address = socket.AF_INET, (parts.hostname, parts.port)

    def command(self, line: str) -> str:
        """Send one command on a fresh connection and return the whole answer."""
        if "\n" in line or ";" in line:
            raise ValueError(f"one HAProxy command at a time: {line!r}")
        try:
            with socket.socket(self.family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.address)
                sock.sendall(line.encode() + b"\n")
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise BalancerUnavailable(f"cannot reach the {self.describe}: {exc.strerror or exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def list_pool(self, pool: str) -> dict[Member, MemberState]:
        answer = self.command(f"show stat {pool} 4 -1")
        if not answer.startswith("# "):
            if any(text in answer for text in NO_BACKEND):
                raise PoolMissing(pool, self.describe)
            raise HAProxyError(f"HAProxy did not list backend {pool}: {answer.strip()[:200]}")
        rows = csv.DictReader(io.StringIO(answer[2:]))
        members = {}
        for row in rows:
            if row.get("pxname") != pool or not row.get("addr"):
                continue
            address, _, port = row["addr"].rpartition(":")
            member = Member(address.strip("[]"), int(port))
            members[member] = MemberState(_state(row.get("status", "")), _int(row.get("scur")))
        if not members and not self._backend_exists(pool):
            raise PoolMissing(pool, self.describe)
        return members

    def _backend_exists(self, pool: str) -> bool:
        names = self.command("show backend").splitlines()
        return pool in (name.strip() for name in names if not name.startswith("#"))

    def create_pool(self, pool: str) -> None:
        raise PoolMissing(pool, self.describe + "; HAProxy cannot create a backend at run time: declare it "
                                                "in haproxy.cfg")

    def add(self, pool: str, member: Member) -> None:
        self._expect(pool, f"add server {pool}/{member.name} {_address(member)}", ("New server registered",),
                     ("Already exists",))
        self.enable(pool, member)

    def enable(self, pool: str, member: Member) -> None:
        self._expect(pool, f"set server {pool}/{member.name} state ready", ("",))

    def drain(self, pool: str, member: Member) -> None:
        self._expect(pool, f"set server {pool}/{member.name} state drain", ("",))

    def remove(self, pool: str, member: Member) -> None:
        self._expect(pool, f"set server {pool}/{member.name} state maint", ("",), ("No such server",))
        self._expect(pool, f"shutdown sessions server {pool}/{member.name}", ("",), ("No such server",))
        self._expect(pool, f"del server {pool}/{member.name}", ("Server deleted",), ("No such server",))

    def _expect(self, pool: str, line: str, good: tuple[str, ...], also_fine: tuple[str, ...] = ()) -> None:
        answer = self.command(line).strip()
        if any(answer.startswith(g) for g in good if g) or (answer == "" and "" in good):
            return
        if any(text in answer for text in also_fine):
            return
        if any(text in answer for text in NO_BACKEND):
            raise PoolMissing(pool, self.describe)
        raise HAProxyError(f"HAProxy refused `{line}`: {answer[:200]}")


def _address(member: Member) -> str:
    return f"[{member.address}]:{member.port}" if ":" in member.address else member.name


def _state(status: str) -> str:
    if status.startswith("MAINT"):
        return DISABLED
    if status.startswith(("DRAIN", "NOLB")):
        return DRAINING
    return ENABLED


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None
