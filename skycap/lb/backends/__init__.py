"""The one small interface every balancer implements, and the errors the sync acts on."""

from __future__ import annotations

from dataclasses import dataclass

from skycap.errors import BadInput, SkycapError

ENABLED, DRAINING, DISABLED = "enabled", "draining", "disabled"


@dataclass(frozen=True, order=True)
class Member:
    address: str
    port: int

    @property
    def name(self) -> str:
        return f"{self.address}:{self.port}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class MemberState:
    state: str                      # ENABLED (takes new connections), DRAINING or DISABLED (takes none)
    connections: int | None = None  # current connections, where the balancer tells


class BalancerUnavailable(SkycapError):
    """The balancer's API did not answer, or answered busy: retry later; never a reason to remove a member."""

    exit_code = 1


class BalancerAuthFailed(BadInput):
    """The balancer refused the credentials (exit 2 for --once; retried with backoff when running)."""


class PoolMissing(BadInput):
    """The pool named in the stage file does not exist on the balancer (and create_pools is off)."""

    def __init__(self, pool: str, balancer: str):
        super().__init__(f"pool {pool!r} does not exist on the balancer ({balancer})",
                         "create it there, or set load_balancer.create_pools: true to let lb-sync create it")
        self.pool = pool


class Backend:
    """list the pool; add, enable, drain and remove members. Each call is one change, made at once."""

    describe = "balancer"

    def list_pool(self, pool: str) -> dict[Member, MemberState]:
        """The pool's members; PoolMissing when there is no such pool."""
        raise NotImplementedError

    def create_pool(self, pool: str) -> None:
        raise NotImplementedError

    def add(self, pool: str, member: Member) -> None:
        """Add the member, taking connections."""
        raise NotImplementedError

    def enable(self, pool: str, member: Member) -> None:
        raise NotImplementedError

    def drain(self, pool: str, member: Member) -> None:
        """No new connections; existing ones finish."""
        raise NotImplementedError

    def remove(self, pool: str, member: Member) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass
