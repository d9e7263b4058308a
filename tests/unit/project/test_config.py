"""skycap.project.config.is_host: what a stage file may name as a VM host."""

from __future__ import annotations

import pytest

from skycap.project.config import is_host


@pytest.mark.parametrize("spec", ["vm1", "deploy@vm1:2222", "deploy@10.0.0.5:65535", "[::1]:22"])
def test_hosts_a_stage_may_name(spec):
    assert is_host(spec)


@pytest.mark.parametrize("spec", ["-oProxyCommand", "deploy@-vm1", "vm1:0", "vm1:65536", "vm1:99999", "", None, 22])
def test_hosts_it_may_not(spec):
    assert not is_host(spec)
