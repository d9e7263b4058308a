#!/usr/bin/env python3
"""Median wall time of `skycap --help` against `python -c pass` and `kubectl version --client`,
run interleaved in the same run so that machine load hits all three alike. Goal: skycap <= 0.15 s."""

import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "skycap --help": [str(BIN / "skycap"), "--help"],
    "python -c pass": [sys.executable, "-c", "pass"],
    "kubectl version --client": [str(BIN / "kubectl"), "version", "--client"],
}


def timed(argv) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main(rounds: int = 21) -> None:
    samples = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            samples[name].append(timed(argv))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        print(f"{name:<26} median {value * 1000:7.1f} ms")
    skycap = medians["skycap --help"]
    print(f"skycap / python -c pass    {skycap / medians['python -c pass']:.2f}")
    print(f"skycap / kubectl --client  {skycap / medians['kubectl version --client']:.2f}")
    print(f"goal: skycap --help <= 150 ms: {'met' if skycap <= 0.15 else 'NOT met'} ({skycap * 1000:.0f} ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 21)
