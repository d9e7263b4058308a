"""skycap.cluster.kubectl, its pure parts: what of kubectl's stderr a person sees, what is noise, what is a
server warning, and which failures are worth a retry."""

from __future__ import annotations

import pytest

from skycap.cluster.kubectl import _first_line, filter_output, is_transient


def test_stderr_is_split_into_shown_noise_and_warnings():
    stderr = ("I0501 12:00:00.123456   4242 request.go:697] Waited for 1.1s due to client-side throttling\n"
              "\n"
              "Warning: policy/v1beta1 PodSecurityPolicy is deprecated\n"
              "Flag --short has been deprecated, and will be removed\n"
              "Warning: resource configmaps/c is missing the kubectl.kubernetes.io/last-applied-configuration "
              "annotation which is required by kubectl apply\n"
              'The Deployment "web" is invalid: spec.replicas: Invalid value: -1\n')
    result = filter_output(stderr)
    assert result.shown == ['The Deployment "web" is invalid: spec.replicas: Invalid value: -1']
    assert result.warnings == ["policy/v1beta1 PodSecurityPolicy is deprecated"]
    assert len(result.hidden) == 3  # the klog line, the flag and the last-applied notice


def test_nothing_to_show():
    assert (filter_output("").shown, filter_output("").hidden, filter_output("").warnings) == ([], [], [])


@pytest.mark.parametrize("stderr, transient", [
    ("dial tcp 127.0.0.1:6443: connect: connection refused", True),
    ("Error from server (ServiceUnavailable): the server is currently unable to handle the request", True),
    ("Error from server (InternalError): etcdserver: leader changed", True),
    ("net/http: TLS handshake timeout", True),
    ("The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?", True),
    ('Error from server (NotFound): deployments.apps "web" not found', False),
    ('Error from server (Forbidden): pods is forbidden: User "x" cannot list', False),
    ("", False),
])
def test_which_failures_are_worth_a_retry(stderr, transient):
    assert is_transient(stderr) is transient


def test_the_first_line_that_says_something_at_most_300_characters():
    assert _first_line("\n  \nerror: one\nerror: two") == "error: one"
    assert _first_line("x" * 400) == "x" * 300
    assert _first_line("") == ""
