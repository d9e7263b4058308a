"""skycap.vm.hosts, its pure parts: user@host[:port] as a stage file writes a VM host, and the
known_hosts details (revoked keys, the [host]:port name, which files ssh_config names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycap.vm.hosts import (HostUnreachable, _known_hosts_name, _revoked_keys, _user_known_hosts_files,
                           parse_host)


@pytest.mark.parametrize("spec, parsed", [
    ("deploy@vm1.example.com:2222", ("deploy", "vm1.example.com", 2222)),
    ("vm1", (None, "vm1", None)),
    ("deploy@10.0.0.5", ("deploy", "10.0.0.5", None)),
    ("root@[2001:db8::1]:22", ("root", "2001:db8::1", 22)),
    ("[::1]", (None, "::1", None)),
    ("svc_user.x@h", ("svc_user.x", "h", None)),
])
def test_host_specs(spec, parsed):
    assert parse_host(spec) == parsed


@pytest.mark.parametrize("spec", ["", "deploy@", "@vm1", "Deploy@vm1", "vm1:", "vm1:port", "a b", "user@host/x",
                                  "2001:db8::1", "vm1:123456", "vm1:65536", "vm1:0", "-oProxyCommand", "deploy@-vm1"])
def test_a_bad_host_spec_says_the_form_it_should_have(spec):
    with pytest.raises(HostUnreachable) as info:
        parse_host(spec)
    assert "not a host of the form user@host[:port] (port 1-65535)" in str(info.value)


def test_revoked_keys_are_read_from_marker_lines_only():
    lines = ["@revoked * ssh-ed25519 AAAAbad", "vm1 ssh-ed25519 AAAAgood", "@revoked short",
             "@cert-authority *.example.com ssh-rsa AAAAca", "# @revoked * ssh-rsa AAAAcomment"]
    assert _revoked_keys(lines) == {("ssh-ed25519", "AAAAbad")}


def test_known_hosts_names_a_non_standard_port_in_brackets():
    assert _known_hosts_name("vm1", 22) == "vm1"
    assert _known_hosts_name("vm1", 2222) == "[vm1]:2222"


def test_user_known_hosts_files_follow_ssh_config(isolated_home):
    assert _user_known_hosts_files({}) == [isolated_home / ".ssh" / "known_hosts"]
    assert _user_known_hosts_files({"userknownhostsfile": "/a/hosts ~/b none"}) == [
        Path("/a/hosts"), isolated_home / "b"]
    assert _user_known_hosts_files({"userknownhostsfile": "none"}) == []
