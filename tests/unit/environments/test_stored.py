"""skycap.environments.stored: an environment's definition as a ConfigMap and back, and the --set
overrides on its stage data (no cluster: the stage data is a plain dict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skycap.environments.stored import Environment, apply_override, derived_data, parse_time, utc_iso
from skycap.errors import BadInput

PATH = Path("stages/staging.yaml")


def environment(**changes) -> Environment:
    fields = dict(name="feature/X_1", stage="staging", source_namespace="shop", ttl=3600, owner="me@host",
                  created="2024-05-01T12:00:00Z", expires="2024-05-01T13:00:00Z")
    return Environment(**{**fields, **changes})


def stage_data() -> dict:
    return {"kubernetes": {"namespace": "shop"}, "env_replicas": 1,
            "services": {"web": {"replicas": 3, "config": {"LOG_LEVEL": "info"}}, "api": {}},
            "vm": {"legacy": {"hosts": ["deploy@vm1"]}}, "vars": {"queue": "jobs"}}


def test_the_definition_round_trips_through_its_config_map():
    env = environment(overrides=["vars.queue=x", "config.web.A=1"], with_vm=True, rev="abc", node="f" * 40)
    config_map = env.config_map()
    assert all(isinstance(value, str) for value in config_map["data"].values())  # a ConfigMap holds strings
    assert config_map["metadata"]["namespace"] == "shop-feature-x-1"
    assert config_map["metadata"]["labels"]["skycap.io/environment"] == "feature-x-1"
    assert Environment.from_config_map(config_map["data"]) == env


def test_a_definition_missing_optional_fields_gets_their_defaults():
    env = Environment.from_config_map({"name": "x", "stage": "staging", "source_namespace": "shop"})
    assert (env.ttl, env.overrides, env.with_vm, env.rev, env.expires) == (0, [], False, "", "")


def test_times_in_utc_and_back():
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert parse_time(utc_iso(1714564800)) == 1714564800
    assert parse_time("") == 0.0


@pytest.mark.parametrize("word, path, value", [
    ("vars.queue=jobs-x", ("vars", "queue"), "jobs-x"),
    ("vars.count=3", ("vars", "count"), 3),
    ("vars.on=true", ("vars", "on"), True),
    ("vars.list=[1, 2]", ("vars", "list"), [1, 2]),
    ('vars.quoted="3"', ("vars", "quoted"), "3"),
    ("vars.url=http://x/?a=b", ("vars", "url"), "http://x/?a=b"),  # only the first = splits
    ("vars.empty=", ("vars", "empty"), ""),
    ("config.web.LOG_LEVEL=debug", ("services", "web", "config", "LOG_LEVEL"), "debug"),
    ("services.api.config.NEW=1", ("services", "api", "config", "NEW"), 1),  # missing mappings are made
    ("rollout_timeout=30", ("rollout_timeout",), 30),
])
def test_an_override_sets_a_value_of_the_type_it_reads_as(word, path, value):
    data = stage_data()
    apply_override(data, word, PATH)
    for part in path:
        data = data[part]
    assert data == value


@pytest.mark.parametrize("word, message", [
    ("=x", "--set '=x' is not KEY=VALUE"),
    ("vars.", "is not KEY=VALUE"),
    (".vars=1", "is not KEY=VALUE"),
    ("config.web.a.b=1", "config takes config.SERVICE.KEY"),
    ("env_replicas=9", "env_replicas cannot be overridden"),
    ("env_hosts.legacy=[]", "env_hosts cannot be overridden"),
    ("services={}", "services cannot be overridden"),
    ("vars=1", "vars cannot be overridden"),
    ("vm.nosuch.hosts=[]", "staging.yaml has no VM service 'nosuch'"),
    ("services.web.replicas.x=1", "replicas is not a mapping in staging.yaml"),
])
def test_a_bad_override_says_what_is_wrong_and_changes_nothing(word, message):
    data = stage_data()
    with pytest.raises(BadInput, match=message.replace(".", r"\.").replace("{", r"\{").replace("[", r"\[")):
        apply_override(data, word, PATH)
    assert data == stage_data()


def test_an_unknown_service_lists_the_known_ones():
    with pytest.raises(BadInput) as info:
        apply_override(stage_data(), "services.nosuch.replicas=1", PATH)
    assert info.value.hint == "known: api, web"


def test_replicas_are_capped_and_overrides_come_after_the_cap():
    data = derived_data(stage_data(), environment(overrides=["services.web.replicas=5"]), PATH)
    assert data["services"]["web"]["replicas"] == 5
    data = derived_data(stage_data(), environment(), PATH)
    assert data["services"]["web"]["replicas"] == 1
    assert data["services"]["api"]["replicas"] == 1


def test_a_zero_cap_scales_everything_to_zero():
    data = derived_data({**stage_data(), "env_replicas": 0}, environment(), PATH)
    assert [block["replicas"] for block in data["services"].values()] == [0, 0]
