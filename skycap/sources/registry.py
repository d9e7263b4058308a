"""Does registry/repository:tag exist? The OCI distribution API, with Docker's ways to log in.

Credentials come from SKYCAP_REGISTRY_USERNAME/SKYCAP_REGISTRY_PASSWORD, else the docker
config ($DOCKER_CONFIG/config.json or ~/.docker/config.json: credHelpers, auths, credsStore).
They are looked up only when the registry asks for them, and never printed.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urljoin, urlsplit

from skycap.errors import BadInput, SkycapError

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
ENV_USERNAME, ENV_PASSWORD = "SKYCAP_REGISTRY_USERNAME", "SKYCAP_REGISTRY_PASSWORD"
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
REFERENCE_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[0-9a-f]{64})$")
RETRY_STATUSES = {429, 500, 502, 503, 504}
RETRIES = 2
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    secret: str = field(repr=False)   # a password, or an OAuth2 refresh token when identity_token is set
    source: str                       # where they were read, for messages
    identity_token: bool = False

    def __str__(self) -> str:
        return f"credentials from {self.source}"


def image_digest(registry: str, repository: str, tag: str, *, insecure: bool = False,
                 timeout: float = 10.0) -> str | None:
    """The manifest digest of repository:tag, or None when the registry does not have it."""
    return Registry(registry, insecure=insecure, timeout=timeout).manifest_digest(repository, tag)


def image_exists(registry: str, repository: str, tag: str, *, insecure: bool = False, timeout: float = 10.0) -> bool:
    return image_digest(registry, repository, tag, insecure=insecure, timeout=timeout) is not None


def image_digests(registry: str, images: Iterable[tuple[str, str, str]], insecure: bool = False, *,
                  timeout: float = 10.0, workers: int = 8) -> dict[str, str | None]:
    """{service: digest or None} for (service, repository, tag) triples, asked concurrently."""
    images = list(images)
    client = Registry(registry, insecure=insecure, timeout=timeout)
    unique = list(dict.fromkeys((repo, tag) for _, repo, tag in images))
    # The first question alone: it settles HTTPS or plain HTTP for a loopback registry, which the
    # others would each find out with a TLS handshake of their own (a CA bundle load each).
    found = {key: client.manifest_digest(*key) for key in unique[:1]}
    if len(unique) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(unique) - 1)) as pool:
            futures = {key: pool.submit(client.manifest_digest, *key) for key in unique[1:]}
        found.update((key, future.result()) for key, future in futures.items())  # the first error, in order
    return {service: found[(repo, tag)] for service, repo, tag in images}


def check_images(registry: str, images: Iterable[tuple[str, str, str]], insecure: bool = False, *,
                 timeout: float = 10.0) -> list[tuple[str, str, str]]:
    """The (service, repository, tag) triples whose image the registry does not have."""
    images = list(images)
    digests = image_digests(registry, images, insecure, timeout=timeout)
    return [image for image in images if digests[image[0]] is None]


def require_images(registry: str, images: Iterable[tuple[str, str, str]], insecure: bool = False, *,
                   timeout: float = 10.0) -> dict[str, str]:
    """{service: digest}; BadInput naming every service whose image is missing."""
    images = list(images)
    digests = image_digests(registry, images, insecure, timeout=timeout)
    missing = [f"{service}: {registry_name(registry)}/{repo}:{tag}" for service, repo, tag in images
               if digests[service] is None]
    if missing:
        noun = "image does" if len(missing) == 1 else "images do"
        raise BadInput(f"{len(missing)} {noun} not exist in the registry:\n  " + "\n  ".join(missing),
                       "CI may not have built and pushed it yet; wait for it, or check the revision")
    return digests


def registry_name(registry: str) -> str:
    """host[:port] of a registry given with or without a scheme."""
    return urlsplit(registry if "://" in registry else "//" + registry).netloc


def may_send_credentials(url: str, insecure: bool) -> bool:
    """Credentials cross plain HTTP only to this machine, or where the stage says registry_insecure: true."""
    parts = urlsplit(url)
    return parts.scheme.lower() == "https" or insecure or is_loopback(parts.hostname or "")


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def docker_config_path() -> Path:
    folder = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(folder) / "config.json"


def credential_sources() -> str:
    config = docker_config_path()
    return f"{ENV_USERNAME}/{ENV_PASSWORD}, or the docker config {config} (auths, credHelpers, credsStore)"


def find_credentials(registry: str) -> Credentials | None:
    """The environment first, then the docker config: credHelpers, auths, credsStore, as docker reads them."""
    username, password = os.environ.get(ENV_USERNAME), os.environ.get(ENV_PASSWORD)
    if username and password:
        return Credentials(username, password, f"{ENV_USERNAME}/{ENV_PASSWORD}")
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read the docker config {path}: {exc}") from None
    name = registry_name(registry)
    helper = _lookup(config.get("credHelpers") or {}, name)
    if helper:
        return _from_helper(helper, name)
    entry = _lookup(config.get("auths") or {}, name)
    if entry:
        found = _from_auths_entry(entry, str(path))
        if found:
            return found
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], name)
    return None


def _lookup(table: dict, name: str):
    """The value for this registry in a docker config table, whose keys may carry a scheme and a path."""
    wanted = {"index.docker.io"} if name in DOCKER_HUB else {name}
    for key, value in table.items():
        if registry_name(key.rstrip("/")) in wanted or key in wanted:
            return value
    return None


def _from_auths_entry(entry: dict, source: str) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(entry.get("username", ""), entry["identitytoken"], source, identity_token=True)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], source)
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            raise BadInput(f"the docker config {source} has an auth entry that is not base64 of user:password"
                           ) from None
        return Credentials(username, password, source)
    return None


def _from_helper(helper: str, name: str) -> Credentials | None:
    from skycap.errors import CommandFailed
    from skycap.proc import run

    program = f"docker-credential-{helper}"
    try:
        out = run([program, "get"], input=name, timeout=30).stdout
    except CommandFailed as exc:
        if "not found" in (exc.stdout + exc.stderr).lower():
            return None
        raise BadInput(f"the docker credential helper {program} failed (exit {exc.returncode})") from None
    except BadInput:
        raise BadInput(f"the docker config {docker_config_path()} names the credential helper {program}, "
                       "which is not installed") from None
    try:
        data = json.loads(out)
    except ValueError:
        raise BadInput(f"the docker credential helper {program} gave an answer that is not JSON") from None
    source = f"the credential helper {program}"
    if data.get("Username") == "<token>":
        return Credentials("", data.get("Secret", ""), source, identity_token=True)
    return Credentials(data.get("Username", ""), data.get("Secret", ""), source)


class Registry:
    """One registry, spoken to over HTTPS (or plain HTTP where allowed) with Docker's auth flow."""

    def __init__(self, registry: str, *, insecure: bool = False, timeout: float = 10.0):
        scheme = urlsplit(registry).scheme.lower() if "://" in registry else ""
        self.name = registry_name(registry)
        host = urlsplit("//" + self.name).hostname or ""
        if not host or scheme not in ("", "http", "https"):
            raise BadInput(f"{registry!r} is not a registry address", "write it as host[:port]")
        self.plain_allowed = insecure or is_loopback(host)
        if scheme == "http" and not self.plain_allowed:
            raise _plain_refused(self.name)
        self.base = f"{scheme or 'https'}://{self.name}"
        self._may_fall_back = not scheme and self.plain_allowed  # Docker's way: try HTTPS, then plain HTTP
        self._verify = not insecure
        self._insecure = insecure
        self._timeout = timeout
        self._loopback = is_loopback(host)
        self._auth: dict[str, str] = {}   # scope -> Authorization header value, from earlier challenges
        self._credentials: Credentials | None | bool = False  # False: not looked up yet
        self._lock = threading.Lock()
        self._session = None

    def __repr__(self) -> str:
        return f"Registry({self.base!r})"

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        _check_name(repository, reference)
        path = f"/v2/{repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self.request("HEAD", path, repository=repository, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.unexpected(response, f"{repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:  # the header is optional in the spec: hash the manifest itself
            body = self.request("GET", path, repository=repository, headers=headers).content
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return digest

    def _url(self, path: str) -> str:
        return path if "://" in path else self.base + path

    def request(self, method: str, path: str, *, repository: str | None = None, actions: str = "pull",
                headers: dict | None = None, data: bytes | None = None):
        """Send to a path (or a URL the registry gave), answering one auth challenge.

        401 or 403 after that is a BadInput about credentials.
        """
        scope = f"repository:{repository}:{actions}" if repository else ""
        headers = dict(headers or {})
        if scope in self._auth:
            headers["Authorization"] = self._auth[scope]
        response = self._send(method, self._url(path), headers, data)
        if response.status_code == 401:
            answer = self._answer(response.headers.get("WWW-Authenticate", ""), scope)
            if answer:
                self._auth[scope] = headers["Authorization"] = answer
                response = self._send(method, self._url(path), headers, data)
        if response.status_code in (401, 403):
            raise self._denied(response.status_code, repository)
        return response

    def absolute(self, location: str) -> str:
        """A Location the registry gave, made absolute."""
        return urljoin(self.base + "/", location)

    def unexpected(self, response, what: str) -> SkycapError:
        return BadInput(f"the image registry {self.name} answered HTTP {response.status_code} for {what}"
                        f"{_error_text(response)}")

    def _send(self, method: str, url: str, headers: dict, data: bytes | None):
        import requests

        attempt = 0
        while True:
            if "Authorization" in headers and not may_send_credentials(url, self._insecure):
                raise BadInput(f"refusing to send credentials for the image registry {self.name} over plain HTTP "
                               f"to {urlsplit(url).netloc}, which is not on this machine",
                               "use HTTPS, or set registry_insecure: true in the stage if the network between "
                               "is trusted")
            try:
                response = self._http().request(method, url, headers=headers, data=data, timeout=self._timeout,
                                                verify=self._verify, allow_redirects=True)
            except requests.exceptions.SSLError as exc:
                if self._may_fall_back and url.startswith(f"https://{self.name}/"):
                    self.base = f"http://{self.name}"
                    url = "http://" + url.removeprefix("https://")
                    continue
                raise self._tls_error(exc) from None
            except requests.exceptions.RequestException as exc:
                raise unreachable(self.name, exc) from None
            if response.status_code not in RETRY_STATUSES or attempt == RETRIES:
                return response
            time.sleep(0.3 * 2 ** attempt)
            attempt += 1

    def _http(self):
        with self._lock:
            if self._session is None:
                import requests

                self._session = requests.Session()
                # A proxy from the environment has no business between us and a loopback registry.
                self._session.trust_env = not self._loopback
                if not self._verify:
                    import urllib3

                    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            return self._session

    def _credentials_once(self) -> Credentials | None:
        with self._lock:
            if self._credentials is False:
                self._credentials = find_credentials(self.name)
            return self._credentials

    def _answer(self, header: str, scope: str) -> str | None:
        scheme, params = parse_challenge(header)
        credentials = self._credentials_once()
        if scheme == "basic":
            if not credentials or credentials.identity_token:
                return None
            pair = f"{credentials.username}:{credentials.secret}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if scheme == "bearer" and params.get("realm"):
            return "Bearer " + self._token(params, scope, credentials)
        return None

    def _token(self, params: dict[str, str], scope: str, credentials: Credentials | None) -> str:
        import requests

        realm = params["realm"]
        realm_host = urlsplit(realm).hostname or ""
        if not may_send_credentials(realm, self._insecure):
            raise BadInput(f"the image registry {self.name} sends logins to {realm}, which is not HTTPS; "
                           "refusing to send credentials there",
                           "if that is intended, set registry_insecure: true in the stage")
        query = {"service": params.get("service", ""), "scope": params.get("scope") or scope}
        try:
            if credentials and credentials.identity_token:
                form = {**query, "grant_type": "refresh_token", "refresh_token": credentials.secret,
                        "client_id": "skycap"}
                response = self._http().post(realm, data=form, timeout=self._timeout, verify=self._verify)
            else:
                auth = (credentials.username, credentials.secret) if credentials else None
                response = self._http().get(realm, params=query, auth=auth, timeout=self._timeout,
                                            verify=self._verify)
        except requests.exceptions.RequestException as exc:
            raise unreachable(f"{self.name}'s token server {realm_host}", exc) from None
        if response.status_code in (401, 403):
            raise self._denied(response.status_code, scope.split(":")[1] if scope else None)
        try:
            body = response.json()
            return body.get("token") or body["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise BadInput(f"the token server of {self.name} ({realm_host}) answered HTTP {response.status_code} "
                           "without a token") from None

    def _denied(self, status: int, repository: str | None) -> BadInput:
        credentials = self._credentials if self._credentials is not False else None
        what = f" for {repository}" if repository else ""
        if not credentials:
            return BadInput(f"the image registry {self.name} needs credentials{what}, and none were found "
                            f"(HTTP {status})",
                            f"skycap reads them from {credential_sources()}; `docker login {self.name}` writes them")
        refused = "does not allow" if status == 403 else "refused"
        return BadInput(f"the image registry {self.name} {refused} the {credentials}{what} (HTTP {status})",
                        f"check the username and password there; skycap reads them from {credential_sources()}")

    def _tls_error(self, exc) -> BadInput:
        return BadInput(f"cannot talk HTTPS to the image registry {self.name}: {_reason(exc)}",
                        "if it serves plain HTTP or has a self-signed certificate, set registry_insecure: true "
                        "in the stage (plain HTTP is used without it only for localhost and 127.0.0.1)")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)
    params = {key.lower(): quoted or bare for key, quoted, bare in pairs}
    return scheme.lower(), params


