"""Tiny images in the local registry, pushed through its HTTP API as CI would push them.

An image's config labels tell the node simulator how its pods behave.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from skycap.registry import Registry

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEXES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def publish_image(registry: str, repository: str, tag: str, labels: dict[str, str] | None = None) -> str:
    """Push a one-layer image whose config carries labels; return its manifest digest."""
    client = _local(registry)
    layer_tar = _layer(f"{repository}:{tag}\n".encode())
    layer = gzip.compress(layer_tar, mtime=0)
    config = _json({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": dict(labels or {}), "Cmd": ["/skycap-image"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        "history": [{"created_by": "skycap.localcluster.images.publish_image"}],
    })
    for blob in (layer, config):
        _upload_blob(client, repository, blob)
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
    })
    response = client.request("PUT", f"/v2/{repository}/manifests/{tag}", repository=repository,
                              actions="pull,push", headers={"Content-Type": MANIFEST_V2}, data=manifest)
    if response.status_code != 201:
        raise client.unexpected(response, f"the manifest of {repository}:{tag}")
    return _digest(manifest)


def image_labels(registry: str, repository: str, tag: str) -> dict[str, str] | None:
    """The config labels of repository:tag, or None when the registry has no such image."""
    client = _local(registry)
    manifest = _get_manifest(client, repository, tag)
    if manifest is None:
        return None
    if manifest.get("mediaType") in INDEXES or "manifests" in manifest:
        entries = manifest.get("manifests") or []
        chosen = next((m for m in entries if m.get("platform", {}).get("architecture") == "amd64"),
                      entries[0] if entries else None)
        manifest = chosen and _get_manifest(client, repository, chosen["digest"])
        if manifest is None:
            return None
    response = client.request("GET", f"/v2/{repository}/blobs/{manifest['config']['digest']}",
                              repository=repository)
    if response.status_code != 200:
        raise client.unexpected(response, f"the config of {repository}:{tag}")
    return dict((response.json().get("config") or {}).get("Labels") or {})


def _local(registry: str) -> Registry:
    return Registry(registry if "://" in registry else "http://" + registry)


def _get_manifest(client: Registry, repository: str, reference: str) -> dict | None:
    accept = ", ".join((MANIFEST_V2, OCI_MANIFEST) + INDEXES)
    response = client.request("GET", f"/v2/{repository}/manifests/{reference}", repository=repository,
                              headers={"Accept": accept})
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise client.unexpected(response, f"{repository}:{reference}")
    return response.json()


def _upload_blob(client: Registry, repository: str, blob: bytes) -> None:
    digest = _digest(blob)
    blob_path = f"/v2/{repository}/blobs/{digest}"
    if client.request("HEAD", blob_path, repository=repository, actions="pull,push").status_code == 200:
        return
    start = client.request("POST", f"/v2/{repository}/blobs/uploads/", repository=repository, actions="pull,push")
    if start.status_code != 202:
        raise client.unexpected(start, f"starting a blob upload to {repository}")
    location = client.absolute(start.headers["Location"])
    separator = "&" if "?" in location else "?"
    done = client.request("PUT", f"{location}{separator}digest={digest}", repository=repository,
                          actions="pull,push", headers={"Content-Type": "application/octet-stream"}, data=blob)
    if done.status_code != 201:
        raise client.unexpected(done, f"a blob upload to {repository}")


def _layer(content: bytes) -> bytes:
    """An uncompressed tar holding one small file, byte for byte the same every time."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("skycap-image")
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
