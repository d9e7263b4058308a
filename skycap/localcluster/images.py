"""Images in the local registry, pushed through its HTTP API as CI would push them.

`publish_image` pushes a runnable image: one layer with Debian's static busybox (`/bin/sh`,
`httpd` and the usual applets) and a start script that logs a line naming the image, then serves
HTTP on port 8080 a page naming the image and the pod, with `/health` for readiness probes. What
the demo and the tests need to go wrong goes wrong for real: the `SKYCAP_BEHAVIOUR` environment
variable (baked into the image from its `skycap.io/behaviour` label, or set by a container's env)
makes the script crash (`crash`: a line, then exit 3), fail (`fail`: exit 1), never pass its
readiness probe (`never-ready`), pass it late (`ready-after=N`) or exit after a while
(`exit-after=N`). No status is ever written on a container's behalf.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

from skycap.sources.registry import Registry

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEXES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "skycap/pause:3.4"
BEHAVIOUR_LABELS = ("skycap.io/behaviour", "skycap.sim/behaviour")  # the second: the simulator's old name

START_SCRIPT = r"""#!/bin/sh
# The default command of images made by `skycap local-cluster publish`.
behaviour=${SKYCAP_BEHAVIOUR:-${SKYCAP_SIM_BEHAVIOUR:-ok}}
echo "skycap demo image $SKYCAP_IMAGE starting on pod $(hostname) (behaviour: $behaviour)"
case "$behaviour" in
  crash) echo "crashing on purpose: exit 3" >&2; exit 3 ;;
  fail) echo "failing on purpose: exit 1" >&2; exit 1 ;;
esac
mkdir -p /tmp/www
echo "$SKYCAP_IMAGE on pod $(hostname)" > /tmp/www/index.html
case "$behaviour" in
  never-ready) echo "never becoming ready, on purpose" ;;
  ready-after=*) ( sleep "${behaviour#ready-after=}"; echo ok > /tmp/www/health; echo "ready now" ) & ;;
  *) echo ok > /tmp/www/health ;;
esac
# As PID 1 the shell gets no default signal handling: stop on SIGTERM at once, as a service should.
httpd -f -p 8080 -h /tmp/www &
server=$!
trap 'echo "stopping on SIGTERM"; kill $server 2>/dev/null; exit 0' TERM INT
echo "serving http on :8080"
case "$behaviour" in
  exit-after=*)
    sleep "${behaviour#exit-after=}" & wait $!
    echo "exiting on purpose after ${behaviour#exit-after=} s"; kill $server; exit 0 ;;
esac
wait $server
"""


def publish_image(registry: str, repository: str, tag: str, labels: dict[str, str] | None = None) -> str:
    """Push a runnable busybox image named repository:tag; return its manifest digest."""
    labels = dict(labels or {})
    env = ["PATH=/bin", f"SKYCAP_IMAGE={repository}:{tag}"]
    behaviour = next((labels[name] for name in BEHAVIOUR_LABELS if name in labels), None)
    if behaviour:
        env.append(f"SKYCAP_BEHAVIOUR={behaviour}")
    config = {"Labels": labels, "Env": env, "Entrypoint": ["/skycap/start"], "WorkingDir": "/",
              "ExposedPorts": {"8080/tcp": {}}}
    return push_image(registry, repository, tag, busybox_layer(), config)


def publish_pause_image(registry: str, pause_binary: Path) -> str:
    """The pod sandbox image containerd runs first in every pod."""
    layer = _layer({"pause": (pause_binary.read_bytes(), 0o755)})
    repository, tag = PAUSE_IMAGE.split(":")
    return push_image(registry, repository, tag, layer, {"Entrypoint": ["/pause"], "Labels": {}})


def build_pause(source: Path, destination: Path) -> Path:
    """Compile Kubernetes' pause.c (from the same source package) into a static binary, once."""
    if not destination.exists():
        tmp = destination.with_suffix(".tmp")
        subprocess.run(["gcc", "-Os", "-static", "-o", str(tmp), str(source)], check=True, capture_output=True)
        subprocess.run(["strip", str(tmp)], capture_output=True)
        tmp.replace(destination)
    return destination


def push_image(registry: str, repository: str, tag: str, layer_tar: bytes, config: dict) -> str:
    client = _local(registry)
    layer = _gzip(layer_tar)
    config_blob = _json({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        "history": [{"created_by": "skycap.localcluster.images"}],
    })
    for blob in (layer, config_blob):
        _upload_blob(client, repository, blob)
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_TYPE, "size": len(config_blob), "digest": _digest(config_blob)},
        "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
    })
    response = client.request("PUT", f"/v2/{repository}/manifests/{tag}", repository=repository,
                              actions="pull,push", headers={"Content-Type": MANIFEST_V2}, data=manifest)
    if response.status_code != 201:
        raise client.unexpected(response, f"the manifest of {repository}:{tag}")
    return _digest(manifest)


@functools.lru_cache(maxsize=1)
def busybox_layer() -> bytes:
    """/bin/busybox, a link per applet, the start script and /tmp: the same bytes every time."""
    if not BUSYBOX.exists():
        from skycap.errors import BadInput

        raise BadInput(f"{BUSYBOX} is missing: runnable images are built from Debian's static busybox",
                       "apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    files = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755), "skycap/start": (START_SCRIPT.encode(), 0o755)}
    links = {f"bin/{applet}": "busybox" for applet in applets if applet != "busybox"}
    return _layer(files, links, folders={"tmp": 0o1777, "etc": 0o755})


@functools.lru_cache(maxsize=8)
def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


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


def _layer(files: dict[str, tuple[bytes, int]], links: dict[str, str] | None = None,
           folders: dict[str, int] | None = None) -> bytes:
    """An uncompressed tar of these folders, files and symlinks, byte for byte the same every time."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted({str(Path(path).parent) for path in list(files) + list(links or {})} - {"."}
                           | set(folders or {})):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, (folders or {}).get(name, 0o755), 0
            tar.addfile(info)
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
        for name, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            tar.addfile(info)
    return out.getvalue()


def _json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
