"""Secrets stay secret: run logs and crash files only their owner can read, Secret values redacted
from what kubectl prints before it reaches the log or the screen, and registry credentials that
never cross plain HTTP to a host off this machine unless the stage allows it."""

from __future__ import annotations

import stat

import pytest
from pathlib import Path

from skycap.context import RunLog
from tests.deployproject import ROOT, skycap


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_logs_and_crash_files_are_private(isolated_home, monkeypatch):
    log = RunLog("test-deploy")
    log.write("kubectl:out", "what kubectl printed")
    assert mode(log.path) == 0o600 and mode(log.path.parent) == 0o700

    from skycap import pipelines

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipelines, "history", broken)
    ran = skycap("--project", str(ROOT), "history", "demo")
    crash = Path(ran.stderr.split("traceback is in ")[1].split(";")[0])
    assert crash.parent == log.path.parent and mode(crash) == 0o600


# --- registry credentials and plain HTTP


@pytest.fixture
def off_loopback_attempts(monkeypatch) -> list:
    """Every connection this process tries to a non-loopback address, refused before a packet leaves."""
    import ipaddress
    import socket

    attempts = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            attempts.append(address)
            raise OSError(f"the test forbids traffic to {host}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


@pytest.fixture
def registry_with_remote_login():
    """A registry on loopback whose login (token realm) is plain HTTP on an address off this machine."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{NOWHERE}/token",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


NOWHERE = "198.18.0.250"  # benchmarking space: no network namespace of ours uses it, nothing listens there


def test_credentials_go_over_plain_http_only_to_loopback_or_when_the_stage_allows_it():
    from skycap.registry import may_send_credentials

    for url in ("https://registry.example.com/v2/", f"https://{NOWHERE}:5000/v2/", "http://127.0.0.1:5000/v2/",
                "http://localhost:15000/token", "http://[::1]:5000/v2/"):
        assert may_send_credentials(url, insecure=False), url
    for url in (f"http://{NOWHERE}:5000/v2/", "http://registry.example.com/token", "http://10.0.0.1/v2/"):
        assert not may_send_credentials(url, insecure=False), url
        assert may_send_credentials(url, insecure=True), url


def test_a_loopback_registry_cannot_send_credentials_to_a_plain_http_login_elsewhere(
        registry_with_remote_login, off_loopback_attempts, monkeypatch):
    from skycap import registry as reg
    from skycap.errors import BadInput

    monkeypatch.setenv(reg.ENV_USERNAME, "ci")
    monkeypatch.setenv(reg.ENV_PASSWORD, "never-over-plain-http")
    with pytest.raises(BadInput) as caught:
        reg.image_exists(registry_with_remote_login, "skytap/web", "0123456789ab")
    assert off_loopback_attempts == []  # refused before any connection
    assert f"http://{NOWHERE}/token" in str(caught.value) and "not HTTPS" in str(caught.value)
    assert "registry_insecure: true" in str(caught.value)
