"""skycap.environments.naming: what the user types as an environment name, and TTLs, into DNS labels
and seconds; bad input says what is wrong and how to write it."""

from __future__ import annotations

import re

import pytest

from skycap.environments.naming import (DNS_LABEL_MAX, check_name, dns_label, human_duration, namespace_for,
                                        parse_duration, stage_name)
from skycap.errors import BadInput

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("name", ["feature/JIRA-1234_new-billing", "a", "9", "x" * 200, "v1.2.3", "a_b"])
def test_good_names_are_returned_as_typed(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "/x", ".x", "_x", "x" * 201, "a//b", "a..b", "a b", "a:b", "ä"])
def test_bad_names_are_refused_with_what_a_name_may_hold(name):
    with pytest.raises(BadInput) as info:
        check_name(name)
    assert "is not a valid environment name" in info.value.message
    assert "letters, digits and - _ . /" in info.value.hint
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text, label", [
    ("Feature/X", "feature-x"),
    ("--a__b--", "a-b"),
    ("___", "env"),  # nothing usable: still a valid label
    ("", "env"),
])
def test_dns_label(text, label):
    assert dns_label(text) == label


def test_a_label_at_the_limit_is_kept_one_over_is_cut_with_a_hash():
    assert dns_label("a" * DNS_LABEL_MAX) == "a" * DNS_LABEL_MAX
    cut = dns_label("a" * (DNS_LABEL_MAX + 1))
    assert len(cut) == DNS_LABEL_MAX and DNS_LABEL.match(cut)
    assert re.fullmatch(r"a{54}-[0-9a-f]{8}", cut)


def test_a_cut_never_leaves_a_dash_before_the_hash():
    cut = dns_label("a" * 53 + "-" + "b" * 20)  # the cut falls just after the dash
    assert "--" not in cut and DNS_LABEL.match(cut), cut


def test_the_salt_keeps_the_same_long_name_apart_in_two_namespaces():
    name = "feature/" + "y" * 80
    assert dns_label(name, salt="a") != dns_label(name, salt="b")
    assert dns_label(name, salt="a") == dns_label(name, salt="a")


def test_stage_and_namespace_names():
    assert stage_name("Feature/JIRA-1_x") == "feature-jira-1-x"
    assert namespace_for("shop", "Feature/JIRA-1_x") == "shop-feature-jira-1-x"
    long = namespace_for("shop-" + "n" * 60, "x")
    assert len(long) == DNS_LABEL_MAX and DNS_LABEL.match(long)


@pytest.mark.parametrize("text, seconds", [(" 1H ", 3600), ("1d12h", 129600), ("1h 30m", 5400), ("0h5m", 300),
                                           ("10", 10)])
def test_durations_are_read_whatever_the_case_and_spacing(text, seconds):
    assert parse_duration(text) == seconds


def test_a_zero_duration_is_refused_as_such():
    with pytest.raises(BadInput, match=r"--ttl '0m' must be longer than zero"):
        parse_duration("0m")


@pytest.mark.parametrize("text", [None, "1h30", "h1", "1y", "1h-30m"])
def test_a_bad_duration_names_the_option_it_came_from(text):
    with pytest.raises(BadInput) as info:
        parse_duration(text, what="--extend")
    assert info.value.message == f"--extend {text!r} is not a duration"
    assert info.value.hint == "write it like 8h, 30m, 2d, 1h30m or 90s"


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"),
                                           (3660, "1h01m"), (86399, "23h59m"), (86400, "1d"), (90000, "1d1h"),
                                           (-90, "1m ago")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text
