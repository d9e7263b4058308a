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

    from skycap.commands import history as history_command

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(history_command, "history", broken)
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
    from skycap.sources.registry import may_send_credentials

    for url in ("https://registry.example.com/v2/", f"https://{NOWHERE}:5000/v2/", "http://127.0.0.1:5000/v2/",
                "http://localhost:15000/token", "http://[::1]:5000/v2/"):
        assert may_send_credentials(url, insecure=False), url
    for url in (f"http://{NOWHERE}:5000/v2/", "http://registry.example.com/token", "http://10.0.0.1/v2/"):
        assert not may_send_credentials(url, insecure=False), url
        assert may_send_credentials(url, insecure=True), url


def test_a_loopback_registry_cannot_send_credentials_to_a_plain_http_login_elsewhere(
        registry_with_remote_login, off_loopback_attempts, monkeypatch):
    from skycap.errors import BadInput
    from skycap.sources import registry as reg

    monkeypatch.setenv(reg.ENV_USERNAME, "ci")
    monkeypatch.setenv(reg.ENV_PASSWORD, "never-over-plain-http")
    with pytest.raises(BadInput) as caught:
        reg.image_exists(registry_with_remote_login, "skytap/web", "0123456789ab")
    assert off_loopback_attempts == []  # refused before any connection
    assert f"http://{NOWHERE}/token" in str(caught.value) and "not HTTPS" in str(caught.value)
    assert "registry_insecure: true" in str(caught.value)


# --- what kubectl prints about Secrets


SECRET_TEMPLATE = """\
apiVersion: v1
kind: Secret
metadata:
  name: {{ service.name }}-token
stringData:
  TOKEN: "{{ vars.token }}"
"""


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    from tests.deployproject import make_project

    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def assert_never_shown(token: str, *texts: str) -> None:
    import base64

    encoded = base64.b64encode(token.encode()).decode()
    for text in texts:
        assert token not in text and encoded not in text


def test_secret_values_reach_neither_the_run_log_nor_the_screen(project, isolated_home):
    import secrets

    first, second = f"tok-{secrets.token_hex(8)}", f"tok-{secrets.token_hex(8)}"
    (project.root / "templates" / "vault.yaml.j2").write_text(SECRET_TEMPLATE)

    def with_vault(stage, token):
        stage["services"]["vault"] = {"image": "skytap/web", "template": "vault.yaml.j2"}
        stage["vars"]["token"] = token

    project.edit_stage(lambda s: with_vault(s, first))
    node = project.commit("with a secret")
    deployed = project.run("deploy", "test", f"rev={node}", "-v")
    assert deployed.code == 0, deployed.stderr
    project.edit_stage(lambda s: with_vault(s, second))
    diffed = project.run("diff", "test", f"rev={node}", "-v")  # kubectl diff reads the live Secret
    assert diffed.code == 1 and "Secret" in diffed.stdout, diffed.stdout + diffed.stderr
    project.edit_stage(lambda s: s["services"].pop("vault"))
    pruned = project.run("deploy", "test", f"rev={node}", "-v")  # prune reads the live Secret with kubectl get
    assert pruned.code == 0, pruned.stderr
    assert "Secret/vault-token" in pruned.stderr
    logs = [path.read_text() for path in (isolated_home / ".local" / "state" / "skycap" / "logs").glob("*.log")]
    assert len(logs) == 3
    for token in (first, second):
        for ran in (deployed, diffed, pruned):
            assert_never_shown(token, ran.stdout, ran.stderr)
        assert_never_shown(token, *logs)


# kubectl before 1.26 printed Secret values in a diff, and every kubectl prints them in `get`:
# these are such outputs, cut down (the values are base64 of "old-value" and "new-value").
OLD_KUBECTL_DIFF = """\
diff -u -N /tmp/LIVE-1/v1.Secret.ns.vault-token /tmp/MERGED-2/v1.Secret.ns.vault-token
--- /tmp/LIVE-1/v1.Secret.ns.vault-token
+++ /tmp/MERGED-2/v1.Secret.ns.vault-token
@@ -1,9 +1,9 @@
 apiVersion: v1
 data:
-  TOKEN: b2xkLXZhbHVl
+  TOKEN: bmV3LXZhbHVl
 kind: Secret
 metadata:
   annotations:
     kubectl.kubernetes.io/last-applied-configuration: |
-      {"apiVersion":"v1","kind":"Secret","stringData":{"TOKEN":"old-value"}}
+      {"apiVersion":"v1","kind":"Secret","stringData":{"TOKEN":"new-value"}}
   name: vault-token
diff -u -N /tmp/LIVE-1/v1.ConfigMap.ns.web-config /tmp/MERGED-2/v1.ConfigMap.ns.web-config
@@ -1,3 +1,3 @@
 data:
-  LOG_LEVEL: old-value
+  LOG_LEVEL: new-value
"""


def test_an_old_kubectl_diff_of_a_secret_is_masked_and_other_objects_kept():
    from skycap.cluster.redact import redact

    masked = redact(OLD_KUBECTL_DIFF)
    assert "b2xkLXZhbHVl" not in masked and "bmV3LXZhbHVl" not in masked
    assert masked.count("old-value") == 1 and masked.count("new-value") == 1  # the ConfigMap's, as they were
    assert "-  TOKEN: *** (before)\n+  TOKEN: *** (after)\n" in masked
    assert "    kubectl.kubernetes.io/last-applied-configuration: ***\n-      ***" in masked


def test_secrets_printed_as_json_or_yaml_are_masked():
    import json

    from skycap.cluster.redact import redact

    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"kind": "Secret",
                                                                       "stringData": {"TOKEN": "old-value"}})}},
        "data": {"TOKEN": "b2xkLXZhbHVl"}, "type": "Opaque"}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"KEY": "kept-value"}}
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": [secret, config]}, indent=4)
    as_yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  TOKEN: b2xkLXZhbHVl\n"
    for text in (listing, as_yaml):
        masked = redact(text)
        assert "b2xkLXZhbHVl" not in masked and "old-value" not in masked and "TOKEN" in masked
    assert json.loads(redact(listing))["items"][1] == config
    assert redact("secret/vault-token configured\n") == "secret/vault-token configured\n"


def test_a_masked_last_applied_annotation_alone_is_no_change():
    from skycap.cluster.plan import essential_diff
    from skycap.cluster.redact import redact

    stamps_only = OLD_KUBECTL_DIFF.replace("-  TOKEN: b2xkLXZhbHVl\n+  TOKEN: bmV3LXZhbHVl\n", "  TOKEN: b2xkLXZhbHVl\n")
    stamps_only = stamps_only[:stamps_only.index("diff -u -N /tmp/LIVE-1/v1.ConfigMap")]
    assert essential_diff(redact(stamps_only)) == ""
    assert "TOKEN: *** (after)" in essential_diff(redact(OLD_KUBECTL_DIFF))
