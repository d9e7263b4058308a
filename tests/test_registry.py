"""skycap.sources.registry against real docker-registry servers: anonymous, basic auth and bearer tokens."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from skycap.errors import BadInput
from skycap.sources import registry as reg
from tests.fixtures.registry import IDENTITY_TOKEN, PASSWORD, USERNAME, free_port

# Its module-wide fixture is costly: under pytest-xdist these tests share one worker.
pytestmark = pytest.mark.xdist_group("test_registry")

WRONG_PASSWORD = "wrong-password-never-shown"


@pytest.fixture(scope="module")
def images(registry_publish):
    """Two images, pushed once for this module's tests."""
    return {"web": registry_publish("skytap/web", "0123456789ab"),
            "worker": registry_publish("skytap/worker", "0123456789ab")}


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(BadInput) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def write_docker_config(folder, config: dict):
    (folder / ".docker").mkdir(exist_ok=True)
    path = folder / ".docker" / "config.json"
    path.write_text(json.dumps(config))
    return path


def basic_entry(username=USERNAME, password=PASSWORD) -> dict:
    return {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}


def test_present_image_and_its_digest(registry, images):
    assert reg.image_digest(registry.hostport, "skytap/web", "0123456789ab") == images["web"]
    assert reg.image_exists(registry.hostport, "skytap/web", "0123456789ab")


def test_missing_tag_and_missing_repository(registry, images):
    assert reg.image_digest(registry.hostport, "skytap/web", "fedcba987654") is None
    assert not reg.image_exists(registry.hostport, "skytap/nothing-here", "0123456789ab")


def test_localhost_gets_plain_http_too(registry, images):
    port = registry.hostport.split(":")[1]
    assert reg.image_exists(f"localhost:{port}", "skytap/web", "0123456789ab")


def test_several_images_at_once(registry, images):
    wanted = [("web", "skytap/web", "0123456789ab"), ("api", "skytap/web", "0123456789ab"),
              ("worker", "skytap/worker", "0123456789ab"), ("cron", "skytap/cron", "0123456789ab"),
              ("old", "skytap/web", "000000000000")]
    assert reg.check_images(registry.hostport, wanted) == [("cron", "skytap/cron", "0123456789ab"),
                                                                 ("old", "skytap/web", "000000000000")]
    assert reg.image_digests(registry.hostport, wanted) == {
        "web": images["web"], "api": images["web"], "worker": images["worker"], "cron": None, "old": None}


def test_several_images_try_https_once_on_a_plain_loopback_registry(registry, images, monkeypatch):
    schemes = []
    send = reg.Registry._send

    def counting_send(self, method, url, headers, data):
        schemes.append(url.split(":", 1)[0])
        return send(self, method, url, headers, data)

    monkeypatch.setattr(reg.Registry, "_send", counting_send)
    wanted = [(f"svc{i}", "skytap/web", "0123456789ab") for i in range(4)] + \
             [(f"other{i}", f"skytap/other{i}", "0123456789ab") for i in range(6)]
    assert reg.check_images(registry.hostport, wanted) == wanted[4:]
    assert schemes[0] == "https" and set(schemes[1:]) == {"http"}, schemes


def test_require_images_names_each_missing_service(registry, images):
    wanted = [("web", "skytap/web", "0123456789ab"), ("cron", "skytap/cron", "0123456789ab")]
    message = error_of(reg.require_images, registry.hostport, wanted)
    assert message.startswith(f"1 image does not exist in the registry:\n  cron: {registry.hostport}/skytap/cron:"
                              "0123456789ab\n")
    assert "CI may not have built and pushed it yet" in message
    assert reg.require_images(registry.hostport, wanted[:1]) == {"web": images["web"]}


def test_unreachable_registry_is_named():
    hostport = f"127.0.0.1:{free_port()}"
    message = error_of(reg.image_exists, hostport, "skytap/web", "0123456789ab")
    assert message.startswith(f"cannot reach the image registry {hostport}: connection refused")
    assert "check the stage's registry: setting and that the registry is up" in message
    assert "--skip-image-check" in message


