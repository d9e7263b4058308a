"""Benchmark skycap's VM deploys against real sshd hosts (the fake VMs of tests/fixtures/sshd.py).

1. 20 hosts, restart `sleep 1` (as a real service restart waits): parallel 10 against parallel 1.
   Goal: wall-time ratio <= 0.15, which only holds if the waiting really overlaps.
2. One host: skycap's deploy against the raw floor, the same steps as one `ssh` session running
   one shell script with the archive on its stdin. Goal: ratio <= 1.5.

Both are measured in one run, side by side. skycap is timed in-process (its imports, about
0.3 s once per CLI run, are printed separately); the floor is timed as the ssh process it is.

    sudo .venv/bin/python bench/vm_deploy.py [--hosts 20] [--rounds 1] [--repeat 5]

The fake VMs share this machine's cores with skycap: their sshd's connect and unpack work
(about 55 ms of CPU per host here) cannot overlap on 2 cores as it would on 20 real VMs, and
it weighs on the parallel-10 side. Run on a quiet machine; --rounds 3 gives a steadier ratio.

Needs root (the fake VMs use mount namespaces) and openssh-server; leaves nothing behind.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.sshd import FakeVmFleet, generate_key, sshd_missing_reason  # noqa: E402

NODE = "5f3c2a9be01d47c6a8e2f1b0c3d4e5f60718293a"

FLOOR_SCRIPT = """\
set -eu
mkdir -p {root}/releases {root}/shared
cd {root}
[ ! -e releases/{release} ]
mkdir releases/.{release}.partial
tar -xzf - -C releases/.{release}.partial
printf '%s\\n' {node} > releases/.{release}.partial/REVISION
mv releases/.{release}.partial releases/{release}
ln -sfn {root}/releases/{release} .current.tmp && mv -T .current.tmp current
cd current && sh -c {restart} && sh -c {check}
cd {root}
printf '%s\\n' "$(date -u +%FT%TZ) deployed {release} ({node}) by bench" >> revisions.log
ls releases | sort | head -n -5 | sed 's|^|releases/|' | xargs -r rm -rf
"""


def make_archive(path: Path, files: int = 40, size: int = 4096) -> Path:
    """A small application: `files` files of `size` bytes each, gzip'd as `hg archive -t tgz` would."""
    with tarfile.open(path, "w:gz") as tar:
        for i in range(files):
            data = (f"line {i}\n" * (size // 8)).encode()[:size]
            info = tarfile.TarInfo(f"./app/module_{i}.py")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class Names:
    """Unique release names: the benchmark deploys many times within one second."""

    def __init__(self):
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"20240101{self.count:06d}-{NODE[:12]}"


def time_skycap(vm, archive: Path, release: str) -> float:
    from skycap.vm import deploy as vmdeploy

    started = time.perf_counter()
    result = vmdeploy.deploy(vm, archive, NODE, release_name=release)
    elapsed = time.perf_counter() - started
    assert result.ok, result.summary()
    return elapsed


def time_floor(fleet: FakeVmFleet, home: Path, archive: Path, release: str, restart: str, check: str) -> float:
    from shlex import quote

    script = FLOOR_SCRIPT.format(root=fleet.deploy_to, release=release, node=NODE, restart=quote(restart),
                                 check=quote(check))
    # ssh takes ~ from the password database, not $HOME: point it at the benchmark's files.
    argv = ["ssh", "-F", str(home / ".ssh" / "config"), "-o", f"UserKnownHostsFile={home / '.ssh' / 'known_hosts'}",
            "-o", "BatchMode=yes", fleet.hosts[0], "sh -c " + quote(script)]
    with open(archive, "rb") as stdin:
        started = time.perf_counter()
        subprocess.run(argv, stdin=stdin, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="20-host rounds per side (median ratio is shown)")
    parser.add_argument("--repeat", type=int, default=5, help="single-host deploys per side (median is shown)")
    args = parser.parse_args()
    reason = sshd_missing_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="skycap-bench-") as tmp:
        base = Path(tmp)
        home = base / "home"
        home.mkdir()
        os.environ["HOME"] = str(home)  # skycap reads ~/.ssh/config and known_hosts from here
        key = generate_key(base / "id_ed25519", "skycap-bench")
        archive = make_archive(base / "release.tar.gz")
        fleet = FakeVmFleet(base / "vms", args.hosts, key).start()
        try:
            fleet.configure_client(home)
            return run_benchmarks(fleet, home, archive, args.rounds, args.repeat)
        finally:
            fleet.stop()


def run_benchmarks(fleet: FakeVmFleet, home: Path, archive: Path, rounds: int, repeat: int) -> int:
    started = time.perf_counter()
    import fabric  # noqa: F401
    import paramiko  # noqa: F401

    import skycap.vm.deploy  # noqa: F401
    print(f"import skycap.vm.deploy + fabric + paramiko: {time.perf_counter() - started:.2f} s (once per CLI run)")
    from skycap.project.config import VmService

    names = Names()
    archive_kb = archive.stat().st_size / 1024

    def service(hosts, parallel, restart, check="test -f REVISION"):
        return VmService(name="bench", hosts=hosts, deploy_to=fleet.deploy_to, restart=restart, check=check,
                         parallel=parallel, keep_releases=5, linked_dirs=["log"])

    print(f"\n1. {len(fleet.hosts)} hosts, restart `sleep 1`, archive {archive_kb:.0f} KiB, {rounds} round(s)")
    ratios = []
    for _ in range(rounds):
        wide = time_skycap(service(fleet.hosts, 10, "sleep 1"), archive, names.next())
        narrow = time_skycap(service(fleet.hosts, 1, "sleep 1"), archive, names.next())
        ratios.append(wide / narrow)
        print(f"   parallel 10: {wide:6.2f} s   parallel 1: {narrow:6.2f} s   ratio {wide / narrow:.3f}")
    ratio = statistics.median(ratios)
    print(f"   median ratio: {ratio:.3f} (goal <= 0.15) {'ok' if ratio <= 0.15 else 'MISSED'}")

    restart, check = "true", "test -f REVISION"
    print(f"\n2. one host, restart `{restart}`, check `{check}`, median of {repeat}")
    one = service(fleet.hosts[:1], 1, restart, check)
    one.linked_dirs = []  # the floor script links nothing either
    ours, floor = [], []
    for _ in range(repeat):  # interleaved, so both sides see the same machine load
        ours.append(time_skycap(one, archive, names.next()))
        floor.append(time_floor(fleet, home, archive, names.next(), restart, check))
    ours_median, floor_median = statistics.median(ours), statistics.median(floor)
    ratio_one = ours_median / floor_median
    print(f"   skycap deploy:        {ours_median * 1000:6.0f} ms")
    print(f"   raw floor (1 ssh -c): {floor_median * 1000:6.0f} ms")
    print(f"   ratio: {ratio_one:.2f} (goal <= 1.5) {'ok' if ratio_one <= 1.5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
