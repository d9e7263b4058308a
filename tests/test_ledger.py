"""The release ledger against a real apiserver: what is stored, how it numbers, supersedes, prunes and copes."""

from __future__ import annotations

import base64
import os
import threading

import pytest

from skycap.cluster.ledger import CHUNK_BYTES, Ledger, Release, decode_release, who_am_i
from skycap.errors import BadInput

MANIFESTS = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n"


@pytest.fixture
def ledger(core_api, namespace) -> Ledger:
    return Ledger(core_api, namespace, "staging")


def secrets_in(core_api, namespace, selector="") -> list:
    from kubernetes import client

    return client.CoreV1Api(core_api).list_namespaced_secret(namespace, label_selector=selector).items


def count_requests(monkeypatch, api_client) -> list[tuple[str, str]]:
    """Every HTTP request the client sends from now on, as (method, url), counted at its REST layer."""
    requests = []
    original = api_client.rest_client.request

    def counted(method, url, *args, **kwargs):
        requests.append((method, url))
        return original(method, url, *args, **kwargs)

    monkeypatch.setattr(api_client.rest_client, "request", counted)
    return requests


def deployed(ledger: Ledger, manifests: str = MANIFESTS, **fields) -> Release:
    release = ledger.begin("deploy", manifests=manifests, **fields)
    ledger.finish(release, "deployed")
    return release


# -- what is stored ------------------------------------------------------------------------------------


def test_a_release_round_trips_with_its_manifests(ledger, core_api, namespace):
    begun = ledger.begin("deploy", rev="tip", node="a" * 40, tags={"web": "aaaaaaaaaaaa"}, manifests=MANIFESTS,
                         services=["web"], note="first")
    begun.applied = ["ConfigMap/web-config", "Deployment/web"]
    begun.vm = {"legacy-api": {"vm1": "20240501100211"}}
    ledger.finish(begun, "deployed")

    stored = ledger.get(begun.number)
    assert stored == begun
    assert (stored.number, stored.kind, stored.status, stored.note) == (1, "deploy", "deployed", "first")
    assert stored.manifests == MANIFESTS and stored.who == who_am_i()
    assert stored.started.endswith("Z") and stored.finished.endswith("Z")

    listed = ledger.releases()
    assert [release.number for release in listed] == [1] and listed[0].manifests is None

    [secret] = secrets_in(core_api, namespace)
    assert secret.metadata.name == "skycap.staging.v1" and secret.type == "skycap.io/release"
    assert secret.metadata.labels == {"app.kubernetes.io/managed-by": "skycap", "skycap.io/stage": "staging",
                                      "skycap.io/release": "1", "skycap.io/status": "deployed"}
    assert set(secret.data) == {"release.json", "manifests.gz"}


def test_update_keeps_the_manifests(ledger):
    release = ledger.begin("deploy", manifests=MANIFESTS)
    release.applied = ["Deployment/web"]
    release.manifests = None  # as if it came from a listing
    ledger.update(release)
    stored = ledger.get(release.number)
    assert stored.applied == ["Deployment/web"] and stored.manifests == MANIFESTS


def test_numbers_go_up_from_one(ledger):
    numbers = [ledger.begin("deploy", manifests=MANIFESTS).number for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert [release.number for release in ledger.releases()] == [3, 2, 1]


def test_a_number_known_from_a_listing_is_claimed_without_listing_again(ledger, core_api, monkeypatch):
    ledger.begin("deploy", manifests=MANIFESTS)
    requests = count_requests(monkeypatch, core_api)
    assert ledger.begin("deploy", manifests=MANIFESTS, number=2).number == 2
    assert [method for method, _path in requests] == ["POST"]
    assert ledger.begin("deploy", manifests=MANIFESTS, number=2).number == 3  # taken meanwhile: the next one


def test_ledger_requests_hand_their_connection_back(local_cluster, namespace):
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(local_cluster.kubeconfig), client_configuration=configuration)
    ledger = Ledger(client.ApiClient(configuration), namespace, "staging")
    for _ in range(3):
        ledger.finish(ledger.begin("deploy", manifests=MANIFESTS), "deployed")
    ledger.prune(keep=1)
    pools = ledger.core.api_client.rest_client.pool_manager.pools
    assert [pools[key].num_connections for key in pools.keys()] == [1]  # one TLS connection for them all