def test_plain_http_to_a_remote_registry_is_refused_before_connecting():
    message = error_of(reg.image_exists, "http://registry.example.com", "skytap/web", "0123456789ab")
    assert message.startswith("refusing plain HTTP to the image registry registry.example.com")
    assert "set registry_insecure: true in the stage" in message


def test_which_hosts_get_plain_http():
    assert all(map(reg.is_loopback, ["localhost", "127.0.0.1", "127.0.0.2", "[::1]", "::1"]))
    assert not any(map(reg.is_loopback, ["registry.example.com", "10.0.0.1", "localhost.example.com"]))


@pytest.mark.parametrize("repository, tag", [("Skytap/Web", "abc"), ("../etc", "abc"), ("skytap/web", "-x"),
                                             ("skytap/web", "a/b")])
def test_invalid_names_are_refused(registry, repository, tag):
    assert "is not a valid" in error_of(reg.image_exists, registry.hostport, repository, tag)


# --- basic auth


def test_basic_auth_with_credentials_from_the_environment(basic_registry, images, monkeypatch):
    monkeypatch.setenv(reg.ENV_USERNAME, USERNAME)
    monkeypatch.setenv(reg.ENV_PASSWORD, PASSWORD)
    assert reg.image_digest(basic_registry.hostport, "skytap/web", "0123456789ab") == images["web"]


@pytest.mark.parametrize("entry", [basic_entry(), {"username": USERNAME, "password": PASSWORD}])
def test_basic_auth_with_credentials_from_the_docker_config(basic_registry, images, isolated_home, entry):
    write_docker_config(isolated_home, {"auths": {f"http://{basic_registry.hostport}/": entry}})
    assert reg.image_exists(basic_registry.hostport, "skytap/web", "0123456789ab")
    assert not reg.image_exists(basic_registry.hostport, "skytap/web", "ffffffffffff")


def test_docker_config_folder_from_the_environment(basic_registry, images, tmp_path, monkeypatch):
    write_docker_config(tmp_path, {"auths": {basic_registry.hostport: basic_entry()}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / ".docker"))
    assert reg.image_exists(basic_registry.hostport, "skytap/web", "0123456789ab")


def test_basic_auth_with_wrong_credentials(basic_registry, images, isolated_home):
    entry = basic_entry(password=WRONG_PASSWORD)
    path = write_docker_config(isolated_home, {"auths": {basic_registry.hostport: entry}})
    message = error_of(reg.image_exists, basic_registry.hostport, "skytap/web", "0123456789ab")
    assert message.startswith(f"the image registry {basic_registry.hostport} refused the credentials from {path} "
                              "for skytap/web (HTTP 401)")
    assert f"skycap reads them from SKYCAP_REGISTRY_USERNAME/SKYCAP_REGISTRY_PASSWORD, or the docker config {path}" \
        in message
    assert WRONG_PASSWORD not in message and entry["auth"] not in message


def test_basic_auth_without_credentials(basic_registry, images, isolated_home):
    message = error_of(reg.image_exists, basic_registry.hostport, "skytap/web", "0123456789ab")
    assert message.startswith(f"the image registry {basic_registry.hostport} needs credentials for skytap/web, "
                              "and none were found (HTTP 401)")
    assert f"docker config {isolated_home / '.docker' / 'config.json'}" in message
    assert f"`docker login {basic_registry.hostport}` writes them" in message


