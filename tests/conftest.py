"""Shared test setup: the real home directory and the user's kubeconfig are off limits."""

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.hg",
    "tests.fixtures.registry",
    "tests.fixtures.sshd",
]

REAL_HOME = Path(os.path.expanduser("~")).resolve()


@pytest.fixture(scope="session")
def kubectl_cache(tmp_path_factory):
    """kubectl's discovery and HTTP cache, shared by the tests of one worker as a user's runs share
    ~/.kube/cache: a fresh one per test made each test's first kubectl call fetch the whole API
    discovery again. It holds no credentials."""
    return tmp_path_factory.mktemp("kubectl-cache")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch, kubectl_cache):
    """Each test gets a fresh, empty home: an accidental write to the real one cannot happen."""
    home = tmp_path_factory.mktemp("home")
    (home / ".kube").mkdir()
    (home / ".kube" / "cache").symlink_to(kubectl_cache, target_is_directory=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("SKYCAP_PROJECT", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    yield home
