"""CLI start-up: wall time of ``fedcrm --help`` (median of N runs) against the bare floor beside it.

    .venv/bin/python benchmarks/cli_startup.py [--runs 5]

References, run interleaved with it on the same machine:
* the floor: a Python process that only imports typer (what any typer CLI pays);
* the interpreter alone (``python -c pass``).
Target (issue 14): ``fedcrm --help`` under 0.5 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _wall(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    fedcrm = shutil.which("fedcrm", path=str(BIN)) or "fedcrm"
    commands = {
        "fedcrm --help": [fedcrm, "--help"],
        "python -c 'import typer' (floor)": [sys.executable, "-c", "import typer"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    for command in commands.values():  # warm the page cache and .pyc files
        _wall(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(_wall(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians["python -c 'import typer' (floor)"]
    for name, median in medians.items():
        print(f"{name:36s} median {median:.3f} s  (min {min(times[name]):.3f}, max {max(times[name]):.3f})  ÷ floor {median / floor:.2f}")
    verdict = "met" if medians["fedcrm --help"] < 0.5 else "NOT met"
    print(f"target fedcrm --help < 0.5 s: {verdict}")


if __name__ == "__main__":
    main()