def unreachable(name: str, exc: Exception) -> BadInput:
    return BadInput(f"cannot reach the image registry {name}: {_reason(exc)}",
                    "check the stage's registry: setting and that the registry is up and reachable from here "
                    "(network, VPN, proxy); in an emergency, deploy --skip-image-check skips this check")


def _plain_refused(name: str) -> BadInput:
    return BadInput(f"refusing plain HTTP to the image registry {name}: only localhost and 127.0.0.1 get it "
                    "without asking",
                    "use HTTPS, or set registry_insecure: true in the stage if this registry really serves plain HTTP")


def _check_name(repository: str, reference: str) -> None:
    if not REPOSITORY_RE.match(repository):
        raise BadInput(f"{repository!r} is not a valid image repository name")
    if not REFERENCE_RE.match(reference):
        raise BadInput(f"{reference!r} is not a valid image tag or digest")


def _reason(exc: Exception) -> str:
    import requests

    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time"
    for needle, reason in (("refused", "connection refused"), ("Name or service not known", "unknown host name"),
                           ("Temporary failure in name resolution", "the host name does not resolve"),
                           ("No route to host", "no route to host"), ("CERTIFICATE_VERIFY_FAILED",
                                                                      "its certificate is not trusted"),
                           ("WRONG_VERSION_NUMBER", "it does not speak TLS")):
        if needle in text:
            return reason
    return text.rsplit(": ", 1)[-1].strip("')\"") or type(exc).__name__


def _error_text(response) -> str:
    try:
        errors = response.json().get("errors") or []
        return ": " + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) if errors else ""
    except (ValueError, AttributeError):
        return ""
