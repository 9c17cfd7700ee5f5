"""Machine instructions per `POST /voice/call` in-process: a yardstick that does not move with the machine.

    apt-get install valgrind
    .venv/bin/python benchmarks/call_path_instructions.py            # instructions per call
    .venv/bin/python benchmarks/call_path_instructions.py --calls 200 400

On a shared virtual machine CPU time swings by a fifth from run to run (other guests take the
CPU: `top` shows it as steal), so a change worth a few percent cannot be told from noise with
timings, in-process or under load. Valgrind's callgrind counts the instructions the interpreter
executes instead, and the count repeats to within a few thousand in a billion. This runs
benchmarks/call_path_cpu.py (the same app, settings and signed calls) under callgrind twice,
with two numbers of measured calls, and divides the difference by the difference in calls, so
start-up and warm-up cancel out. Each run takes a minute or two.

Instructions are not time: a system call or a cache miss costs far more than its instructions,
and nothing here is under load (benchmarks/webhook_throughput.py measures that). Use it to
compare two versions of the call path's own work, one change at a time.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def instructions(calls: int) -> int:
    """Instructions the whole run of call_path_cpu.py executed with `calls` measured calls."""
    with tempfile.TemporaryDirectory(prefix="gateway-callgrind-") as folder:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={Path(folder) / 'callgrind.out'}",
             sys.executable, str(ROOT / "benchmarks" / "call_path_cpu.py"), "--calls", str(calls)],
            capture_output=True, text=True, cwd=ROOT,
        )
    collected = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or collected is None:
        sys.exit(f"callgrind run with {calls} calls failed:\n{run.stderr[-2000:]}")
    return int(collected.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs=2, default=(100, 400), metavar=("FEWER", "MORE"),
                        help="measured calls in the two runs (default 100 and 400)")
    args = parser.parse_args()
    fewer, more = sorted(args.calls)
    if fewer == more:
        sys.exit("--calls needs two different numbers")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    per_call = (instructions(more) - instructions(fewer)) / (more - fewer)
    print(f"{per_call / 1e6:.3f} million instructions per call ({fewer} and {more} calls under callgrind)")


if __name__ == "__main__":
    main()