def test_credential_helper(basic_registry, images, isolated_home, tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-skycaptest"
    helper.parent.mkdir()
    answer = json.dumps({"ServerURL": basic_registry.hostport, "Username": USERNAME, "Secret": PASSWORD})
    helper.write_text(f"#!/bin/sh\nread server\n[ \"$server\" = {basic_registry.hostport} ] || exit 1\n"
                      f"echo '{answer}'\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    write_docker_config(isolated_home, {"credHelpers": {basic_registry.hostport: "skycaptest"}})
    assert reg.image_exists(basic_registry.hostport, "skytap/web", "0123456789ab")


def test_missing_credential_helper_is_named(basic_registry, isolated_home):
    write_docker_config(isolated_home, {"credsStore": "nosuchhelper"})
    message = error_of(reg.image_exists, basic_registry.hostport, "skytap/web", "0123456789ab")
    assert "names the credential helper docker-credential-nosuchhelper, which is not installed" in message


def test_credentials_are_looked_up_only_when_asked_for(registry, images, isolated_home):
    write_docker_config(isolated_home, {"credsStore": "nosuchhelper"})  # would fail if it were consulted
    assert reg.image_exists(registry.hostport, "skytap/web", "0123456789ab")


# --- bearer tokens


def test_bearer_token_flow_with_basic_credentials(token_registry, images, monkeypatch):
    monkeypatch.setenv(reg.ENV_USERNAME, USERNAME)
    monkeypatch.setenv(reg.ENV_PASSWORD, PASSWORD)
    seen = len(token_registry.token_server.requests)
    found = reg.image_digests(token_registry.hostport, [("web", "skytap/web", "0123456789ab"),
                                                             ("worker", "skytap/worker", "0123456789ab"),
                                                             ("cron", "skytap/cron", "0123456789ab")])
    assert found == {"web": images["web"], "worker": images["worker"], "cron": None}
    asked = token_registry.token_server.requests[seen:]
    assert sorted(r["scope"][0] for r in asked) == ["repository:skytap/cron:pull", "repository:skytap/web:pull",
                                                    "repository:skytap/worker:pull"]
    assert {r["account"] for r in asked} == {USERNAME}


def test_bearer_token_flow_with_an_identity_token(token_registry, images, isolated_home):
    write_docker_config(isolated_home, {"auths": {token_registry.hostport: {"identitytoken": IDENTITY_TOKEN}}})
    assert reg.image_digest(token_registry.hostport, "skytap/web", "0123456789ab") == images["web"]
    assert token_registry.token_server.requests[-1]["method"] == "POST"


def test_bearer_token_flow_with_wrong_password(token_registry, images, monkeypatch):
    monkeypatch.setenv(reg.ENV_USERNAME, USERNAME)
    monkeypatch.setenv(reg.ENV_PASSWORD, WRONG_PASSWORD)
    message = error_of(reg.image_exists, token_registry.hostport, "skytap/web", "0123456789ab")
    assert message.startswith(f"the image registry {token_registry.hostport} refused the credentials from "
                              "SKYCAP_REGISTRY_USERNAME/SKYCAP_REGISTRY_PASSWORD for skytap/web (HTTP 401)")
    assert WRONG_PASSWORD not in message


def test_bearer_token_flow_anonymous_is_told_to_log_in(token_registry, images):
    message = error_of(reg.image_exists, token_registry.hostport, "skytap/web", "0123456789ab")
    assert message.startswith(f"the image registry {token_registry.hostport} needs credentials for skytap/web, "
                              "and none were found")


# --- small parts


def test_parse_challenge():
    header = ('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
              'scope="repository:skytap/web:pull,push"')
    assert reg.parse_challenge(header) == ("bearer", {"realm": "https://auth.example.com/token",
                                                           "service": "registry.example.com",
                                                           "scope": "repository:skytap/web:pull,push"})
    assert reg.parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    assert reg.parse_challenge("Basic realm=plain") == ("basic", {"realm": "plain"})


def test_credentials_never_show_in_repr_or_str(monkeypatch):
    monkeypatch.setenv(reg.ENV_USERNAME, "deployer-account")
    monkeypatch.setenv(reg.ENV_PASSWORD, "s3cret-value")
    found = reg.find_credentials("registry.example.com")
    assert (found.username, found.secret) == ("deployer-account", "s3cret-value")
    for text in (repr(found), str(found)):
        assert "deployer-account" not in text and "s3cret-value" not in text
    assert str(found) == "credentials from SKYCAP_REGISTRY_USERNAME/SKYCAP_REGISTRY_PASSWORD"


def test_docker_hub_entry_is_found_under_its_v1_key(isolated_home):
    write_docker_config(isolated_home, {"auths": {"https://index.docker.io/v1/": basic_entry()}})
    assert reg.find_credentials("docker.io").username == USERNAME
    assert reg.find_credentials("registry.example.com") is None


def test_unreadable_docker_config_is_named(isolated_home):
    path = write_docker_config(isolated_home, {})
    path.write_text("{not json")
    assert error_of(reg.find_credentials, "x.example.com").startswith(f"cannot read the docker config {path}")


def test_import_is_light():
    code = "import sys, skycap.sources.registry; print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
