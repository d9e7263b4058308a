"""The Kubernetes client imported name by name: the same objects, without loading what is not used."""

import subprocess
import sys
import textwrap


def in_fresh_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_names_import_on_first_use_and_are_the_real_ones():
    out = in_fresh_python("""
        import sys
        import skycap
        from kubernetes import client, config, watch
        from kubernetes.client.rest import ApiException
        assert "kubernetes.client.models.v1_pod" not in sys.modules
        assert "kubernetes.client.api.batch_v1_api" not in sys.modules
        assert "google.oauth2.service_account" not in sys.modules
        from kubernetes.client.models.v1_pod import V1Pod
        assert client.V1Pod is V1Pod and client.models.V1Pod is V1Pod
        assert client.CoreV1Api.__module__ == "kubernetes.client.api.core_v1_api"
        assert client.ApiClient().deserialize(type("R", (), {"data": '{"metadata": {"name": "x"}}'})(), "V1Pod") \\
            .metadata.name == "x"
        import kubernetes
        from importlib.metadata import version
        assert kubernetes.__version__ == client.__version__ == version("kubernetes")
        try:
            client.NoSuchThing
        except AttributeError:
            pass
        else:
            raise AssertionError("a name the client lacks must raise AttributeError")
        print(len([m for m in sys.modules if m.startswith("kubernetes.client.models.")]))
    """)
    assert 0 < int(out) < 60


def test_the_google_auth_module_runs_when_first_read():
    out = in_fresh_python("""
        import sys
        import skycap
        import kubernetes.config
        import google.auth.transport.requests as transport
        assert "google.oauth2.service_account" not in sys.modules
        print(transport.Request.__name__, "google.oauth2.service_account" in sys.modules)
    """)
    assert out == "Request True"


def test_what_the_client_imports_for_unused_features_runs_only_when_used():
    out = in_fresh_python("""
        import sys
        import skycap
        from kubernetes import client, config
        client.CoreV1Api, config.load_kube_config
        deferred = ["google.auth._default", "oauthlib.oauth2.rfc6749", "requests_oauthlib.oauth2_session",
                    "dateutil.parser._parser", "multiprocessing.context"]
        assert not [name for name in deferred if name in sys.modules], [n for n in deferred if n in sys.modules]
        from kubernetes.config import kube_config
        import google.auth, oauthlib.oauth2, requests_oauthlib
        assert google.auth.default.__module__ == "google.auth._default"
        assert kube_config.oauthlib.oauth2.rfc6749.errors.InvalidClientIdError.__name__ == "InvalidClientIdError"
        assert requests_oauthlib.OAuth2Session.__name__ == "OAuth2Session"
        when = client.ApiClient().deserialize(
            type("R", (), {"data": '{"metadata": {"creationTimestamp": "2020-01-02T03:04:05Z"}}'})(), "V1Pod")
        pool = client.ApiClient(pool_threads=2).pool
        print(when.metadata.creation_timestamp.year, type(pool).__name__)
        pool.close()
    """)
    assert out == "2020 ThreadPool"
