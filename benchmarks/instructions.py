"""Instructions per token login, actorchat beside the bare trio-websocket relay: a measure the
shared machine's noise does not move (the login storm's rate moved by 40% between runs of the
same code on the same day).

    python benchmarks/instructions.py                 # ~6 minutes; needs valgrind (apt)
    python benchmarks/instructions.py --cycles 100 300

Each server runs under ``valgrind --tool=cachegrind --cache-sim=no`` (instruction counts only)
and the load generator's storm logs in ``--users`` users once, then reconnects with their
tokens for a bounded number of cycles (connect, resume, welcome, close), talking only to
127.0.0.1. A server is run twice, with the two cycle counts; the difference of its two totals
divided by the difference of the counts is what one token login costs it, start-up and shutdown
cancelled out. Prints a table, then ``name: value`` lines (ratio first), and writes
``benchmarks/results/instructions.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h

SYSTEMS = ("bare_trio", "actorchat")
LINGER_WAIT = 7.0  # the node's idle mailboxes stop 5 s after their last logout: in both runs


def instructions(system: str, cycles: int, users: int) -> int:
    """Instructions the server ran in all, for a storm of ``cycles`` token logins."""
    workdir = h.workdir()
    # Not in the work directory: ``Server.stop`` removes that one after a clean stop.
    outdir = Path(tempfile.mkdtemp(prefix="actorchat-cachegrind-"))
    out = outdir / "cachegrind.out"
    command = h.command

    def under_valgrind(name: str, wd: Path) -> list[str]:
        return [
            "valgrind", "--tool=cachegrind", "--cache-sim=no",
            f"--cachegrind-out-file={out}", *command(name, wd),
        ]  # fmt: skip

    h.command = under_valgrind
    try:
        server = h.Server(system, workdir).start(timeout=600)
    finally:
        h.command = command
    try:
        server.seed(f"u{i}" for i in range(users))
        result = h.run_loadgen(
            "storm", server, timeout=3000, users=users, concurrency=4, duration=3000,
            warmup=0, max_cycles=cycles, prefix="u", sources="127.0.9.2,127.0.9.3",
        )  # fmt: skip
        if result.get("error") or result.get("cycles") != cycles:
            raise RuntimeError(f"{system}: the storm did not run: {result}")
        time.sleep(LINGER_WAIT)
    finally:
        server.stop(timeout=600)
    text = out.read_text()
    shutil.rmtree(outdir, ignore_errors=True)
    found = re.search(r"^summary: (\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{system}: no summary in cachegrind's output")
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, nargs=2, default=(100, 300), metavar=("N1", "N2"))
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--out", default=str(h.HERE / "results"))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind): nothing measured")
    h.pin_self()
    n1, n2 = args.cycles
    per_login: dict[str, float] = {}
    runs: dict[str, Any] = {}
    for system in SYSTEMS:
        first, second = instructions(system, n1, args.users), instructions(system, n2, args.users)
        per_login[system] = (second - first) / (n2 - n1)
        runs[system] = {"cycles": [n1, n2], "instructions": [first, second]}
        print(f"{system:10} {per_login[system] / 1000:9.1f} k instructions per token login",
              flush=True)
    ratio = per_login["bare_trio"] / per_login["actorchat"]
    print(f"actorchat_vs_bare_trio_login_instructions: {ratio:.3f}")
    for system in SYSTEMS:
        print(f"{system}_instructions_per_token_login: {per_login[system]:.0f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "instructions.json").write_text(json.dumps({
        "per_token_login": per_login, "actorchat_vs_bare_trio": ratio, "runs": runs,
        "users": args.users,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
