"""The stage lock against a real apiserver: refused, raced, renewed, expired after SIGKILL, broken, unlocked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from skycap.cluster.ledger import Ledger
from skycap.cluster.lock import StageLock, ago, break_lock, clock, lease_name, read_lock, unlock
from skycap.errors import BadInput, StageLocked

REPO = Path(__file__).resolve().parents[1]
STAGE = "production"

# Takes the lock, says so, then either holds it (sleeping) or, in race mode, reports whether it won.
HOLDER = textwrap.dedent("""
    import sys, time
    from kubernetes import client, config
    from skycap.cluster.lock import StageLock
    from skycap.errors import StageLocked

    kubeconfig, namespace, ttl, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    lock = StageLock(client.ApiClient(configuration), namespace, "production", "deploy rev=abc (release 7)", ttl=ttl)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        lock.acquire()
    except StageLocked:
        print("refused", flush=True)
        sys.exit(0)
    print("locked", flush=True)
    time.sleep(600)
""")


def start_holder(local_cluster, namespace, ttl: float, start_at: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(local_cluster.kubeconfig), namespace, str(ttl),
                             str(start_at)], stdout=subprocess.PIPE, text=True, env=env)


def leases(core_api):
    from kubernetes import client

    return client.CoordinationV1Api(core_api)


def backdate(core_api, namespace, seconds: float) -> None:
    """Move the lease's last renewal into the past, as if its holder had stalled."""
    renewed = (datetime.now(timezone.utc) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    leases(core_api).patch_namespaced_lease(lease_name(STAGE), namespace, {"spec": {"renewTime": renewed}})


def race(locks: list[StageLock]) -> list[str]:
    """All locks try at once; what each got, in order."""
    outcomes = [""] * len(locks)
    start = threading.Barrier(len(locks))

    def attempt(index: int) -> None:
        start.wait()
        try:
            locks[index].acquire()
            outcomes[index] = "won"
        except StageLocked:
            outcomes[index] = "refused"

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(len(locks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


# -- taking it ----------------------------------------------------------------------------------------


def test_a_second_acquire_is_refused_naming_holder_and_purpose(core_api, namespace):
    first = StageLock(core_api, namespace, STAGE, "deploy rev=abc (release 7)")
    with first:
        with pytest.raises(StageLocked) as caught:
            StageLock(core_api, namespace, STAGE, "deploy rev=def").acquire()
    assert caught.value.exit_code == 3
    assert re.fullmatch(
        rf"stage production is locked by {re.escape(first.holder)} since \d\d:\d\d:\d\d UTC \(\d s ago\), "
        r"doing: deploy rev=abc \(release 7\)\n"
        r"  it expires 30 s after its holder stops renewing it; if that deploy is dead, run: skycap unlock production",
        str(caught.value))
    assert first.holder.endswith(f":{os.getpid()}") and "@" in first.holder

    with StageLock(core_api, namespace, STAGE, "deploy rev=def"):  # released on leaving the block
        pass
    assert read_lock(core_api, namespace, STAGE) is None


def test_the_lease_names_holder_and_purpose(core_api, namespace):
    with StageLock(core_api, namespace, STAGE, "deploy rev=abc", ttl=3) as lock:
        lease = leases(core_api).read_namespaced_lease(f"skycap-lock-{STAGE}", namespace)
        assert lease.spec.holder_identity == lock.holder and lease.spec.lease_duration_seconds == 3
        assert lease.metadata.annotations["skycap.io/purpose"] == "deploy rev=abc"
        assert lease.metadata.labels == {"app.kubernetes.io/managed-by": "skycap", "skycap.io/stage": STAGE}

        lock.set_purpose("deploy rev=abc (release 7)")
        info = read_lock(core_api, namespace, STAGE)
        assert (info.holder, info.purpose) == (lock.holder, "deploy rev=abc (release 7)")
        assert 0 < info.expires_in <= 3 and info.since.endswith("Z")


def test_the_lock_is_released_when_the_work_raises(core_api, namespace):
    with pytest.raises(ZeroDivisionError):
        with StageLock(core_api, namespace, STAGE, "deploy"):
            1 / 0
    assert read_lock(core_api, namespace, STAGE) is None


def test_exactly_one_of_two_threads_wins(core_api, namespace):
    for _round in range(5):
        locks = [StageLock(core_api, namespace, STAGE, f"deploy {n}") for n in range(2)]
        outcomes = race(locks)
        assert sorted(outcomes) == ["refused", "won"]
        locks[outcomes.index("won")].release()


def stall(lock: StageLock) -> StageLock:
    """The holder stops renewing, as a hung process would."""
    lock._stop.set()
    lock._renewer.join()
    return lock


def test_exactly_one_of_two_threads_takes_over_an_expired_lease(core_api, namespace):
    stalled = StageLock(core_api, namespace, STAGE, "deploy", ttl=2)
    with stalled:
        stall(stalled)
        backdate(core_api, namespace, 60)
        locks = [StageLock(core_api, namespace, STAGE, f"deploy {n}") for n in range(2)]
        started = time.monotonic()
        outcomes = race(locks)
        assert time.monotonic() - started >= 2  # each watched the lease unchanged for its duration first
        assert sorted(outcomes) == ["refused", "won"]
        winner = locks[outcomes.index("won")]
        lease = leases(core_api).read_namespaced_lease(lease_name(STAGE), namespace)
        assert lease.spec.lease_transitions == 1
        assert lease.metadata.annotations["skycap.io/purpose"] == winner.purpose
    assert read_lock(core_api, namespace, STAGE).purpose == winner.purpose  # the stalled one left it alone
    winner.release()


def test_exactly_one_of_two_processes_wins(local_cluster, core_api, namespace):
    start_at = time.time() + 4  # both have imported the client by then
    racers = [start_holder(local_cluster, namespace, ttl=30, start_at=start_at) for _ in range(2)]
    try:
        outcomes = sorted(racer.stdout.readline().strip() for racer in racers)
        assert outcomes == ["locked", "refused"]
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()


# -- keeping it and losing it ---------------------------------------------------------------------------


def test_renewal_keeps_it_past_the_ttl(core_api, namespace):
    with StageLock(core_api, namespace, STAGE, "deploy", ttl=3) as lock:
        time.sleep(7)
        with pytest.raises(StageLocked):
            StageLock(core_api, namespace, STAGE, "deploy").acquire()
        assert not lock.lost
        assert read_lock(core_api, namespace, STAGE).expires_in > 0


def test_the_lock_expires_when_its_holder_is_killed(local_cluster, core_api, namespace):
    holder = start_holder(local_cluster, namespace, ttl=2)
    try:
        assert holder.stdout.readline().strip() == "locked"
        time.sleep(1)  # let it renew at least once
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed_at = time.monotonic()
        expires_in = read_lock(core_api, namespace, STAGE).expires_in
        assert 0 < expires_in <= 2
    finally:
        holder.kill()
        holder.wait()

    mine = StageLock(core_api, namespace, STAGE, "deploy", ttl=2)
    with pytest.raises(StageLocked, match="doing: deploy rev=abc \\(release 7\\)"):
        mine.acquire()
    while True:
        try:
            mine.acquire()
            break
        except StageLocked:
            assert time.monotonic() - killed_at < expires_in + 2 + 1.5, "the dead holder's lock never expired"
            time.sleep(0.1)
    waited = time.monotonic() - killed_at
    mine.release()
    # Once the lease looks expired, it is watched unchanged for its duration (2 s) before it is taken.
    assert expires_in + 2 - 0.3 <= waited <= expires_in + 2 + 1.5


def test_release_leaves_a_lease_taken_over_by_someone_else(core_api, namespace):
    stalled = StageLock(core_api, namespace, STAGE, "deploy 1", ttl=2)
    stalled.acquire()
    stall(stalled)
    backdate(core_api, namespace, 60)
    taker = StageLock(core_api, namespace, STAGE, "deploy 2", ttl=30)
    taker.acquire()

    stalled.release()
    assert read_lock(core_api, namespace, STAGE).purpose == "deploy 2"
    taker.release()
    assert read_lock(core_api, namespace, STAGE) is None


def test_renewal_notices_the_lock_was_broken(core_api, namespace):
    holder = StageLock(core_api, namespace, STAGE, "deploy rev=abc", ttl=3)
    holder.acquire()
    with pytest.raises(StageLocked, match="lock is alive: .* renewed it in the last 3 s"):
        break_lock(core_api, namespace, STAGE)  # watched it for 3 s: renewed meanwhile
    broken = break_lock(core_api, namespace, STAGE, force=True)
    assert (broken.holder, broken.purpose) == (holder.holder, "deploy rev=abc")
    assert read_lock(core_api, namespace, STAGE) is None

    with StageLock(core_api, namespace, STAGE, "deploy rev=def", ttl=3):
        deadline = time.monotonic() + 5
        while not holder.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holder.lost
        holder.release()
        assert read_lock(core_api, namespace, STAGE).purpose == "deploy rev=def"


def test_break_lock_when_nothing_is_held(core_api, namespace):
    assert break_lock(core_api, namespace, STAGE) is None


def test_a_missing_namespace_is_bad_input(core_api):
    with pytest.raises(BadInput, match="namespace no-such-namespace-here .* does not exist"):
        StageLock(core_api, "no-such-namespace-here", STAGE, "deploy").acquire()


# -- unlock ---------------------------------------------------------------------------------------------


def test_unlock_breaks_the_lock_and_records_it(core_api, namespace):
    ledger = Ledger(core_api, namespace, STAGE)
    ledger.finish(ledger.begin("deploy", manifests="a: 1\n"), "deployed")
    dead = StageLock(core_api, namespace, STAGE, "deploy rev=abc (release 2)", ttl=2)
    dead.acquire()
    stall(dead)  # its holder died: the lease is watched unchanged for 2 s, then broken
    pending = ledger.begin("deploy", rev="abc", manifests="a: 2\n")

    result = unlock(core_api, namespace, STAGE)
    dead.release()

    assert result.broken.holder == dead.holder and result.interrupted == [pending.number]
    record = ledger.get(result.release.number)
    assert (record.number, record.kind, record.status) == (3, "unlock", "recorded")
    assert record.note.startswith(f"lock broken (held by {dead.holder} since ")
    assert record.note.endswith("doing: deploy rev=abc (release 2)); marked interrupted: release 2")
    assert ledger.get(pending.number, with_manifests=False).status == "interrupted"
    assert ledger.current().number == 1
    assert read_lock(core_api, namespace, STAGE) is None


def test_unlock_with_nothing_to_do_records_nothing(core_api, namespace):
    result = unlock(core_api, namespace, STAGE)
    assert (result.broken, result.interrupted, result.release) == (None, [], None)
    assert Ledger(core_api, namespace, STAGE).releases() == []


# -- the words ------------------------------------------------------------------------------------------


def test_times_read_like_a_person_wrote_them():
    now = datetime.now(timezone.utc)
    stamp = (now - timedelta(minutes=3, seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert ago(stamp) == "3 min ago"
    assert ago((now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")) == "3 days ago"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 10:02:11 UTC", clock("2001-02-03T10:02:11.000000Z"))