def test_racing_begins_get_distinct_numbers(ledger):
    numbers, errors = [], []
    start = threading.Barrier(4)

    def begin_three():
        start.wait()
        try:
            numbers.extend(ledger.begin("deploy", manifests=MANIFESTS).number for _ in range(3))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=begin_three) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(numbers) == list(range(1, 13))


def test_a_deployed_release_supersedes_the_one_before(ledger):
    first, second = deployed(ledger), deployed(ledger)
    failed = ledger.begin("deploy", manifests=MANIFESTS)
    ledger.finish(failed, "failed", "rollout timed out")

    statuses = {release.number: release.status for release in ledger.releases()}
    assert statuses == {first.number: "superseded", second.number: "deployed", failed.number: "failed"}
    assert ledger.current().number == second.number
    assert ledger.get(failed.number).note == "rollout timed out"


def test_last_good_before_skips_failed_and_manifestless_releases(ledger):
    first = deployed(ledger, manifests=MANIFESTS.replace("web", "first"))
    second = deployed(ledger, manifests=MANIFESTS.replace("web", "second"))
    scaled = ledger.begin("scale", tags={"web": "x"})  # carries no manifests
    ledger.finish(scaled, "deployed")
    failed = ledger.begin("deploy", manifests=MANIFESTS.replace("web", "third"))
    ledger.finish(failed, "failed")

    good = ledger.last_good_before(failed.number)
    assert good.number == second.number and good.manifests == MANIFESTS.replace("web", "second")
    assert ledger.last_good_before(second.number).number == first.number
    assert ledger.last_good_before(first.number) is None


def test_listing_is_one_request(ledger, core_api, monkeypatch):
    for _ in range(5):
        deployed(ledger)
    requests = count_requests(monkeypatch, core_api)
    assert len(ledger.releases()) == 5
    assert ledger.current().number == 5
    assert [method for method, _path in requests] == ["GET", "GET"]
    assert all(url.split("?")[0].endswith("/secrets") for _method, url in requests)


def test_a_release_bigger_than_a_secret_is_split_and_joined(ledger, core_api, namespace):
    noise = base64.b64encode(os.urandom(3 * 1024 * 1024)).decode()  # 4 MiB of text gzip barely shrinks
    manifests = "".join(f"# {noise[i:i + 76]}\n" for i in range(0, len(noise), 76))
    big = ledger.begin("deploy", manifests=manifests)
    ledger.finish(big, "deployed")

    assert ledger.get(big.number).manifests == manifests
    parts = secrets_in(core_api, namespace, "skycap.io/release-part")
    assert len(parts) >= 3 and all(len(base64.b64decode(part.data["manifests.gz"])) <= CHUNK_BYTES
                                   for part in parts)
    assert [release.number for release in ledger.releases()] == [big.number]  # parts are not releases

    for _ in range(2):
        deployed(ledger)
    assert ledger.prune(keep=2) == [big.number]
    assert secrets_in(core_api, namespace, "skycap.io/release-part") == []


def test_a_garbage_release_is_skipped_and_named(ledger, core_api, namespace):
    from kubernetes import client

    good = deployed(ledger)
    labels = {"app.kubernetes.io/managed-by": "skycap", "skycap.io/stage": "staging", "skycap.io/release": "2"}
    client.CoreV1Api(core_api).create_namespaced_secret(namespace, {
        "metadata": {"name": "skycap.staging.v2", "labels": labels},
        "type": "skycap.io/release", "stringData": {"release.json": "{hand edited, oops"}})

    assert [release.number for release in ledger.releases()] == [good.number]
    assert len(ledger.problems) == 1 and "skycap.staging.v2" in ledger.problems[0]
    assert ledger.current().number == good.number
    assert ledger.begin("deploy").number == 3  # the garbage still holds its number
    with pytest.raises(BadInput, match="release 2 of stage staging cannot be read"):
        ledger.get(2)


def test_decode_names_what_is_wrong():
    def secret(document: str) -> dict:
        return {"metadata": {"name": "x"}, "data": {"release.json": base64.b64encode(document.encode()).decode()}}

    for document, reason in (("[]", "not a JSON object"), ('{"kind": "deploy"}', "number"),
                             ('{"number": "1", "kind": "deploy", "status": "deployed"}', "number")):
        with pytest.raises(ValueError, match=reason):
            decode_release(secret(document))
    with pytest.raises(ValueError, match="no release.json"):
        decode_release({"metadata": {"name": "x"}, "data": {}})


