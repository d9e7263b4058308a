"""Environment names, durations and --set overrides, without a cluster."""

from pathlib import Path

import pytest

from skycap.environments.naming import dns_label, namespace_for, parse_duration, stage_name
from skycap.environments.stored import Environment, derived_data
from skycap.errors import BadInput
from skycap.project.config import NAME_RE
from tests.deployproject import skycap

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["feature/JIRA-1234_new-billing", "x" * 200, "release/2024.05", "A", "9-lives",
                                  "feature/" + "very-long-" * 19 + "end"])
def test_every_name_gives_valid_dns_labels(name):
    for label in (stage_name(name), namespace_for("platform-staging", name)):
        assert NAME_RE.match(label) and len(label) <= 63, label


def test_a_branch_name_stays_readable():
    assert stage_name("feature/JIRA-1234_new-billing") == "feature-jira-1234-new-billing"
    assert namespace_for("platform-staging", "feature/JIRA-1234_new-billing") == \
        "platform-staging-feature-jira-1234-new-billing"


def test_long_names_that_share_a_prefix_stay_apart():
    a, b = "feature/" + "x" * 80 + "-a", "feature/" + "x" * 80 + "-b"
    assert namespace_for("ns", a) != namespace_for("ns", b)
    assert len(namespace_for("ns", a)) == 63
    assert dns_label("a" * 70) != dns_label("a" * 71)


@pytest.mark.parametrize("text, seconds", [("8h", 28800), ("30m", 1800), ("2d", 172800), ("1h30m", 5400),
                                           ("90s", 90), ("2", 2), ("1w", 604800), ("2s", 2)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8x", "", "h", "-1h", "0s", "8 hours", "1.5h"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(BadInput) as info:
        parse_duration(text)
    assert "like 8h" in info.value.hint


def environment(overrides=(), with_vm=False) -> Environment:
    return Environment(name="feature/x", stage="staging", source_namespace="platform-staging", ttl=60, owner="me",
                       created="", expires="", overrides=list(overrides), with_vm=with_vm)


SOURCE = {"hg": "../p", "registry": "r", "kubernetes": {"namespace": "platform-staging", "context": "c"},
          "env_replicas": 2,
          "services": {"web": {"image": "w", "template": "web.yaml.j2", "replicas": 5, "config": {"LOG_LEVEL": "info"}},
                       "worker": {"image": "k", "template": "worker.yaml.j2"}},
          "vars": {"queue": "jobs"},
          "vm": {"legacy": {"hosts": ["deploy@vm1"], "deploy_to": "/srv/legacy"}}}


def test_derived_stage_data():
    data = derived_data(SOURCE, environment(["config.web.LOG_LEVEL=debug", "vars.queue=jobs-feature-x",
                                             "vars.count=3", "services.worker.replicas=2"]), Path("staging.yaml"))
    assert data["kubernetes"] == {"namespace": "platform-staging-feature-x", "context": "c",
                                  "create_namespace": False}
    assert data["services"]["web"]["replicas"] == 2  # capped by env_replicas
    assert data["services"]["web"]["config"]["LOG_LEVEL"] == "debug"
    assert data["services"]["worker"]["replicas"] == 2  # an explicit --set wins over the cap
    assert data["vars"] == {"queue": "jobs-feature-x", "count": 3}
    assert "vm" not in data  # VM services only with --with-vm
    assert SOURCE["services"]["web"]["replicas"] == 5  # the source is left alone


def test_with_vm_needs_env_hosts():
    with pytest.raises(BadInput, match="--with-vm needs env_hosts for VM service legacy"):
        derived_data(SOURCE, environment(with_vm=True), Path("staging.yaml"))
    data = derived_data({**SOURCE, "env_hosts": {"legacy": ["deploy@env-vm"]}}, environment(with_vm=True),
                        Path("staging.yaml"))
    assert data["vm"]["legacy"]["hosts"] == ["deploy@env-vm"]


@pytest.mark.parametrize("word, message", [
    ("config.api.LOG_LEVEL=debug", "has no service 'api'"),
    ("kubernetes.namespace=prod", "kubernetes cannot be overridden"),
    ("config.web=debug", "config takes config.SERVICE.KEY"),
    ("vars.queue", "is not KEY=VALUE"),
    ("vars..x=1", "is not KEY=VALUE"),
    ("services.web.config.LOG_LEVEL.x=1", "LOG_LEVEL is not a mapping"),
])
def test_bad_overrides(word, message):
    with pytest.raises(BadInput, match=message):
        derived_data(SOURCE, environment([word]), Path("staging.yaml"))


@pytest.mark.parametrize("args, message", [
    (["env", "create", "x", "--from", "demo", "rev=1", "--ttl", "8x"], "--ttl '8x' is not a duration"),
    (["env", "create", "x", "--from", "demo"], "skycap env create x --from demo rev=REV"),
    (["env", "create", "../x", "--from", "demo", "rev=1"], "is not a valid environment name"),
    (["env", "create", "x", "--from", "nosuch", "rev=1"], "unknown stage 'nosuch'"),
    (["env", "create", "staging", "--from", "demo", "rev=1"], "staging is (or reads as) stage staging"),
    (["env", "create", "x", "--from", "demo", "rev=1", "--set", "config.api.X=1"], "has no service 'api'"),
    (["env", "destroy", "staging"], "is a stage (stages/staging.yaml), not an environment"),
    (["env", "extend", "x", "--ttl", "soon"], "--ttl 'soon' is not a duration"),
])
def test_env_usage_errors_exit_2(args, message):
    ran = skycap("--project", str(ROOT), *args)
    assert ran.code == 2, ran.stderr
    assert message in ran.stderr


def test_a_pool_may_name_its_frontend_through_the_balancer():
    from skycap.lb.config import parse_load_balancer

    block = {"kind": "haproxy", "api": "tcp://127.0.0.1:9999",
             "pools": {"web": {"pool": "be_web", "frontend": "http://127.0.0.1:8081/"}, "api": {"pool": "be_api"}}}
    pools = parse_load_balancer(Path("staging.yaml"), block).pools
    assert (pools["web"].frontend, pools["api"].frontend) == ("http://127.0.0.1:8081/", None)
    for bad in ("127.0.0.1:8081", "ftp://lb/", "http://", 8081, "http://[::1"):
        block["pools"]["web"]["frontend"] = bad
        with pytest.raises(BadInput, match="load_balancer.pools.web.frontend must be the URL"):
            parse_load_balancer(Path("staging.yaml"), block)
