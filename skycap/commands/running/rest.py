"""GET requests to the Kubernetes API with the standard library only, for the commands whose whole
work is a request or two (`skycap logs`): importing and configuring the kubernetes client takes
0.2-0.4 s, several times what those requests take.

Only the plain kubeconfigs are read here: a server URL, its CA, a client certificate or a bearer
token. Any other (exec and auth-provider plugins, basic auth, proxies, a missing context) is left to
the kubernetes client, through the same api_get(), which also gives its usual errors."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from skycap.errors import SkycapError

PLAIN_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                      "extensions"}
PLAIN_USER_KEYS = {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
                   "client-key-data", "extensions"}


class ApiRefused(Exception):
    """The API server answered with an error status; body is its Status document."""

    def __init__(self, status: int, reason: str, body: bytes):
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.body = status, reason, body


class Endpoint:
    """The API server of one kubeconfig context: where it is, how to trust it, who we are."""

    def __init__(self, server: str, ssl_context, token: str | None):
        url = urlsplit(server)
        self.secure = url.scheme == "https"
        self.host, self.port, self.prefix = url.hostname, url.port or (443 if self.secure else 80), url.path.rstrip("/")
        self.netloc = url.netloc
        self.ssl_context, self.token = ssl_context, token
        self.tls_session = None  # the last connection's: the next one resumes it, a third of a full handshake

    def get(self, path: str, query: dict, timeout: float) -> bytes:
        """One request on a connection of its own, in HTTP/1.0: the body is all that comes until the server
        closes, never chunked, so a few lines do what http.client (and the email package it imports) would."""
        import socket

        query = {key: value for key, value in query.items() if value is not None}
        target = self.prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = [f"GET {target} HTTP/1.0", f"Host: {self.netloc}", "Accept: application/json", "User-Agent: skycap"]
        if self.token:
            headers.append(f"Authorization: Bearer {self.token}")
        host = self.host.encode() if self.host.isascii() else self.host  # a str goes through the idna codec: 1.4 ms
        with socket.create_connection((host, self.port), timeout=timeout) as plain:
            # The request goes in one write; without NODELAY, after a resumed handshake it waited for the
            # server's delayed ACK of our Finished message (40 ms: Nagle's algorithm).
            plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = plain
            if self.secure:
                connection = self.ssl_context.wrap_socket(plain, server_hostname=host, session=self.tls_session)
            with connection:
                connection.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
                response = _read_to_end(connection)
                if self.secure:
                    self.tls_session = connection.session
        return _response_body(response)


def _read_to_end(connection) -> bytes:
    chunks = []
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _response_body(response: bytes) -> bytes:
    """The body of a whole HTTP/1.0 response; ApiRefused for an error status, OSError for a cut one."""
    head, separator, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"the API server's answer is not HTTP: {response[:80]!r}")
    headers = dict(line.lower().split(":", 1) for line in header_lines if ":" in line)
    length = headers.get("content-length", "").strip()
    if length.isdigit() and len(body) < int(length):
        raise ConnectionError(f"the API server's answer was cut off after {len(body)} of {length} bytes")
    status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
    if status >= 400:
        raise ApiRefused(status, reason, body)
    return body


def api_get(session, path: str, query: dict, timeout: float | None = None) -> bytes:
    """The body of GET path?query; ApiRefused for an error status, OSError (or the client's HTTPError)
    when the server cannot be reached."""
    from skycap.cluster.kube import api_timeout

    timeout = timeout or api_timeout()
    endpoint = _endpoint(session)
    if endpoint is not None:
        return endpoint.get(path, query, timeout)
    return _client_get(session.api, path, query, timeout)


def api_get_json(session, what: str, path: str, query: dict):
    """api_get() as JSON, its failures as the errors a person can act on (as skycap.cluster.errors.call_api gives)."""
    try:
        return json.loads(api_get(session, path, query))
    except ApiRefused as exc:
        hint = (f"the kubeconfig's user may lack RBAC rights in namespace {session.stage.namespace}"
                if exc.status in (401, 403) else None)
        raise SkycapError(f"the Kubernetes API refused ({what}): {exc.status} {exc.reason}", hint) from None
    except SkycapError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ssl errors, or the client's urllib3 HTTPError
        if not _is_connection_error(exc):
            raise
        from skycap.cluster.errors import unreachable

        raise unreachable(session.stage, exc) from None


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # ssl's errors and ConnectionError too
        return True
    urllib3 = sys.modules.get("urllib3.exceptions")  # loaded only if the client was used
    return urllib3 is not None and isinstance(exc, urllib3.HTTPError)


def _client_get(api, path: str, query: dict, timeout: float) -> bytes:
    from kubernetes.client.rest import ApiException

    try:
        response = api.call_api(path, "GET", query_params=[(k, v) for k, v in query.items() if v is not None],
                                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                                _preload_content=False, _return_http_data_only=True, _request_timeout=timeout)
    except ApiException as exc:
        raise ApiRefused(exc.status, exc.reason, exc.body or b"") from None
    return response.data


def _endpoint(session):
    """The session's Endpoint, made once; None when the kubeconfig is not a plain one."""
    if not hasattr(session, "_rest_endpoint"):
        session._rest_endpoint = plain_endpoint(session.stage)
    return session._rest_endpoint


def plain_endpoint(stage) -> Endpoint | None:
    from skycap import yamlio
    from skycap.cluster.kube import kubeconfig_path

    path = Path(kubeconfig_path(stage) or os.path.expanduser("~/.kube/config"))
    try:
        config = yamlio.load(path.read_text()) or {}
        context = _named(config, "contexts", stage.context or config.get("current-context"))["context"]
        cluster = _named(config, "clusters", context["cluster"])["cluster"]
        user = _named(config, "users", context["user"])["user"] or {}
    except (OSError, yamlio.YAMLError, KeyError, TypeError, AttributeError):
        return None  # the client says what is wrong with it
    if set(cluster) - PLAIN_CLUSTER_KEYS or set(user) - PLAIN_USER_KEYS or "server" not in cluster:
        return None
    try:
        return Endpoint(cluster["server"], _ssl_context(path.parent, cluster, user), _token(path.parent, user))
    except (OSError, ValueError):
        return None


def _named(config: dict, kind: str, name: str) -> dict:
    for entry in config.get(kind) or []:
        if entry.get("name") == name:
            return entry
    raise KeyError(f"no {kind} entry {name!r}")


def _ssl_context(folder: Path, cluster: dict, user: dict):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif "certificate-authority-data" in cluster:
        context.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif "certificate-authority" in cluster:
        context.load_verify_locations(cafile=str(folder / cluster["certificate-authority"]))
    else:
        context.load_default_certs()  # the system's CAs: a tenth of a second or more, so only when needed
    certificate = _pem(folder, user, "client-certificate")
    if certificate:
        _load_client_certificate(context, certificate, _pem(folder, user, "client-key"))
    return context


def _pem(folder: Path, user: dict, key: str) -> bytes | None:
    if f"{key}-data" in user:
        return base64.b64decode(user[f"{key}-data"])
    if key in user:
        return (folder / user[key]).read_bytes()
    return None


def _load_client_certificate(context, certificate: bytes, key: bytes | None) -> None:
    """ssl reads a certificate chain only from files: written to a private folder and deleted at once."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="skycap-cert-") as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(certificate)
        if key:
            key_file.write_bytes(key)
        context.load_cert_chain(str(cert_file), str(key_file) if key else None)


def _token(folder: Path, user: dict) -> str | None:
    if user.get("token"):
        return user["token"]
    if user.get("tokenFile"):
        return (folder / user["tokenFile"]).read_text().strip()
    return None