def test_prune_keeps_the_current_and_pending_releases(ledger):
    current = deployed(ledger)
    pending = ledger.begin("deploy", manifests=MANIFESTS)
    for _ in range(4):
        ledger.finish(ledger.begin("deploy", manifests=MANIFESTS), "failed")

    assert ledger.prune(keep=2) == [4, 3]
    assert [release.number for release in ledger.releases()] == [6, 5, pending.number, current.number]
    assert ledger.prune(keep=0) == [6, 5]
    assert [release.number for release in ledger.releases()] == [pending.number, current.number]


def test_interrupt_pending_marks_the_dead_releases(ledger):
    deployed(ledger)
    dead = ledger.begin("rollback", manifests=MANIFESTS, note="rollback to 1", target=1)
    assert ledger.interrupt_pending("its holder died") == [dead.number]
    stored = ledger.get(dead.number, with_manifests=False)
    assert (stored.status, stored.note) == ("interrupted", "rollback to 1; its holder died")
    assert stored.finished and stored.target == 1


def test_an_unknown_release_names_the_known_ones(ledger):
    deployed(ledger), deployed(ledger)
    with pytest.raises(BadInput) as caught:
        ledger.get(7)
    assert str(caught.value) == "release 7 of stage staging does not exist\n  known releases: 1, 2"


def test_an_empty_ledger_says_so(ledger):
    assert ledger.releases() == [] and ledger.current() is None
    with pytest.raises(BadInput, match="ledger of stage staging is empty"):
        ledger.get(1)


def test_a_missing_namespace_is_bad_input(core_api):
    ledger = Ledger(core_api, "no-such-namespace-here", "staging")
    with pytest.raises(BadInput, match="namespace no-such-namespace-here .* does not exist"):
        ledger.releases()
    with pytest.raises(BadInput, match="does not exist"):
        ledger.begin("deploy", manifests=MANIFESTS)


# -- who ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_ci(monkeypatch):
    for variable in ("CI", "GITLAB_CI", "GITHUB_ACTIONS", "GITHUB_RUN_ID", "BUILDKITE", "JENKINS_URL", "CIRCLECI",
                     "TEAMCITY_VERSION"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_who_outside_ci_is_user_at_host(no_ci):
    import socket

    no_ci.setenv("USER", "alice")
    no_ci.setenv("LOGNAME", "alice")
    assert who_am_i() == f"alice@{socket.gethostname()}"


def test_who_in_gitlab_is_the_job(no_ci):
    no_ci.setenv("CI", "true")
    no_ci.setenv("GITLAB_CI", "true")
    no_ci.setenv("CI_JOB_URL", "https://gitlab.example.com/g/p/-/jobs/42")
    no_ci.setenv("GITLAB_USER_LOGIN", "bob")
    assert who_am_i() == "gitlab https://gitlab.example.com/g/p/-/jobs/42 by bob"


def test_who_in_github_actions_is_the_run(no_ci):
    no_ci.setenv("GITHUB_ACTIONS", "true")
    no_ci.setenv("GITHUB_SERVER_URL", "https://github.com")
    no_ci.setenv("GITHUB_REPOSITORY", "skytap/platform")
    no_ci.setenv("GITHUB_RUN_ID", "99")
    no_ci.setenv("GITHUB_ACTOR", "carol")
    assert who_am_i() == "github https://github.com/skytap/platform/actions/runs/99 by carol"


def test_who_in_jenkins_and_buildkite(no_ci):
    no_ci.setenv("JENKINS_URL", "https://ci.example.com/")
    no_ci.setenv("BUILD_URL", "https://ci.example.com/job/deploy/7/")
    assert who_am_i() == "jenkins https://ci.example.com/job/deploy/7/"
    no_ci.delenv("JENKINS_URL")
    no_ci.setenv("BUILDKITE", "true")
    no_ci.setenv("BUILDKITE_BUILD_URL", "https://buildkite.com/o/p/builds/3")
    assert who_am_i() == "buildkite https://buildkite.com/o/p/builds/3"
