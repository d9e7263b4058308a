"""F5 BIG-IP over iControl REST.

One token from /mgmt/shared/authn/login, reused and replaced a minute before it expires (a user may
hold at most 100); basic auth when the device offers no token login. Members are named ADDRESS:PORT;
drain = session user-disabled; removal = DELETE. 401 on a token: log in again once; 503 (busy): a few
quick retries, then BalancerUnavailable for the caller's backoff; 404: the pool is missing."""

from __future__ import annotations

import time
from urllib.parse import quote

from skycap.lb.backends import (DISABLED, DRAINING, ENABLED, Backend, BalancerAuthFailed, BalancerUnavailable, Member,
                                MemberState, PoolMissing)

TIMEOUT = 10.0
REFRESH_MARGIN = 60.0   # seconds before its expiry a token is replaced
BUSY_RETRIES = 3
BUSY_DELAY = 0.2


class F5(Backend):
    def __init__(self, api: str, username: str, password: str, partition: str = "Common",
                 verify: bool | str = True, timeout: float = TIMEOUT):
        import requests

        self.api, self.partition, self.timeout = api, partition, timeout
        self.describe = f"F5 iControl REST {api}"
        self._username, self._password = username, password
        self.http = requests.Session()
        self.http.verify = verify
        self.token: str | None = None
        self.token_expires = 0.0
        self.basic_auth = False

    def __repr__(self) -> str:  # never the password
        return f"F5({self.api!r}, partition={self.partition!r})"

    # ----- authentication -----
    def _login(self) -> None:
        body = {"username": self._username, "password": self._password, "loginProviderName": "tmos"}
        response = self._send_while_busy("POST", "/mgmt/shared/authn/login", json=body, auth=False)
        if response.status_code in (401, 403):
            raise BalancerAuthFailed(f"the F5 at {self.api} refused the credentials of user {self._username!r}",
                                     "check the password in the credentials' source (environment or Secret)")
        if response.status_code == 404:  # no token login on this device: basic auth, local users only
            self.basic_auth = True
            return
        _raise_for(response, "log in", self)
        token = response.json().get("token") or {}
        self.token = token.get("token")
        if not self.token:
            raise BalancerUnavailable(f"the F5 at {self.api} answered the login without a token")
        lifetime = float(token.get("timeout") or 1200)
        self.token_expires = time.monotonic() + lifetime

    def _auth_headers(self) -> dict:
        if self.basic_auth:
            return {}
        if self.token is None or time.monotonic() > self.token_expires - REFRESH_MARGIN:
            self._login()
        return {} if self.basic_auth else {"X-F5-Auth-Token": self.token}

    def _send(self, method: str, path: str, auth: bool = True, **kwargs):
        import requests

        headers = self._auth_headers() if auth else {}
        basic = (self._username, self._password) if auth and self.basic_auth else None
        try:
            return self.http.request(method, self.api + path, headers=headers, auth=basic, timeout=self.timeout,
                                     **kwargs)
        except requests.RequestException as exc:
            raise BalancerUnavailable(f"cannot reach the {self.describe}: {type(exc).__name__}") from None

    def _send_while_busy(self, method: str, path: str, **kwargs):
        """A few quick retries while the device answers 503 (busy)."""
        for attempt in range(BUSY_RETRIES + 1):
            response = self._send(method, path, **kwargs)
            if response.status_code != 503:
                return response
            time.sleep(BUSY_DELAY * (attempt + 1))
        raise BalancerUnavailable(f"the F5 at {self.api} stayed busy (503) for {method} {path}")

    def request(self, method: str, path: str, **kwargs):
        """One API call: on 401, a new token once (the old one expired or was revoked)."""
        response = self._send_while_busy(method, path, **kwargs)
        if response.status_code == 401 and not self.basic_auth:
            self.token = None
            response = self._send_while_busy(method, path, **kwargs)
        if response.status_code == 401:
            raise BalancerAuthFailed(f"the F5 at {self.api} refused user {self._username!r} ({method} {path})",
                                     "check the credentials and the user's role on the device")
        return response

    # ----- pools -----
    def _pool_path(self, pool: str) -> str:
        return f"/mgmt/tm/ltm/pool/~{self.partition}~{quote(pool, safe='')}"

    def _member_path(self, pool: str, member: Member) -> str:
        return f"{self._pool_path(pool)}/members/~{self.partition}~{quote(member.name, safe='')}"

    def list_pool(self, pool: str) -> dict[Member, MemberState]:
        response = self.request("GET", self._pool_path(pool) + "/members")
        if response.status_code == 404:
            raise PoolMissing(pool, self.describe)
        _raise_for(response, f"list pool {pool}", self)
        members = {}
        for item in response.json().get("items") or []:
            address, _, port = item.get("name", "").rpartition(":")
            if not port.isdigit():
                continue
            members[Member(item.get("address") or address, int(port))] = MemberState(_state(item))
        return members

    def create_pool(self, pool: str) -> None:
        body = {"name": pool, "partition": self.partition, "loadBalancingMode": "round-robin", "members": []}
        response = self.request("POST", "/mgmt/tm/ltm/pool", json=body)
        if response.status_code != 409:
            _raise_for(response, f"create pool {pool}", self)

    def add(self, pool: str, member: Member) -> None:
        response = self.request("POST", self._pool_path(pool) + "/members",
                                json={"name": member.name, "address": member.address})
        if response.status_code == 409:  # there already (someone else, or our last try): make it take traffic
            self.enable(pool, member)
            return
        self._check(response, pool, f"add {member} to pool {pool}")

    def enable(self, pool: str, member: Member) -> None:
        self._patch(pool, member, {"state": "user-up", "session": "user-enabled"}, "enable")

    def drain(self, pool: str, member: Member) -> None:
        self._patch(pool, member, {"session": "user-disabled"}, "drain")

    def remove(self, pool: str, member: Member) -> None:
        response = self.request("DELETE", self._member_path(pool, member))
        if response.status_code == 404 and self._pool_exists(pool):
            return  # gone already
        self._check(response, pool, f"remove {member} from pool {pool}")

    def _patch(self, pool: str, member: Member, body: dict, what: str) -> None:
        response = self.request("PATCH", self._member_path(pool, member), json=body)
        self._check(response, pool, f"{what} {member} in pool {pool}")

    def _check(self, response, pool: str, what: str) -> None:
        if response.status_code == 404 and not self._pool_exists(pool):
            raise PoolMissing(pool, self.describe)
        _raise_for(response, what, self)

    def _pool_exists(self, pool: str) -> bool:
        return self.request("GET", self._pool_path(pool)).status_code != 404

    def close(self) -> None:
        self.http.close()


def _state(item: dict) -> str:
    if item.get("state") in ("user-down", "forced-offline"):
        return DISABLED
    if item.get("session") == "user-disabled":
        return DRAINING
    return ENABLED


def _raise_for(response, what: str, backend: F5) -> None:
    if 200 <= response.status_code < 300:
        return
    try:
        message = response.json().get("message") or ""
    except ValueError:
        message = response.text[:200]
    raise BalancerUnavailable(f"the F5 at {backend.api} could not {what}: {response.status_code} {message}".strip())
