"""The kubectl wrapper: the noise filter on real captured output, and real kubectl runs."""

from pathlib import Path

import pytest

from skycap.cluster.kubectl import ClusterUnreachable, Kubectl, filter_output, is_transient
from skycap.context import RunLog
from skycap.errors import BadInput, CommandFailed

SAMPLES = Path(__file__).parent / "samples" / "kubectl"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize("name", ["version-skew.stderr", "apply-missing-last-applied.stderr",
                                  "throttling.stderr",
                                  "deprecated-flag-kubectl-1.20.stderr"])
def test_known_noise_is_hidden_entirely(name):
    text = sample(name)
    result = filter_output(text)
    assert result.shown == [] and result.warnings == []
    assert len(result.hidden) == len([line for line in text.splitlines() if line.strip()])


def test_verbose_klog_is_hidden_and_the_answer_kept():
    result = filter_output(sample("verbose-get.stderr"))
    assert result.shown == ["No resources found in samples namespace."]
    assert len(result.hidden) > 10


def test_each_throttling_format_is_hidden():
    lines = sample("throttling.stderr").splitlines()
    assert len(lines) == 3
    for line in lines:
        assert filter_output(line).hidden == [line]
        # also without klog's header, as some wrappers print them
        bare = line.split("] ", 1)[1]
        assert filter_output(bare).hidden == [bare]


def test_server_deprecation_warnings_are_collected_not_shown():
    result = filter_output(sample("apply-deprecated.stderr"))
    assert result.shown == []
    assert result.warnings == ["extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; "
                               "use networking.k8s.io/v1 Ingress"]


def test_unreachable_keeps_the_human_line_and_hides_klog():
    result = filter_output(sample("unreachable.stderr"))
    assert result.shown == ["The connection to the server 127.0.0.1:1 was refused - did you specify the right "
                            "host or port?"]
    assert is_transient(sample("unreachable.stderr"))


def test_real_errors_are_not_transient():
    assert not is_transient('The Deployment "web" is invalid: spec.replicas: Invalid value: -1')
    assert not is_transient('Error from server (Forbidden): deployments.apps "web" is forbidden')
    assert is_transient("Error from server: etcdserver: leader changed")
    assert is_transient("Error from server (InternalError): an error on the server")


# ----- against the real control plane -----

@pytest.fixture
def kubectl(kubeconfig, namespace, tmp_path):
    return Kubectl(namespace=namespace, log=RunLog("test"), kubeconfig=str(kubeconfig), context="skycap-local")


CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n"


def test_apply_returns_names_and_logs_everything(kubectl):
    applied = kubectl.apply(CONFIGMAP.format(name="one") + "---\n" + CONFIGMAP.format(name="two"))
    assert applied == ["configmap/one", "configmap/two"]
    log = kubectl.log.path.read_text()
    assert "$ " in log and "apply -f - -o name" in log and "configmap/two" in log


def test_server_dry_run_changes_nothing(kubectl):
    kubectl.apply(CONFIGMAP.format(name="dry"), server_dry_run=True)
    with pytest.raises(CommandFailed, match="NotFound|not found"):
        kubectl.run(["get", "configmap", "dry"])


def test_a_rejected_object_is_not_retried(kubectl):
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n"
    with pytest.raises(CommandFailed, match="Not_Valid"):
        kubectl.apply(bad)
    assert kubectl.log.path.read_text().count("$ ") == 1


def test_the_schema_check_can_be_left_to_the_dry_run(kubectl):
    typo = CONFIGMAP.format(name="typo") + "dataa:\n  c: d\n"
    with pytest.raises(CommandFailed, match="dataa"):
        kubectl.apply(typo, server_dry_run=True)
    assert kubectl.apply(typo, validate=False) == ["configmap/typo"]


def test_deprecation_warnings_are_kept_once(kubectl):
    ingress = ("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: {n}\n"
               "spec:\n  backend:\n    serviceName: web\n    servicePort: 80\n")
    kubectl.apply(ingress.format(n="a") + "---\n" + ingress.format(n="b"))
    assert kubectl.warnings == ["extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; "
                                "use networking.k8s.io/v1 Ingress"]


def test_unknown_context_is_bad_input(kubeconfig, namespace):
    kubectl = Kubectl(namespace=namespace, log=RunLog("test"), kubeconfig=str(kubeconfig), context="nope")
    with pytest.raises(BadInput, match="context 'nope' does not exist"):
        kubectl.run(["get", "pods"])


def test_unreachable_cluster_is_retried_then_named(tmp_path, local_cluster):
    config = local_cluster.kubeconfig.read_text().replace(local_cluster.server, "https://127.0.0.1:1")
    (tmp_path / "kubeconfig").write_text(config)
    kubectl = Kubectl(namespace="default", log=RunLog("test"), kubeconfig=str(tmp_path / "kubeconfig"),
                      attempts=2, backoff=0.05)
    with pytest.raises(ClusterUnreachable, match="cannot reach the Kubernetes API.*refused"):
        kubectl.run(["get", "pods"])
    assert kubectl.log.path.read_text().count("$ ") == 2


def test_missing_kubectl_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SKYCAP_KUBECTL", str(tmp_path / "no-kubectl"))
    kubectl = Kubectl(namespace="default", log=RunLog("test"))
    with pytest.raises(BadInput, match="kubectl not found.*"):
        kubectl.run(["version", "--client"])
