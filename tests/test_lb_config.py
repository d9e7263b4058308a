"""The stage file's load_balancer block: clear errors for bad input, exit 2, nothing changed."""

import pytest
import yaml

from tests.deployproject import skycap

BASE = {"hg": ".", "registry": "127.0.0.1:15000", "kubernetes": {"namespace": "ns"},
        "services": {"web": {"image": "skytap/web", "template": "web.yaml.j2"}}}
GOOD = {"kind": "haproxy", "api": "tcp://127.0.0.1:9999", "members": "pods", "pools": {"web": {"pool": "be_web"}}}


def load(tmp_path, block):
    from skycap.project.config import Project

    (tmp_path / "stages").mkdir(exist_ok=True)
    (tmp_path / "stages" / "test.yaml").write_text(yaml.safe_dump({**BASE, "load_balancer": block}))
    return Project(tmp_path).load_stage("test")


def test_a_good_block(tmp_path):
    lb = load(tmp_path, {**GOOD, "kind": "f5", "api": "https://bigip.example.com/", "credentials": {"secret": "f5"},
                         "create_pools": True}).load_balancer
    assert (lb.kind, lb.api, lb.credentials, lb.partition, lb.drain_seconds) == \
        ("f5", "https://bigip.example.com", {"secret": "f5"}, "Common", 10.0)
    assert lb.pools["web"].pool == "be_web" and lb.create_pools


@pytest.mark.parametrize("change, message", [
    ({"kind": "nginx"}, "load_balancer.kind must be one of haproxy, f5, not 'nginx'"),
    ({"colour": "red"}, "unknown key load_balancer.colour"),
    ({"api": "http://127.0.0.1:9999"}, "is not an HAProxy runtime API address"),
    ({"kind": "f5", "api": "http://bigip.example.com", "credentials": {"env": "F5"}},
     "plain http is accepted on loopback only"),
    ({"kind": "f5", "api": "https://bigip"}, "load_balancer.credentials is required for f5"),
    ({"credentials": {"password": "hunter2"}}, "must be {env: PREFIX} or {secret: NAME}"),
    ({"members": "nodes"}, "load_balancer.members must be nodeport"),
    ({"drain_seconds": -1}, "load_balancer.drain_seconds must be a number of seconds"),
    ({"pools": {}}, "load_balancer.pools must map each Service to its pool"),
    ({"pools": {"web": {"pool": "be web"}}}, "load_balancer.pools.web.pool must name the pool"),
    ({"pools": {"web": {"pool": "be", "port": [80]}}}, "port must be the Service port's name or number"),
    ({"pools": {"web": {"pool": "be"}, "api": {"pool": "be"}}}, "pool 'be' is named by both api and web"),
])
def test_bad_blocks_are_named(tmp_path, change, message):
    from skycap.errors import BadInput

    with pytest.raises(BadInput) as caught:
        load(tmp_path, {**GOOD, **change})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_lb_sync_of_a_stage_without_a_balancer_exits_2(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "test.yaml").write_text(yaml.safe_dump(BASE))
    ran = skycap("--project", str(tmp_path), "lb-sync", "test", "--once")
    assert ran.code == 2 and "stage test has no load_balancer block" in ran.stderr
    ran = skycap("--project", str(tmp_path), "lb-sync", "test", "--listen", "nowhere")
    assert ran.code == 2 and "--listen 'nowhere' is not HOST:PORT" in ran.stderr


def test_missing_f5_credentials_in_the_environment(tmp_path, monkeypatch):
    from skycap.errors import BadInput
    from skycap.lb.sources import read_credentials

    monkeypatch.delenv("F5X_USERNAME", raising=False)
    lb = load(tmp_path, {**GOOD, "kind": "f5", "api": "https://bigip", "credentials": {"env": "F5X"}}).load_balancer
    with pytest.raises(BadInput) as caught:
        read_credentials(lb, None, "ns")
    assert "F5X_USERNAME and F5X_PASSWORD must both be in the environment" in str(caught.value)


def test_desired_members_from_endpoints_when_there_are_no_endpointslices():
    from skycap.cluster.rollout_rules import View
    from skycap.lb.backends import Member
    from skycap.lb.config import LoadBalancer, PoolSpec
    from skycap.lb.sources import desired_members

    view = View.of(
        {"kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"kind": "Endpoints", "metadata": {"name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "10.0.0.2"}],
             "ports": [{"name": "http", "port": 8080}]}]})
    lb = LoadBalancer(kind="haproxy", api="tcp://x:1", members="pods")
    assert desired_members(view, PoolSpec("web", "be", "http"), lb, "Endpoints") == {Member("10.0.0.1", 8080)}
