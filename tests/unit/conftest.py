"""Unit tests run without a cluster, a registry, Mercurial or sshd: the fixtures that would start one
are replaced here by ones that fail at once, saying where such a test belongs. (tests/conftest.py's only
autouse fixture, the isolated home, starts nothing and stays.)"""

from __future__ import annotations

import pytest

STARTS_SOMETHING = ("local_cluster", "registry_storage", "registry", "basic_registry", "token_registry",
                    "_hg_template", "hg_ambiguous", "hg_served", "hg_served_with_auth", "ssh_client_key", "fake_vms")


def _refusing(name: str):
    @pytest.fixture(name=name, scope="session")  # session: the session fixtures above it may ask for it
    def refuse():
        pytest.fail(f"a unit test may not use the {name} fixture (it starts a process); put the test beside "
                    "its neighbours in tests/, not in tests/unit/", pytrace=False)

    return refuse


for _name in STARTS_SOMETHING:
    globals()[f"_refuse_{_name.strip('_')}"] = _refusing(_name)
