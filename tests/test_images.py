"""skycap.localcluster.images: tiny images pushed through a real docker-registry's HTTP API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
import tarfile
import urllib.request

from skycap.localcluster import images


def get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def test_published_image_carries_its_labels(registry):
    labels = {"skycap.test/behaviour": "crash-loop", "org.opencontainers.image.revision": "0123456789ab"}
    images.publish_image(registry.url, "demo/labelled", "v1", labels)
    assert images.image_labels(registry.url, "demo/labelled", "v1") == labels
    assert images.image_labels(registry.hostport, "demo/labelled", "v1") == labels


def test_image_without_labels_has_none(registry):
    images.publish_image(registry.hostport, "demo/plain", "v1")
    assert images.image_labels(registry.hostport, "demo/plain", "v1") == {}


def test_missing_image_has_no_labels(registry):
    assert images.image_labels(registry.url, "demo/never-pushed", "v1") is None
    images.publish_image(registry.url, "demo/one-tag", "v1")
    assert images.image_labels(registry.url, "demo/one-tag", "v2") is None


def test_manifest_is_docker_schema2_with_a_gzip_tar_layer(registry):
    digest = images.publish_image(registry.url, "demo/schema", "v1", {"a": "b"})
    raw = get(f"{registry.url}/v2/demo/schema/manifests/v1", images.MANIFEST_V2)
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    manifest = json.loads(raw)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == images.MANIFEST_V2
    assert manifest["config"]["mediaType"] == images.CONFIG_TYPE
    (layer,) = manifest["layers"]
    blob = get(f"{registry.url}/v2/demo/schema/blobs/{layer['digest']}")
    assert layer["size"] == len(blob) and layer["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        assert tar.extractfile("bin/busybox").read() == Path("/bin/busybox").read_bytes()
        assert tar.getmember("bin/sh").linkname == "busybox" and tar.getmember("bin/httpd").issym()
        assert tar.extractfile("skycap/start").read() == images.START_SCRIPT.encode()
        assert tar.getmember("skycap/start").mode == 0o755 and tar.getmember("tmp").mode == 0o1777
    config = json.loads(get(f"{registry.url}/v2/demo/schema/blobs/{manifest['config']['digest']}"))
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert (config["os"], config["config"]["Labels"]) == ("linux", {"a": "b"})
    assert config["config"]["Entrypoint"] == ["/skycap/start"]
    assert "SKYCAP_IMAGE=demo/schema:v1" in config["config"]["Env"]


def test_every_image_shares_one_layer_and_a_behaviour_label_becomes_the_start_scripts_variable(registry):
    images.publish_image(registry.url, "demo/ok", "v1")
    images.publish_image(registry.url, "demo/bad", "v1", {"skycap.io/behaviour": "crash"})
    manifests = [json.loads(get(f"{registry.url}/v2/demo/{name}/manifests/v1", images.MANIFEST_V2))
                 for name in ("ok", "bad")]
    assert manifests[0]["layers"] == manifests[1]["layers"]
    configs = [json.loads(get(f"{registry.url}/v2/demo/{name}/blobs/{m['config']['digest']}"))["config"]
               for name, m in zip(("ok", "bad"), manifests)]
    assert not any(e.startswith("SKYCAP_BEHAVIOUR=") for e in configs[0]["Env"])
    assert "SKYCAP_BEHAVIOUR=crash" in configs[1]["Env"]


def test_publishing_again_is_the_same_image_and_new_labels_replace_the_tag(registry):
    first = images.publish_image(registry.url, "demo/again", "v1", {"x": "1"})
    assert images.publish_image(registry.url, "demo/again", "v1", {"x": "1"}) == first
    second = images.publish_image(registry.url, "demo/again", "v1", {"x": "2"})
    assert second != first
    assert images.image_labels(registry.url, "demo/again", "v1") == {"x": "2"}


def test_labels_through_a_manifest_list(registry):
    digest = images.publish_image(registry.url, "demo/multi", "amd64", {"arch": "amd64"})
    size = len(get(f"{registry.url}/v2/demo/multi/manifests/amd64", images.MANIFEST_V2))
    index_type = images.INDEXES[0]
    index = json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": [
        {"mediaType": images.MANIFEST_V2, "digest": digest, "size": size,
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    request = urllib.request.Request(f"{registry.url}/v2/demo/multi/manifests/latest", data=index, method="PUT",
                                     headers={"Content-Type": index_type})
    assert urllib.request.urlopen(request, timeout=10).status == 201
    assert images.image_labels(registry.url, "demo/multi", "latest") == {"arch": "amd64"}
