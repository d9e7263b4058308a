"""A small iControl REST server, written from F5's published API reference, for testing the F5 backend.

No BIG-IP can run here. This server keeps pools and members the way the reference describes them and
gives its known failure answers: 401 for a bad or expired token (or bad credentials), 503 while busy,
404 for a missing pool or member, 409 for a member or pool that exists. Token login at
/mgmt/shared/authn/login (tokens expire; at most 100 per user), basic auth for local users."""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

MAX_TOKENS = 100
POOL_RE = re.compile(r"^/mgmt/tm/ltm/pool/~([^~/]+)~([^/]+)(/members(?:/~([^~/]+)~([^/]+))?)?$")


class IControlState:
    def __init__(self, username: str, password: str, token_seconds: float = 1200.0):
        self.username, self.password, self.token_seconds = username, password, token_seconds
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}          # token -> expiry (monotonic)
        self.logins = 0
        self.pools: dict[tuple[str, str], dict[str, dict]] = {}   # (partition, pool) -> member name -> member
        self.busy = 0                               # answer this many next requests with 503
        self.token_login = True                     # False: no /authn/login (404): basic auth only
        self.requests: list[tuple[str, str, int]] = []

    def add_pool(self, name: str, partition: str = "Common") -> None:
        with self.lock:
            self.pools.setdefault((partition, name), {})

    def members(self, name: str, partition: str = "Common") -> dict[str, dict]:
        with self.lock:
            return {k: dict(v) for k, v in self.pools[(partition, name)].items()}

    def expire_tokens(self) -> None:
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = 0.0


def _error(code: int, message: str) -> tuple[int, dict]:
    return code, {"code": code, "message": message, "errorStack": [], "apiError": 3}


class Handler(BaseHTTPRequestHandler):
    state: IControlState

    def _reply(self, code: int, body: dict | None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        code, answer = self._route(method, self.path, body)
        with self.state.lock:
            self.state.requests.append((method, self.path, code))
        self._reply(code, answer)

    do_GET = lambda self: self._handle("GET")
    do_POST = lambda self: self._handle("POST")
    do_PATCH = lambda self: self._handle("PATCH")
    do_PUT = lambda self: self._handle("PUT")
    do_DELETE = lambda self: self._handle("DELETE")

    def log_message(self, *args):
        pass

    def _route(self, method: str, path: str, body: dict) -> tuple[int, dict]:
        state = self.state
        with state.lock:
            if state.busy > 0:
                state.busy -= 1
                return _error(503, "The service is temporarily unavailable (busy).")
        if path == "/mgmt/shared/authn/login" and method == "POST":
            return self._login(body)
        refusal = self._authenticate()
        if refusal:
            return refusal
        with state.lock:
            if path == "/mgmt/tm/ltm/pool" and method == "POST":
                key = (body.get("partition", "Common"), body["name"])
                if key in state.pools:
                    return _error(409, f"01020066:3: The requested Pool (/{key[0]}/{key[1]}) already exists "
                                       f"in partition {key[0]}.")
                state.pools[key] = {}
                for member in body.get("members") or []:
                    state.pools[key][member["name"]] = _member(member, key[0])
                return 200, _pool(key)
            match = POOL_RE.match(path)
            if not match:
                return _error(404, f"Public URI path not registered: {path}")
            partition, pool, members_part, _mpartition, member_name = match.groups()
            key = (partition, unquote(pool))
            if key not in state.pools:
                return _error(404, f"01020036:3: The requested Pool (/{key[0]}/{key[1]}) was not found.")
            members = state.pools[key]
            if not members_part:
                if method == "GET":
                    return 200, _pool(key)
                if method == "PUT":
                    state.pools[key] = {m["name"]: _member(m, partition) for m in body.get("members") or []}
                    return 200, _pool(key)
                return _error(405, "method not allowed")
            if member_name is None:
                if method == "GET":
                    return 200, {"kind": "tm:ltm:pool:members:memberscollectionstate",
                                 "items": list(members.values())}
                if method == "POST":
                    name = body["name"]
                    if name in members:
                        return _error(409, f"01020066:3: The requested Pool Member (/{partition}/{key[1]} "
                                           f"/{partition}/{name.replace(':', ' ')}) already exists in partition "
                                           f"{partition}.")
                    members[name] = _member(body, partition)
                    return 200, members[name]
                return _error(405, "method not allowed")
            name = unquote(member_name)
            if name not in members:
                return _error(404, f"01020036:3: The requested Pool Member (/{partition}/{key[1]} "
                                   f"/{partition}/{name}) was not found.")
            if method == "GET":
                return 200, members[name]
            if method == "PATCH":
                members[name].update({k: v for k, v in body.items() if k in ("session", "state")})
                return 200, members[name]
            if method == "DELETE":
                del members[name]
                return 200, {}
            return _error(405, "method not allowed")

    def _login(self, body: dict) -> tuple[int, dict]:
        state = self.state
        with state.lock:
            if not state.token_login:
                return _error(404, "Public URI path not registered: /mgmt/shared/authn/login")
            if body.get("username") != state.username or body.get("password") != state.password:
                return _error(401, "Authentication failed.")
            now = time.monotonic()
            state.tokens = {t: e for t, e in state.tokens.items() if e > now}
            if len(state.tokens) >= MAX_TOKENS:
                return _error(400, "Maximum number of active login tokens reached for this user.")
            token = secrets.token_hex(13).upper()
            state.tokens[token] = now + state.token_seconds
            state.logins += 1
            return 200, {"username": state.username, "loginProviderName": "tmos",
                         "token": {"token": token, "name": token, "userName": state.username,
                                   "timeout": state.token_seconds}}

    def _authenticate(self) -> tuple[int, dict] | None:
        state = self.state
        token = self.headers.get("X-F5-Auth-Token")
        with state.lock:
            if token:
                expiry = state.tokens.get(token)
                if expiry is None:
                    return _error(401, "X-F5-Auth-Token does not exist.")
                if expiry <= time.monotonic():
                    return _error(401, "X-F5-Auth-Token has expired.")
                return None
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
            if user == state.username and password == state.password:
                return None
        return _error(401, "Authorization failed: no user authentication header or token detected.")


def _member(body: dict, partition: str) -> dict:
    name = body["name"]
    return {"kind": "tm:ltm:pool:members:membersstate", "name": name, "partition": partition,
            "fullPath": f"/{partition}/{name}", "address": body.get("address") or name.rpartition(":")[0],
            "session": body.get("session", "user-enabled"), "state": body.get("state", "unchecked")}


def _pool(key: tuple[str, str]) -> dict:
    return {"kind": "tm:ltm:pool:poolstate", "name": key[1], "partition": key[0], "fullPath": f"/{key[0]}/{key[1]}",
            "loadBalancingMode": "round-robin"}


class IControlServer:
    """The server on a loopback port; stop() and start() again on the same port, state kept."""

    def __init__(self, username: str = "admin", password: str = "s3cret-pass", port: int = 0):
        self.state = IControlState(username, password)
        self.port = port
        self.httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "IControlServer":
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
