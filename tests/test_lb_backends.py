"""The backend interface against a real HAProxy and the iControl REST test server, and each one's failures."""

import time

import pytest

from skycap.lb.backends import (DRAINING, ENABLED, BalancerAuthFailed, BalancerUnavailable, Member, MemberState,
                                PoolMissing)
from skycap.lb.backends.f5 import F5
from skycap.lb.backends.haproxy import HAProxy
from tests.lbkit import balancer, f5, haproxy  # noqa: F401 - fixtures

M1, M2 = Member("10.244.0.2", 8080), Member("10.244.0.3", 8080)


def backend_for(kind, fake):
    if kind == "haproxy":
        return HAProxy(fake.api)
    return F5(fake.api, fake.state.username, fake.state.password)


def test_add_drain_enable_remove(balancer):  # noqa: F811
    kind, fake = balancer
    backend = backend_for(kind, fake)
    assert backend.list_pool("be_web") == {}
    backend.add("be_web", M1)
    backend.add("be_web", M2)
    assert fake.members("be_web") == {M1.name: "enabled", M2.name: "enabled"}
    backend.drain("be_web", M1)
    assert fake.members("be_web")[M1.name] == "draining"
    assert backend.list_pool("be_web")[M1].state == DRAINING
    backend.enable("be_web", M1)
    assert backend.list_pool("be_web")[M1].state == ENABLED
    backend.remove("be_web", M1)
    assert fake.members("be_web") == {M2.name: "enabled"}
    assert list(backend.list_pool("be_web")) == [M2]


def test_adding_a_member_that_exists_enables_it(balancer):  # noqa: F811
    kind, fake = balancer
    fake.add_member("be_web", M1.name, state="draining")
    backend = backend_for(kind, fake)
    backend.add("be_web", M1)  # F5 answers 409; HAProxy "Already exists"
    assert fake.members("be_web") == {M1.name: "enabled"}


def test_removing_a_member_that_is_gone_is_fine(balancer):  # noqa: F811
    kind, fake = balancer
    backend_for(kind, fake).remove("be_web", M1)
    assert fake.members("be_web") == {}


def test_a_missing_pool_is_named(balancer):  # noqa: F811
    kind, fake = balancer
    backend = backend_for(kind, fake)
    with pytest.raises(PoolMissing) as caught:
        backend.list_pool("be_nope")
    assert "'be_nope' does not exist" in str(caught.value) and "create_pools" in caught.value.hint
    with pytest.raises(PoolMissing):
        backend.add("be_nope", M1)


def test_the_api_down_is_unavailable_not_empty(balancer):  # noqa: F811
    kind, fake = balancer
    backend = backend_for(kind, fake)
    backend.add("be_web", M1)
    fake.stop()
    with pytest.raises(BalancerUnavailable) as caught:
        backend.list_pool("be_web")
    assert "cannot reach" in str(caught.value)


def test_haproxy_server_state_from_stat(haproxy):  # noqa: F811
    backend = HAProxy(haproxy.api)
    backend.add("be_web", M1)
    assert backend.list_pool("be_web") == {M1: MemberState(ENABLED, 0)}
    backend.drain("be_web", M1)
    assert backend.list_pool("be_web") == {M1: MemberState(DRAINING, 0)}


def test_haproxy_cannot_create_a_backend(haproxy):  # noqa: F811
    with pytest.raises(PoolMissing) as caught:
        HAProxy(haproxy.api).create_pool("be_new")
    assert "haproxy.cfg" in str(caught.value)


def test_f5_creates_a_pool(f5):  # noqa: F811
    backend = backend_for("f5", f5)
    backend.create_pool("be_new")
    backend.create_pool("be_new")  # 409: there already
    assert backend.list_pool("be_new") == {}


def test_f5_reuses_one_token_and_logs_in_again_when_it_expired(f5):  # noqa: F811
    backend = backend_for("f5", f5)
    for _ in range(5):
        backend.list_pool("be_web")
    assert f5.state.logins == 1
    f5.state.expire_tokens()  # the device says 401 "X-F5-Auth-Token has expired."
    backend.add("be_web", M1)
    assert f5.state.logins == 2 and f5.members("be_web") == {M1.name: "enabled"}
    assert any(code == 401 for _m, _p, code in f5.state.requests)


def test_f5_refreshes_the_token_before_it_expires(f5):  # noqa: F811
    f5.state.token_seconds = 61.0  # the refresh margin is 60 s: the next call takes a new token
    backend = backend_for("f5", f5)
    backend.list_pool("be_web")
    time.sleep(1.1)
    backend.list_pool("be_web")
    assert f5.state.logins == 2
    assert not any(code == 401 for _m, _p, code in f5.state.requests)


def test_f5_wrong_password(f5):  # noqa: F811
    backend = F5(f5.api, f5.state.username, "wrong-password")
    with pytest.raises(BalancerAuthFailed) as caught:
        backend.list_pool("be_web")
    assert "refused the credentials" in str(caught.value) and "wrong-password" not in str(caught.value)
    assert "wrong-password" not in repr(backend)


def test_f5_busy_is_retried_then_unavailable(f5):  # noqa: F811
    backend = backend_for("f5", f5)
    f5.state.busy = 2
    backend.add("be_web", M1)
    assert f5.members("be_web") == {M1.name: "enabled"}
    f5.state.busy = 100
    with pytest.raises(BalancerUnavailable) as caught:
        backend.list_pool("be_web")
    assert "busy (503)" in str(caught.value)


def test_f5_basic_auth_when_there_is_no_token_login(f5):  # noqa: F811
    f5.state.token_login = False
    backend = backend_for("f5", f5)
    backend.add("be_web", M1)
    assert f5.members("be_web") == {M1.name: "enabled"} and backend.basic_auth
